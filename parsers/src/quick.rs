//! A small backtracking matcher for the usual shape of a definition's pattern, run on ASCII
//! text before the general one.
//!
//! A definition pattern is mostly literals and runs of one character class (`\S+`, `[0-9]+`,
//! `.*`), with optional groups and a few alternations: `^Failed (?P<m>\S+) for (?P<u>.*) from
//! (?P<ip>[0-9A-Fa-f:.]+) port (?P<p>\d+)`. The bounded backtracker of `regex-automata` gives
//! its groups in 1.1–1.5 µs for a 70-byte line: it walks the pattern's NFA state by state and
//! marks every (state, position) it visits. This matcher walks the pattern's syntax tree
//! instead, takes a class run in one scan, and compares a literal at once, on the same
//! semantics: leftmost-first, the first way through the pattern in priority order wins
//! (greedy repetitions try more first, lazy ones fewer, alternatives left to right), so its
//! groups are exactly those of the regex (differential tests in `definitions`).
//!
//! What it does not do, it leaves to the caller's general matcher (`None` or
//! [`Outcome::GaveUp`]): patterns with anything outside that shape (word boundaries, multi-line
//! anchors, an unbounded repetition of a sub-pattern that can match empty), text that is not
//! ASCII, searches that take more steps than a budget linear in the text's length (a pattern
//! that backtracks badly on some input; the general matcher is linear in the worst case), and
//! an unbounded repetition of a sub-pattern with more than one way to take a turn that turns
//! more than 48 times, counting every repetition nested on the search's path (each turn
//! nests stack frames). Classes keep only their ASCII members, which is exact on ASCII text.

use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// Largest bounded repetition count of a sub-pattern (`(?:...){2,7}`) compiled (no more
/// than [`MAX_TURNS`]: a larger count could never finish).
const MAX_COUNTED: u32 = MAX_TURNS;
/// Largest pattern, in syntax nodes, compiled (a pattern is config, but a bound keeps the
/// recursion depth bounded too).
const MAX_NODES: usize = 4096;
/// Most turns of repeated sub-patterns (counted or unbounded, all nested repetitions
/// together) on the search's path at once: each turn nests a few stack frames, so beyond it
/// the text is left to the general matcher.
const MAX_TURNS: u32 = 48;
/// The step budget of a search: this plus [`STEPS_PER_BYTE`] a byte of text.
const BASE_STEPS: usize = 1024;
const STEPS_PER_BYTE: usize = 48;

/// A 128-bit set of ASCII bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Set(u128);

impl Set {
    fn has(self, b: u8) -> bool {
        b < 128 && (self.0 >> b) & 1 == 1
    }
}

#[derive(Debug, Clone)]
enum Node {
    Empty,
    Lit(Box<[u8]>),
    One(Set),
    /// A repetition of one class: `min..=max` bytes of it (`max` u32::MAX: unbounded).
    /// `follow`: the bytes whatever comes next must start with (the run is followed in its
    /// sequence by a literal, a class, or alternatives of them), so an end where the text has
    /// none of them is skipped without trying the rest.
    Run {
        set: Set,
        min: u32,
        max: u32,
        greedy: bool,
        follow: Option<Set>,
    },
    /// An unbounded repetition of a sub-pattern that cannot match empty (`(?:[^"\\]|\\.)*`):
    /// every turn takes at least a byte; beyond [`MAX_TURNS`] turns the search gives up.
    Loop {
        sub: Box<Node>,
        min: u32,
        greedy: bool,
    },
    /// An unbounded repetition of a sub-pattern that matches at most one way at any position
    /// (its alternatives start with different bytes, it has no groups) and never empty: the
    /// turns are taken in one forward pass, and giving turns back is walking their ends back.
    Scan {
        sub: Box<Node>,
        min: u32,
        greedy: bool,
    },
    /// A bounded repetition of a sub-pattern.
    Counted {
        sub: Box<Node>,
        min: u32,
        max: u32,
        greedy: bool,
    },
    Group {
        index: usize,
        sub: Box<Node>,
    },
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Start,
    End,
}

