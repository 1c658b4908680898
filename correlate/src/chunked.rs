//! A deque kept in shared chunks, for the occurrences of a key with a long window: cloning it
//! (what a snapshot of the windows does) copies no element, only a pointer per chunk, and the
//! engine copies a chunk the first time it changes one a snapshot still shares (at most once per
//! chunk and snapshot, spread over the time the window takes to move on). A key holding 10,000
//! occurrences is 40 chunks: a snapshot of such keys takes microseconds instead of the
//! hundreds of milliseconds a copy of every occurrence stalled the engine for.

use std::collections::VecDeque;
use std::sync::Arc;

/// Elements per chunk when filled from the back (a chunk split by inserts holds between this
/// and twice as many).
pub(crate) const CHUNK: usize = 256;

/// A deque of `T` in chunks of up to [`CHUNK`] (out-of-order inserts: up to twice as many),
/// each shared until written. No chunk is empty.
#[derive(Clone)]
pub(crate) struct ChunkDeque<T> {
    chunks: VecDeque<Arc<VecDeque<T>>>,
    len: usize,
}

impl<T: Clone> ChunkDeque<T> {
    /// The elements of `items`, in order, in full chunks.
    pub(crate) fn from_deque(items: VecDeque<T>) -> Self {
        let len = items.len();
        let mut chunks = VecDeque::with_capacity(len.div_ceil(CHUNK));
        let mut rest = items.into_iter();
        while rest.len() > 0 {
            let mut chunk = VecDeque::with_capacity(CHUNK);
            chunk.extend(rest.by_ref().take(CHUNK));
            chunks.push_back(Arc::new(chunk));
        }
        ChunkDeque { chunks, len }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Chunks held (for the memory estimate).
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Room for chunk pointers (for the memory estimate).
    pub(crate) fn chunk_capacity(&self) -> usize {
        self.chunks.capacity()
    }

    pub(crate) fn front(&self) -> Option<&T> {
        self.chunks.front()?.front()
    }

    pub(crate) fn back(&self) -> Option<&T> {
        self.chunks.back()?.back()
    }

    pub(crate) fn front_mut(&mut self) -> Option<&mut T> {
        Arc::make_mut(self.chunks.front_mut()?).front_mut()
    }

    /// The chunk and the place in it of element `i`, counted from the nearer end.
    fn locate(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.len {
            return None;
        }
        if i < self.len / 2 {
            let mut i = i;
            for (c, chunk) in self.chunks.iter().enumerate() {
                if i < chunk.len() {
                    return Some((c, i));
                }
                i -= chunk.len();
            }
        } else {
            let mut from_back = self.len - i;
            for (c, chunk) in self.chunks.iter().enumerate().rev() {
                if from_back <= chunk.len() {
                    return Some((c, chunk.len() - from_back));
                }
                from_back -= chunk.len();
            }
        }
        None
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let (c, j) = self.locate(i)?;
        Arc::make_mut(self.chunks.get_mut(c)?).get_mut(j)
    }

    /// The number of leading elements `pred` holds for (they must come first).
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        // The first chunk whose last element fails holds the point.
        let c = self
            .chunks
            .partition_point(|chunk| chunk.back().is_none_or(&mut pred));
        let before: usize = self.chunks.iter().take(c).map(|chunk| chunk.len()).sum();
        before
            + self
                .chunks
                .get(c)
                .map_or(0, |chunk| chunk.partition_point(pred))
    }

    pub(crate) fn push_back(&mut self, x: T) {
        match self.chunks.back_mut() {
            Some(chunk) if chunk.len() < CHUNK => Arc::make_mut(chunk).push_back(x),
            _ => {
                let mut chunk = VecDeque::with_capacity(CHUNK);
                chunk.push_back(x);
                self.chunks.push_back(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    /// Inserts `x` at position `at` (at most the length).
    pub(crate) fn insert(&mut self, at: usize, x: T) {
        let Some((c, j)) = self.locate(at) else {
            return self.push_back(x);
        };
        let Some(chunk) = self.chunks.get_mut(c) else {
            return self.push_back(x);
        };
        let chunk = Arc::make_mut(chunk);
        chunk.insert(j, x);
        self.len += 1;
        if chunk.len() > 2 * CHUNK {
            let tail = chunk.split_off(CHUNK);
            self.chunks.insert(c + 1, Arc::new(tail));
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let chunk = self.chunks.front_mut()?;
        let x = Arc::make_mut(chunk).pop_front();
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        if x.is_some() {
            self.len -= 1;
        }
        x
    }

    pub(crate) fn iter(&self) -> Iter<'_, T> {
        Iter {
            chunks: self.chunks.iter(),
            current: Default::default(),
        }
    }

    /// Every element, mutably: each chunk the iteration reaches becomes this deque's own.
    pub(crate) fn iter_mut(&mut self) -> IterMut<'_, T> {
        IterMut {
            chunks: self.chunks.iter_mut(),
            current: Default::default(),
        }
    }

    /// The elements, in one deque.
    pub(crate) fn into_deque(self) -> VecDeque<T> {
        let mut out = VecDeque::with_capacity(self.len);
        for chunk in self.chunks {
            match Arc::try_unwrap(chunk) {
                Ok(chunk) => out.extend(chunk),
                Err(shared) => out.extend(shared.iter().cloned()),
            }
        }
        out
    }
}

/// [`ChunkDeque::iter`].
pub(crate) struct Iter<'a, T> {
    chunks: std::collections::vec_deque::Iter<'a, Arc<VecDeque<T>>>,
    current: std::collections::vec_deque::Iter<'a, T>,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        loop {
            if let Some(x) = self.current.next() {
                return Some(x);
            }
            self.current = self.chunks.next()?.iter();
        }
    }
}

