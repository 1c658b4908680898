//! The little-endian layouts Vigil writes and reads back itself (the spool's records, the
//! flow store's frames, the searchable copies' blocks): length-prefixed bytes, an optional
//! address, and a reader that refuses whatever ends early instead of panicking.

use std::net::IpAddr;

/// Appends `s` after its length as a u32.
pub(crate) fn put_long(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

/// Appends what `write` writes after its length as a u32 (written first, filled in after).
pub(crate) fn put_sized(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(out);
    let n = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
    if let Some(len) = out.get_mut(at..at + 4) {
        len.copy_from_slice(&n.to_le_bytes());
    }
}

/// Appends an optional address: 0, or 4 or 6 then its octets.
pub(crate) fn put_opt_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        None => out.push(0),
        Some(IpAddr::V4(v4)) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

/// An LZ4 block as `lz4_flex::compress_prepend_size` writes it (its size as a u32, then the
/// block), decompressed; refused before any allocation when the size it states is above `max`.
pub(crate) fn lz4_decompress(block: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let size = block
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
        .ok_or("no size")?;
    if size > max {
        return Err(format!("{size} bytes, longer than the {max} allowed"));
    }
    lz4_flex::decompress_size_prepended(block).map_err(|e| e.to_string())
}

/// The bytes after an LZ4 frame [`write_framed`] wrote: a frame cut short at a block boundary
/// reads as fewer bytes without an error, so whole-ness is checked here.
const FRAME_END: &[u8; 4] = b"VEND";

/// Writes what `fill` puts in its buffer to `w` as one LZ4 frame (with a checksum of its
/// content) and [`FRAME_END`]. `fill` gets the buffer and a flush that compresses and empties
/// it, so that a large state goes through a small buffer. Returns `w`.
pub(crate) fn write_framed<W: std::io::Write>(
    w: W,
    fill: impl FnOnce(
        &mut Vec<u8>,
        &mut dyn FnMut(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()>,
) -> std::io::Result<W> {
    use std::io::Write;
    let frame = lz4_flex::frame::FrameInfo::new()
        .content_checksum(true)
        .block_size(lz4_flex::frame::BlockSize::Max256KB);
    let mut lz = lz4_flex::frame::FrameEncoder::with_frame_info(frame, w);
    let mut buf = Vec::with_capacity((1 << 20) + (64 << 10));
    fill(&mut buf, &mut |b: &mut Vec<u8>| {
        lz.write_all(b)?;
        b.clear();
        Ok(())
    })?;
    lz.write_all(&buf)?;
    let mut w = lz.finish().map_err(std::io::Error::other)?;
    w.write_all(FRAME_END)?;
    Ok(w)
}

/// What [`write_framed`] wrote, from all of `bytes`; refused when cut short, corrupt, or
/// longer than `max` bytes once decompressed (nothing beyond that is allocated). Only the
/// frames it writes are taken: the standard magic, blocks of at most 256 KiB (the decoder
/// sizes its buffers from the header, so a header claiming 4 MiB blocks would cost 12 MiB
/// before a byte is checked), and a content checksum.
pub(crate) fn read_framed(bytes: &[u8], max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let frame = bytes
        .strip_suffix(FRAME_END)
        .ok_or("cut short (no end mark)")?;
    match frame {
        // Magic 0x184D2204; FLG with a content checksum (bit 2); BD's block size code 4 or 5.
        [0x04, 0x22, 0x4d, 0x18, flg, bd, ..]
            if flg & 0x04 != 0 && matches!((bd >> 4) & 7, 4 | 5) => {}
        _ => return Err("not an LZ4 frame as Vigil writes them".into()),
    }
    let mut out = Vec::new();
    lz4_flex::frame::FrameDecoder::new(frame)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("LZ4 frame: {e}"))?;
    if out.len() as u64 > max {
        return Err(format!("longer than the {max} bytes allowed"));
    }
    Ok(out)
}

/// Reads those layouts from the front of a slice.
pub(crate) struct Cursor<'a>(pub(crate) &'a [u8]);

impl<'a> Cursor<'a> {
    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("record ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// The next `N` bytes, as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?
            .try_into()
            .map_err(|_| "record ends early".to_owned())
    }

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    /// Bytes after their length as a u8.
    pub(crate) fn short(&mut self) -> Result<&'a [u8], String> {
        let n = self.u8()? as usize;
        self.take(n)
    }

    /// Bytes after their length as a u32 ([`put_long`]).
    pub(crate) fn long(&mut self) -> Result<&'a [u8], String> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        self.take(n)
    }

    /// An address written by [`put_opt_ip`]; `what` names it in the error.
    pub(crate) fn opt_ip(&mut self, what: &str) -> Result<Option<IpAddr>, String> {
        match self.u8()? {
            0 => Ok(None),
            4 => Ok(Some(IpAddr::from(self.array::<4>()?))),
            6 => Ok(Some(IpAddr::from(self.array::<16>()?))),
            t => Err(format!("{what} tag {t}")),
        }
    }

    pub(crate) fn text(bytes: &[u8]) -> Result<&str, String> {
        std::str::from_utf8(bytes).map_err(|_| "text is not UTF-8".to_owned())
    }
}