/// A compiled pattern (see the module docs).
#[derive(Debug, Clone)]
pub struct Quick {
    node: Node,
    /// Capture groups, the whole match (0) included.
    groups: usize,
}

/// What a search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A match: `slots` holds its groups.
    Match,
    /// No match.
    NoMatch,
    /// Not decided here (text not ASCII, or over the step budget): ask the general matcher.
    GaveUp,
}

struct Search<'h> {
    text: &'h [u8],
    slots: &'h mut [Option<usize>],
    steps: usize,
    budget: usize,
    gave_up: bool,
    /// Turns of repeated sub-patterns nested on the stack now.
    turns: u32,
}

impl Search<'_> {
    /// Counts a step; false once over the budget.
    fn step(&mut self) -> bool {
        self.steps += 1;
        if self.steps > self.budget {
            self.gave_up = true;
        }
        !self.gave_up
    }
}

type Next<'k, 'h> = &'k mut dyn FnMut(usize, &mut Search<'h>) -> bool;

impl Quick {
    /// Compiles `pattern` (the regex crate's syntax and defaults) when it is in the shape this
    /// matcher handles; else `None`.
    pub fn new(pattern: &str) -> Option<Quick> {
        let hir = regex_syntax::ParserBuilder::new()
            .build()
            .parse(pattern)
            .ok()?;
        let mut nodes = 0;
        let node = compile(&hir, &mut nodes)?;
        let groups = hir.properties().explicit_captures_len() + 1;
        Some(Quick { node, groups })
    }

    /// Slots a search needs (two a group).
    pub fn slots_len(&self) -> usize {
        self.groups * 2
    }

    /// Matches `text` from its start; on [`Outcome::Match`], `slots[2i]..slots[2i + 1]` is
    /// group `i`'s span (`None` when it did not take part). `slots` must be
    /// [`Quick::slots_len`] long.
    pub fn captures(&self, text: &str, slots: &mut [Option<usize>]) -> Outcome {
        if !text.is_ascii() || slots.len() != self.slots_len() {
            return Outcome::GaveUp;
        }
        slots.fill(None);
        let mut s = Search {
            text: text.as_bytes(),
            slots,
            steps: 0,
            budget: BASE_STEPS + STEPS_PER_BYTE * text.len(),
            gave_up: false,
            turns: 0,
        };
        let found = self.at(&self.node, 0, &mut s, &mut |end, s| {
            if let Some(e) = s.slots.get_mut(1) {
                *e = Some(end);
            }
            true
        });
        if s.gave_up {
            return Outcome::GaveUp;
        }
        if found {
            if let Some(start) = s.slots.get_mut(0) {
                *start = Some(0);
            }
            Outcome::Match
        } else {
            Outcome::NoMatch
        }
    }