/// [`ChunkDeque::iter_mut`].
pub(crate) struct IterMut<'a, T> {
    chunks: std::collections::vec_deque::IterMut<'a, Arc<VecDeque<T>>>,
    current: std::collections::vec_deque::IterMut<'a, T>,
}

impl<'a, T: Clone> Iterator for IterMut<'a, T> {
    type Item = &'a mut T;

    fn next(&mut self) -> Option<&'a mut T> {
        loop {
            if let Some(x) = self.current.next() {
                return Some(x);
            }
            self.current = Arc::make_mut(self.chunks.next()?).iter_mut();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The same operations on a chunk deque and a plain deque, with a clone (a snapshot) taken
    /// along the way that must keep what it saw.
    #[test]
    fn behaves_as_a_deque_and_clones_keep_their_contents() {
        let mut plain: VecDeque<u64> = (0..700).collect();
        let mut chunked = ChunkDeque::from_deque(plain.clone());
        assert_eq!(chunked.chunk_count(), 3);
        let mut snapshots = Vec::new();
        // A deterministic mix: appends, inserts inside, pops, writes.
        let mut x = 12345u64;
        for step in 0..5000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (x >> 33) as usize;
            match r % 7 {
                0 | 1 => {
                    plain.push_back(step);
                    chunked.push_back(step);
                }
                2 => {
                    let at = r % (plain.len() + 1);
                    plain.insert(at, step);
                    chunked.insert(at, step);
                }
                3 | 4 => assert_eq!(chunked.pop_front(), plain.pop_front()),
                5 if !plain.is_empty() => {
                    let i = r % plain.len();
                    *plain.get_mut(i).unwrap() += 1;
                    *chunked.get_mut(i).unwrap() += 1;
                }
                _ => {
                    if let (Some(a), Some(b)) = (plain.front_mut(), chunked.front_mut()) {
                        *a += 7;
                        *b += 7;
                    }
                }
            }
            assert_eq!(chunked.len(), plain.len());
            assert_eq!(chunked.front(), plain.front());
            assert_eq!(chunked.back(), plain.back());
            if step % 500 == 0 {
                snapshots.push((plain.clone(), chunked.clone()));
                let v: Vec<u64> = chunked.iter().copied().collect();
                assert_eq!(v, Vec::from(plain.clone()));
            }
        }
        for (want, got) in snapshots {
            assert_eq!(
                got.into_deque(),
                want,
                "a clone is unchanged by later writes"
            );
        }
        assert_eq!(chunked.clone().into_deque(), plain);
        for (a, b) in chunked.iter_mut().zip(plain.iter_mut()) {
            *a *= 3;
            *b *= 3;
        }
        assert_eq!(chunked.clone().into_deque(), plain);
        assert!(chunked
            .chunks
            .iter()
            .all(|c| !c.is_empty() && c.len() <= 2 * CHUNK));
    }

    #[test]
    fn partition_point_finds_the_first_failing_element() {
        let items: VecDeque<u64> = (0..1000).map(|i| i * 2).collect();
        let chunked = ChunkDeque::from_deque(items.clone());
        for probe in [0, 1, 2, 511, 512, 513, 1998, 1999, 2000, 5000] {
            assert_eq!(
                chunked.partition_point(|&v| v < probe),
                items.partition_point(|&v| v < probe),
                "{probe}"
            );
        }
    }

    #[test]
    fn a_clone_shares_chunks_until_a_write() {
        let mut a = ChunkDeque::from_deque((0..1024u64).collect());
        let b = a.clone();
        let shared = |a: &ChunkDeque<u64>, b: &ChunkDeque<u64>| {
            a.chunks
                .iter()
                .zip(&b.chunks)
                .filter(|(x, y)| Arc::ptr_eq(x, y))
                .count()
        };
        assert_eq!(shared(&a, &b), 4);
        *a.get_mut(1000).unwrap() = 0;
        assert_eq!(shared(&a, &b), 3, "only the written chunk is copied");
        a.pop_front();
        assert_eq!(shared(&a, &b), 2);
        assert_eq!(b.iter().copied().sum::<u64>(), (0..1024).sum::<u64>());
    }
}
