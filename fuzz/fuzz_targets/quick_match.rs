//! A pattern and a text (split at the first NUL byte) to the definitions' quick matcher and to
//! the regex crate: whenever the quick matcher decides (it may give up), its answer and every
//! group's span are the regex's match at the start of the text. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_parsers::quick::{Outcome, Quick};

fuzz_target!(|data: &[u8]| {
    let Some(nul) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (Ok(pattern), Ok(text)) = (
        std::str::from_utf8(&data[..nul]),
        std::str::from_utf8(&data[nul + 1..]),
    ) else {
        return;
    };
    let (Some(quick), Ok(re)) = (Quick::new(pattern), regex::Regex::new(pattern)) else {
        return;
    };
    let mut slots = vec![None; quick.slots_len()];
    // A leftmost-first search finds a match at 0 exactly when an anchored one does, the same.
    let want = re.captures(text).filter(|c| c.get(0).is_some_and(|m| m.start() == 0));
    match quick.captures(text, &mut slots) {
        Outcome::GaveUp => {}
        Outcome::NoMatch => assert!(want.is_none(), "{pattern:?} on {text:?}"),
        Outcome::Match => {
            let want = want.expect("the regex matches too");
            for (i, pair) in slots.chunks(2).enumerate() {
                let got = match pair {
                    [Some(a), Some(b)] => Some((*a, *b)),
                    _ => None,
                };
                let want = want.get(i).map(|m| (m.start(), m.end()));
                assert_eq!(want, got, "{pattern:?} group {i} on {text:?}");
            }
        }
    }
});