    /// Matches `node` at `pos`, then `next` from where it ended; the first way that `next`
    /// accepts wins.
    fn at<'h>(&self, node: &Node, pos: usize, s: &mut Search<'h>, next: Next<'_, 'h>) -> bool {
        if !s.step() {
            return false;
        }
        match node {
            Node::Empty => next(pos, s),
            Node::Lit(lit) => {
                let fits = s.text.get(pos..).is_some_and(|rest| rest.starts_with(lit));
                fits && next(pos + lit.len(), s)
            }
            Node::One(set) => {
                let fits = s.text.get(pos).is_some_and(|&b| set.has(b));
                fits && next(pos + 1, s)
            }
            Node::Start => pos == 0 && next(pos, s),
            Node::End => pos == s.text.len() && next(pos, s),
            Node::Run {
                set,
                min,
                max,
                greedy,
                follow,
            } => {
                let (min, max) = (*min as usize, *max as usize);
                let rest = s.text.get(pos..).unwrap_or_default();
                let fits = |n: usize| follow.is_none_or(|f| rest.get(n).is_some_and(|&b| f.has(b)));
                if *greedy {
                    let run = rest.iter().take(max).take_while(|&&b| set.has(b)).count();
                    if run < min {
                        return false;
                    }
                    for n in (min..=run).rev() {
                        if fits(n) && next(pos + n, s) {
                            return true;
                        }
                        if !s.step() {
                            return false;
                        }
                    }
                    false
                } else {
                    let mut n = 0;
                    while n < min {
                        if !rest.get(n).is_some_and(|&b| set.has(b)) {
                            return false;
                        }
                        n += 1;
                    }
                    loop {
                        if fits(n) && next(pos + n, s) {
                            return true;
                        }
                        if !s.step() || n >= max || !rest.get(n).is_some_and(|&b| set.has(b)) {
                            return false;
                        }
                        n += 1;
                    }
                }
            }
            Node::Counted {
                sub,
                min,
                max,
                greedy,
            } => self.counted(sub, *min, *max, *greedy, 0, pos, s, next),
            Node::Scan { sub, min, greedy } => {
                let min = *min as usize;
                if *greedy {
                    let mut ends = vec![pos];
                    let mut at = pos;
                    while let Some(end) = step_over(sub, s.text, at) {
                        if !s.step() {
                            return false;
                        }
                        ends.push(end);
                        at = end;
                    }
                    for (turns, &end) in ends.iter().enumerate().rev() {
                        if turns < min {
                            return false;
                        }
                        if next(end, s) {
                            return true;
                        }
                        if !s.step() {
                            return false;
                        }
                    }
                    false
                } else {
                    let (mut turns, mut at) = (0, pos);
                    loop {
                        if turns >= min && next(at, s) {
                            return true;
                        }
                        if !s.step() {
                            return false;
                        }
                        match step_over(sub, s.text, at) {
                            Some(end) => (turns, at) = (turns + 1, end),
                            None => return false,
                        }
                    }
                }
            }
            Node::Loop { sub, min, greedy } => {
                self.counted(sub, *min, u32::MAX, *greedy, 0, pos, s, next)
            }
            Node::Group { index, sub } => {
                let (open, close) = (index * 2, index * 2 + 1);
                let before = s.slots.get(open).copied().flatten();
                if let Some(slot) = s.slots.get_mut(open) {
                    *slot = Some(pos);
                }
                let found = self.at(sub, pos, s, &mut |end, s| {
                    let was = s.slots.get(close).copied().flatten();
                    if let Some(slot) = s.slots.get_mut(close) {
                        *slot = Some(end);
                    }
                    if next(end, s) {
                        return true;
                    }
                    if let Some(slot) = s.slots.get_mut(close) {
                        *slot = was;
                    }
                    false
                });
                if !found {
                    if let Some(slot) = s.slots.get_mut(open) {
                        *slot = before;
                    }
                }
                found
            }
            Node::Concat(nodes) => self.seq(nodes, pos, s, next),
            Node::Alt(branches) => {
                for b in branches {
                    if self.at(b, pos, s, next) {
                        return true;
                    }
                    if s.gave_up {
                        return false;
                    }
                }
                false
            }
        }
    }

    fn seq<'h>(&self, nodes: &[Node], pos: usize, s: &mut Search<'h>, next: Next<'_, 'h>) -> bool {
        // Literals, single bytes and anchors have one way to match: taken in place, without a
        // continuation for each.
        let (mut nodes, mut pos) = (nodes, pos);
        loop {
            let Some((first, rest)) = nodes.split_first() else {
                return next(pos, s);
            };
            match first {
                Node::Lit(lit) => {
                    if !s.text.get(pos..).is_some_and(|t| t.starts_with(lit)) {
                        return false;
                    }
                    pos += lit.len();
                }
                Node::One(set) => {
                    if !s.text.get(pos).is_some_and(|&b| set.has(b)) {
                        return false;
                    }
                    pos += 1;
                }
                Node::Start if pos == 0 => {}
                Node::End if pos == s.text.len() => {}
                Node::Start | Node::End => return false,
                _ => return self.at(first, pos, s, &mut |p, s| self.seq(rest, p, s, next)),
            }
            nodes = rest;
        }
    }

    /// `sub` repeated `min..=max` times, `done` times so far (the regex compiles `x{2,4}` as
    /// `x x (?:x (?:x)?)?`, and this walks it the same way).
    #[allow(clippy::too_many_arguments)]
    fn counted<'h>(
        &self,
        sub: &Node,
        min: u32,
        max: u32,
        greedy: bool,
        done: u32,
        pos: usize,
        s: &mut Search<'h>,
        next: Next<'_, 'h>,
    ) -> bool {
        let more = |s: &mut Search<'h>, next: Next<'_, 'h>| {
            if done >= max {
                return false;
            }
            if s.turns >= MAX_TURNS {
                s.gave_up = true;
                return false;
            }
            s.turns += 1;
            let found = self.at(sub, pos, s, &mut |p, s| {
                self.counted(sub, min, max, greedy, done + 1, p, s, next)
            });
            s.turns -= 1;
            found
        };
        if done < min {
            return more(s, next);
        }
        if greedy {
            more(s, next) || (!s.gave_up && next(pos, s))
        } else {
            next(pos, s) || (!s.gave_up && more(s, next))
        }
    }
}

/// Group `i`'s text after a [`Outcome::Match`] of [`Quick::captures`] on `text` into `slots`
/// (`None`: it did not take part).
pub fn group<'t>(text: &'t str, slots: &[Option<usize>], i: usize) -> Option<&'t str> {
    let at = |j: usize| slots.get(j).copied().flatten();
    text.get(at(i * 2)?..at(i * 2 + 1)?)
}

/// The ASCII members of a class.
fn ascii_set(class: &Class) -> Set {
    let mut bits = 0u128;
    let mut add = |lo: u32, hi: u32| {
        for b in lo..=hi.min(127) {
            bits |= 1 << b;
        }
    };
    match class {
        Class::Unicode(c) => c
            .ranges()
            .iter()
            .for_each(|r| add(r.start().into(), r.end().into())),
        Class::Bytes(c) => c
            .ranges()
            .iter()
            .for_each(|r| add(r.start().into(), r.end().into())),
    }
    Set(bits)
}

/// The bytes a match of `node` can start with, when plain to see (literals, classes, and
/// groups, sequences and alternatives of them).
fn first_set(node: &Node) -> Option<Set> {
    match node {
        Node::Lit(lit) => lit.first().map(|&b| Set(if b < 128 { 1 << b } else { 0 })),
        Node::One(set) => Some(*set),
        Node::Group { sub, .. } => first_set(sub),
        Node::Concat(seq) => seq.first().and_then(first_set),
        Node::Alt(branches) => branches
            .iter()
            .try_fold(0u128, |all, b| first_set(b).map(|s| all | s.0))
            .map(Set),
        _ => None,
    }
}

/// Whether `node` matches at most one way at any position, and never empty: literals,
/// classes, sequences of those, and alternatives of those that start with different bytes.
/// No groups (a repetition's groups hold its last turn; walking turns back would lose them).
fn one_way(node: &Node) -> bool {
    match node {
        Node::Lit(lit) => !lit.is_empty(),
        Node::One(_) => true,
        Node::Concat(seq) => !seq.is_empty() && seq.iter().all(one_way),
        Node::Alt(branches) => {
            let mut seen = 0u128;
            branches.iter().all(|b| {
                let Some(Set(first)) = first_set(b).filter(|_| one_way(b)) else {
                    return false;
                };
                let apart = seen & first == 0;
                seen |= first;
                apart
            })
        }
        _ => false,
    }
}

/// Where the one way `node` matches at `pos` ends (`node` is [`one_way`]).
fn step_over(node: &Node, text: &[u8], pos: usize) -> Option<usize> {
    match node {
        Node::Lit(lit) => text
            .get(pos..)
            .is_some_and(|t| t.starts_with(lit))
            .then_some(pos + lit.len()),
        Node::One(set) => text
            .get(pos)
            .is_some_and(|&b| set.has(b))
            .then_some(pos + 1),
        Node::Concat(seq) => seq.iter().try_fold(pos, |at, n| step_over(n, text, at)),
        Node::Alt(branches) => {
            let &b = text.get(pos)?;
            let branch = branches
                .iter()
                .find(|n| first_set(n).is_some_and(|s| s.has(b)))?;
            step_over(branch, text, pos)
        }
        _ => None,
    }
}

/// Tells the run `node` ends with (itself, or the last of a group or sequence) that what
/// follows it starts with one of `first`.
fn set_follow(node: &mut Node, first: Set) {
    match node {
        Node::Run { follow, .. } => *follow = Some(first),
        Node::Group { sub, .. } => set_follow(sub, first),
        Node::Concat(seq) => {
            if let Some(last) = seq.last_mut() {
                set_follow(last, first);
            }
        }
        _ => {}
    }
}

fn compile(hir: &Hir, nodes: &mut usize) -> Option<Node> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return None;
    }
    Some(match hir.kind() {
        HirKind::Empty => Node::Empty,
        HirKind::Literal(lit) => Node::Lit(lit.0.clone()),
        HirKind::Class(class) => Node::One(ascii_set(class)),
        HirKind::Look(Look::Start) => Node::Start,
        HirKind::Look(Look::End) => Node::End,
        HirKind::Look(_) => return None,
        HirKind::Repetition(rep) => {
            let one = match rep.sub.kind() {
                HirKind::Class(class) => Some(ascii_set(class)),
                HirKind::Literal(lit) if lit.0.len() == 1 => lit
                    .0
                    .first()
                    .map(|&b| Set(if b < 128 { 1 << b } else { 0 })),
                _ => None,
            };
            match (one, rep.max) {
                (Some(set), max) => Node::Run {
                    set,
                    min: rep.min,
                    max: max.unwrap_or(u32::MAX),
                    greedy: rep.greedy,
                    follow: None,
                },
                (None, Some(max)) if max <= MAX_COUNTED => Node::Counted {
                    sub: Box::new(compile(&rep.sub, nodes)?),
                    min: rep.min,
                    max,
                    greedy: rep.greedy,
                },
                (None, None) if rep.sub.properties().minimum_len().is_some_and(|n| n > 0) => {
                    let sub = Box::new(compile(&rep.sub, nodes)?);
                    if one_way(&sub) {
                        Node::Scan {
                            sub,
                            min: rep.min,
                            greedy: rep.greedy,
                        }
                    } else {
                        Node::Loop {
                            sub,
                            min: rep.min,
                            greedy: rep.greedy,
                        }
                    }
                }
                (None, _) => return None,
            }
        }
        HirKind::Capture(cap) => Node::Group {
            index: usize::try_from(cap.index).ok()?,
            sub: Box::new(compile(&cap.sub, nodes)?),
        },
        HirKind::Concat(subs) => {
            let mut seq = subs
                .iter()
                .map(|h| compile(h, nodes))
                .collect::<Option<Vec<_>>>()?;
            for i in 1..seq.len() {
                if let Some(first) = seq.get(i).and_then(first_set) {
                    if let Some(before) = seq.get_mut(i - 1) {
                        set_follow(before, first);
                    }
                }
            }
            Node::Concat(seq)
        }
        HirKind::Alternation(subs) => Node::Alt(
            subs.iter()
                .map(|h| compile(h, nodes))
                .collect::<Option<Vec<_>>>()?,
        ),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The groups of `pattern` on `text` by this matcher and by the regex crate, as texts.
    fn both(pattern: &str, text: &str) -> (Option<Vec<Option<String>>>, Outcome) {
        let re = regex::Regex::new(pattern).unwrap();
        let want = re
            .captures(text)
            .filter(|c| c.get(0).is_some_and(|m| m.start() == 0))
            .map(|c| {
                (0..re.captures_len())
                    .map(|i| c.get(i).map(|m| m.as_str().to_owned()))
                    .collect::<Vec<_>>()
            });
        let q = Quick::new(pattern).unwrap();
        let mut slots = vec![None; q.slots_len()];
        let outcome = q.captures(text, &mut slots);
        if outcome == Outcome::Match {
            let got: Vec<Option<String>> = (0..q.groups)
                .map(|i| group(text, &slots, i).map(str::to_owned))
                .collect();
            assert_eq!(Some(got), want, "{pattern} on {text:?}");
        } else if outcome == Outcome::NoMatch {
            assert_eq!(None, want, "{pattern} on {text:?}");
        }
        (want, outcome)
    }

    #[test]
    fn priorities_are_the_regex_crates() {
        let cases = [
            // Greedy and lazy runs before a literal that occurs twice.
            (
                r"^(?P<u>.*) from (?P<ip>\S+)",
                "Failed for a from b from 10.0.0.1",
            ),
            (
                r"^(?P<u>.*?) from (?P<ip>\S+)",
                "Failed for a from b from 10.0.0.1",
            ),
            // An optional group that must give way for the rest to match.
            (r"^a(?: (b+))?(?: (b) c)?$", "a b c"),
            (r"^a(?: (b+))??(?: (b) c)?$", "a b c"),
            // Alternatives left to right, the shorter first.
            (r"^(a|ab)(c|bcd)(d*)$", "abcd"),
            (
                r"^(?:(authenticating|invalid) user (?P<u>.*) )?(?P<ip>[0-9.]+) port (\d+)",
                "invalid user root 10.0.0.2 port 22",
            ),
            // A group repeated: the last iteration's text.
            (r"^(?:(\d)\.){3}(\d)$", "1.2.3.4"),
            (r"^[0-9a-f]{0,4}(?::([0-9a-f]{0,4})){2,7}$", "fe80::1:2"),
            (r"^(x{2,3}?)(x*)$", "xxxxx"),
            // Groups that do not take part.
            (r"^(?:(a)|(b))(c)?", "b"),
            (
                r"^\s*(?P<user>\S+) : (?:TTY=(?P<tty>[^;\s]+) ; )?(?:PWD=(?P<pwd>.*?) ; )?USER=(?P<tu>[^;\s]+) ; COMMAND=(?P<cmd>.*)$",
                "   alice : TTY=pts/0 ; PWD=/home/a ; b ; USER=root ; COMMAND=/bin/ls",
            ),
            // Empty groups and empty text.
            (r"^(a*)(b?)$", ""),
            (r"^$", ""),
        ];
        for (p, t) in cases {
            let (want, outcome) = both(p, t);
            assert_ne!(outcome, Outcome::GaveUp, "{p} on {t:?}");
            assert!(want.is_some(), "{p} on {t:?} should match");
        }
        for (p, t) in [
            (r"^a(b)c", "abd"),
            (r"^x", "yx"),
            (r"^a+$", "aab"),
            (r"^(a)\d{3}$", "a12"),
        ] {
            assert_eq!(both(p, t), (None, Outcome::NoMatch), "{p} on {t:?}");
        }
    }

    /// Random small patterns (literals, classes, groups, alternations, every quantifier, greedy
    /// and lazy) on random texts over their alphabet: where the quick matcher decides, it
    /// decides as the regex crate does.
    fn pattern() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let atom = prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just(" ".to_owned()),
            Just("[ab]".to_owned()),
            Just(r"\S".to_owned()),
            Just(".".to_owned()),
            Just("$".to_owned()),
        ];
        atom.prop_recursive(4, 24, 3, |inner| {
            let quant = prop_oneof![
                Just(""),
                Just("*"),
                Just("+"),
                Just("?"),
                Just("*?"),
                Just("+?"),
                Just("??"),
                Just("{1,3}"),
                Just("{2}"),
                Just("{0,2}?"),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| v.concat()),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("(?:{a}|{b})")),
                (inner.clone(), quant.clone()).prop_map(|(a, q)| format!("({a}){q}")),
                (inner, quant).prop_map(|(a, q)| format!("(?:{a}){q}")),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn random_patterns_decide_as_the_regex_crate(
            p in pattern(),
            anchored in proptest::bool::ANY,
            texts in proptest::collection::vec("[ab ]{0,10}", 8),
        ) {
            let p = if anchored { format!("^{p}") } else { p };
            if Quick::new(&p).is_some() {
                for t in &texts {
                    both(&p, t);
                }
            }
        }
    }

    #[test]
    fn what_it_leaves_to_the_general_matcher() {
        for p in [
            r"^\bword",
            r"(?m)^a$",
            r"^(?:a*b?)+",
            r"^(?:ab|c?)*d",
            r"^(?:xy){100}",
        ] {
            assert!(Quick::new(p).is_none(), "{p}");
        }
        let q = Quick::new(r"^(?P<u>.*) y$").unwrap();
        let mut slots = vec![None; q.slots_len()];
        assert_eq!(q.captures("é y", &mut slots), Outcome::GaveUp, "not ASCII");
        // Nested runs that backtrack quadratically run out of steps instead of time.
        let q = Quick::new(r"^(?:a*a*a*a*a*){1,8}b$").unwrap();
        let mut slots = vec![None; q.slots_len()];
        assert_eq!(q.captures(&"a".repeat(200), &mut slots), Outcome::GaveUp);
        assert_eq!(q.captures("aab", &mut slots), Outcome::Match);
        // A quoted string with escapes (one way to take each turn): any length, one pass.
        let q = Quick::new(r#"^"((?:[^"\\]|\\.)*)"$"#).unwrap();
        let mut slots = vec![None; q.slots_len()];
        let quoted = |n: usize| format!("\"{}\\\"\"", "x".repeat(n));
        assert_eq!(q.captures(&quoted(100), &mut slots), Outcome::Match);
        assert_eq!(slots[3], Some(103));
        assert_eq!(q.captures(&quoted(10_000), &mut slots), Outcome::Match);
        // Other unbounded repetitions of a sub-pattern turn at most MAX_TURNS times here.
        let q = Quick::new(r"^((?:ab|a)+)$").unwrap();
        let turns = |n: usize| "ab".repeat(n);
        assert_eq!(q.captures(&turns(20), &mut slots[..4]), Outcome::Match);
        assert_eq!(q.captures(&turns(1000), &mut slots[..4]), Outcome::GaveUp);
        // The deepest search fits a small thread stack, unoptimized build included.
        let deepest = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let mut slots = vec![None; q.slots_len()];
                q.captures(&turns(usize::try_from(MAX_TURNS).unwrap() - 1), &mut slots)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(deepest, Outcome::Match);
        let mut slots = [None; 4];
        // All nested repetitions count together.
        let nest = Quick::new(r"^(?:(?:ab|a)+;)+$").unwrap();
        let nested = format!("{};", "a".repeat(47)).repeat(47);
        assert_eq!(nest.captures(&nested, &mut slots[..2]), Outcome::GaveUp);
        assert_eq!(nest.captures("aab;a;", &mut slots[..2]), Outcome::Match);
        // A lazy repetition with a minimum beyond the bound never matches short.
        let lazy = Quick::new(r"^(a){49,}?").unwrap();
        assert_ne!(
            lazy.captures(&"a".repeat(48), &mut slots[..4]),
            Outcome::Match
        );
    }
}
