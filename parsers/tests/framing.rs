//! RFC 6587 framer: chunking invariance, go-syslog's octet-counting cases, limits and recovery.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::Value;
use vigil_parsers::syslog::framing::{FrameError, Framer, Mode};
use vigil_parsers::syslog::{self, ParseOptions, SyslogMessage};

/// Deliberate differences from go-syslog's octet-counting cases, by case name, with reasons.
const LENIENT: &[(&str, &str)] = &[(
    "empty",
    "a connection that closes without sending a byte is not an error; the framer yields nothing",
)];

type Item = Result<Vec<u8>, FrameError>;

/// Feeds `chunks` one by one, draining after each push, then drains `finish`.
fn run(max: usize, chunks: &[&[u8]]) -> Vec<Item> {
    let mut framer = Framer::new(max);
    let mut out = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        while let Some(item) = framer.next_frame() {
            out.push(item);
        }
    }
    while let Some(item) = framer.finish() {
        out.push(item);
    }
    out
}

/// Splits `stream` at the given (unsorted, possibly out of range) cut points.
fn chunked(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut prev = 0;
    for cut in cuts.into_iter().chain([stream.len()]) {
        chunks.push(stream[prev..cut].to_vec());
        prev = cut;
    }
    chunks
}

/// Same as [`run`], but compares only frames and error reasons.
fn reasons(items: &[Item]) -> Vec<Result<Vec<u8>, &'static str>> {
    items
        .iter()
        .map(|i| i.clone().map_err(|e| e.reason()))
        .collect()
}

const MAX: usize = 64;

proptest! {
    #[test]
    fn lf_frames_are_the_same_for_any_chunking(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no delimiters", |b| !matches!(b, b'\n' | b'\0' | b'\r')), 0..100), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        crlf in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for frame in &frames {
            stream.push(b'<');
            stream.extend_from_slice(frame);
            stream.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
        let expected: Vec<Result<Vec<u8>, &'static str>> = frames
            .iter()
            .map(|f| { let mut v = vec![b'<']; v.extend_from_slice(f); v })
            .map(|f| if f.len() > MAX { Err("frame_too_long") } else { Ok(f) })
            .collect();
        let whole = run(MAX, &[&stream]);
        prop_assert_eq!(reasons(&whole), expected.clone());
        let chunks = chunked(&stream, &cuts);
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(run(MAX, &refs), whole);
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(reasons(&run(MAX, &bytewise)), expected);
    }

    #[test]
    fn octet_counted_frames_are_the_same_for_any_chunking(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..100), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut stream = Vec::new();
        for frame in &frames {
            stream.extend_from_slice(format!("{} ", frame.len()).as_bytes());
            stream.extend_from_slice(frame);
        }
        let expected: Vec<Result<Vec<u8>, &'static str>> = frames
            .iter()
            .map(|f| if f.len() > MAX { Err("frame_too_long") } else { Ok(f.clone()) })
            .collect();
        let whole = run(MAX, &[&stream]);
        prop_assert_eq!(reasons(&whole), expected.clone());
        let chunks = chunked(&stream, &cuts);
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(run(MAX, &refs), whole);
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(reasons(&run(MAX, &bytewise)), expected);
    }

    #[test]
    fn any_stream_gives_the_same_items_for_any_chunking(
        stream in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(b' '), 0x30u8..0x3a], 0..400),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let chunks = chunked(&stream, &cuts);
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(run(16, &refs), run(16, &[&stream]));
    }

    #[test]
    fn framer_never_panics_and_stays_bounded(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20),
    ) {
        let mut framer = Framer::new(MAX);
        for chunk in &chunks {
            framer.push(chunk);
            while framer.next_frame().is_some() {}
            prop_assert!(framer.buffered_len() <= MAX + 12 + chunk.len());
        }
        while framer.finish().is_some() {}
        prop_assert_eq!(framer.buffered_len(), 0);
    }
}

fn fixture(name: &str) -> Vec<Value> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "fixtures", "syslog", name]
        .iter()
        .collect();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn opts() -> ParseOptions {
    ParseOptions::at(Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).unwrap())
}

/// Compares the fields go-syslog's octet-counting cases list (absent means `None`).
fn assert_message(case: &str, got: &SyslogMessage, want: &Value) {
    let num = |k: &str| want.get(k).and_then(Value::as_u64);
    let text = |k: &str| want.get(k).and_then(Value::as_str).map(str::to_owned);
    assert_eq!(
        got.priority.map(u64::from),
        num("priority"),
        "{case}: priority"
    );
    assert_eq!(
        got.facility.map(u64::from),
        num("facility"),
        "{case}: facility"
    );
    assert_eq!(
        got.severity.map(u64::from),
        num("severity"),
        "{case}: severity"
    );
    assert_eq!(
        got.version.map(u64::from),
        num("version"),
        "{case}: version"
    );
    assert_eq!(
        got.hostname.as_deref().map(String::from),
        text("hostname"),
        "{case}: hostname"
    );
    assert_eq!(
        got.appname.as_deref().map(String::from),
        text("appname"),
        "{case}: appname"
    );
    assert_eq!(
        got.procid.as_deref().map(String::from),
        text("procid"),
        "{case}: procid"
    );
    assert_eq!(
        got.msgid.as_deref().map(String::from),
        text("msgid"),
        "{case}: msgid"
    );
    assert_eq!(got.message_text(), text("message"), "{case}: message");
    let want_ts = text("timestamp").map(|t| chrono::DateTime::parse_from_rfc3339(&t).unwrap());
    assert_eq!(got.timestamp, want_ts, "{case}: timestamp");
    assert_eq!(
        got.timestamp.map(|t| *t.offset()),
        want_ts.map(|t| *t.offset()),
        "{case}: offset"
    );
    assert!(
        want.get("structured_data").is_none() && got.structured_data.is_empty(),
        "{case}: sd"
    );
}

#[test]
fn octet_counting_fixture_cases_match_go_syslog() {
    let cases = fixture("octet-counting.json");
    let (mut frames_checked, mut errors_checked, mut lenient_used) = (0, 0, 0);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let input = case["input"].as_str().unwrap().as_bytes();
        let max = case["max_message_length"].as_u64().unwrap() as usize;
        let expected = case["expected"].as_array().unwrap();
        // Strict mode: go-syslog stops at the first framing or parse error.
        let mut results: Vec<Result<SyslogMessage, String>> = Vec::new();
        let mut frames: Vec<Vec<u8>> = Vec::new();
        for item in run(max, &[input]) {
            let result = match item {
                Ok(frame) => {
                    let parsed = syslog::parse(&frame, &opts()).map_err(|e| e.to_string());
                    frames.push(frame);
                    parsed
                }
                Err(e) => Err(e.to_string()),
            };
            let stop = result.is_err();
            results.push(result);
            if stop {
                break;
            }
        }
        if let Some((_, reason)) = LENIENT.iter().find(|(n, _)| *n == name) {
            assert!(results.is_empty(), "{name}: {reason}");
            lenient_used += 1;
            continue;
        }
        assert_eq!(results.len(), expected.len(), "{name}: {results:?}");
        for (got, want) in results.iter().zip(expected) {
            if want["error"].as_bool().unwrap() {
                assert!(got.is_err(), "{name}: expected an error, got {got:?}");
                errors_checked += 1;
            } else {
                let got = got.as_ref().unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_message(name, got, &want["message"]);
                frames_checked += 1;
            }
        }
        // The frames are exactly the counted slices of the stream.
        let mut rebuilt = Vec::new();
        for frame in &frames {
            rebuilt.extend_from_slice(format!("{} ", frame.len()).as_bytes());
            rebuilt.extend_from_slice(frame);
        }
        assert!(
            input.starts_with(&rebuilt),
            "{name}: frames are not the stream's counted slices"
        );
    }
    println!(
        "octet counting: {} cases, {frames_checked} frames and {errors_checked} errors checked",
        cases.len()
    );
    assert_eq!(cases.len(), 17);
    assert_eq!(lenient_used, LENIENT.len());
    assert!(
        frames_checked >= 14 && errors_checked >= 9,
        "{frames_checked} {errors_checked}"
    );
}

#[test]
fn oversized_lf_frame_is_reported_once_and_stream_resyncs() {
    let mut stream = b"<13>Jan 12 06:30:00 h a: before\n".to_vec();
    stream.extend(std::iter::repeat_n(b'x', 100 * 1024));
    stream.extend_from_slice(b"\n<13>Jan 12 06:30:00 h a: after\n");
    let mut framer = Framer::new(8192);
    let mut items = Vec::new();
    for chunk in stream.chunks(4096) {
        framer.push(chunk);
        assert!(
            framer.buffered_len() <= 8192 + 4096,
            "buffer grew to {}",
            framer.buffered_len()
        );
        while let Some(item) = framer.next_frame() {
            items.push(item);
        }
    }
    while let Some(item) = framer.finish() {
        items.push(item);
    }
    assert_eq!(framer.mode(), Some(Mode::NonTransparent));
    assert_eq!(items.len(), 3, "{:?}", reasons(&items));
    assert_eq!(
        items[0].as_deref().unwrap(),
        b"<13>Jan 12 06:30:00 h a: before"
    );
    assert_eq!(
        items[1],
        Err(FrameError::TooLong {
            declared_or_seen: 8193,
            max: 8192
        })
    );
    assert_eq!(items[1].as_ref().unwrap_err().reason(), "frame_too_long");
    assert_eq!(
        items[2].as_deref().unwrap(),
        b"<13>Jan 12 06:30:00 h a: after"
    );
    // The same in one push.
    assert_eq!(run(8192, &[&stream]), items);
}

#[test]
fn oversized_octet_count_is_skipped_without_buffering() {
    let declared = 1_000_000;
    let mut framer = Framer::new(8192);
    framer.push(format!("{declared} ").as_bytes());
    assert_eq!(
        framer.next_frame(),
        Some(Err(FrameError::TooLong {
            declared_or_seen: declared,
            max: 8192
        }))
    );
    let body = vec![b'a'; declared];
    for chunk in body.chunks(65536) {
        framer.push(chunk);
        assert_eq!(framer.buffered_len(), 0);
        assert_eq!(framer.next_frame(), None);
    }
    framer.push(b"5 hello");
    assert_eq!(framer.next_frame(), Some(Ok(b"hello".to_vec())));
    assert_eq!(framer.finish(), None);
}

#[test]
fn truncated_octet_counted_frame_at_eof_is_an_error() {
    for stream in [&b"16 <1>1"[..], b"1", b"16 <1>1 - - - - - -12"] {
        let items = run(8192, &[stream]);
        let last = items.last().unwrap();
        assert_eq!(
            last,
            &Err(FrameError::BadLength {
                detail: "truncated".into()
            }),
            "{stream:?}"
        );
        assert_eq!(last.as_ref().unwrap_err().reason(), "bad_octet_count");
    }
}

#[test]
fn bad_octet_count_is_reported_once_then_the_framer_is_dead() {
    let mut framer = Framer::new(8192);
    framer.push(b"5 hello5xworld");
    assert_eq!(framer.next_frame(), Some(Ok(b"hello".to_vec())));
    assert!(matches!(
        framer.next_frame(),
        Some(Err(FrameError::BadLength { .. }))
    ));
    assert_eq!(framer.next_frame(), None);
    framer.push(b"5 hello");
    assert_eq!(framer.next_frame(), None);
    assert_eq!(framer.buffered_len(), 0);
    assert_eq!(framer.finish(), None);

    let items = run(8192, &[b"12345678901 x"]);
    assert!(
        matches!(&items[..], [Err(FrameError::BadLength { .. })]),
        "{items:?}"
    );
}

#[test]
fn lf_framing_accepts_nul_crlf_and_a_final_unterminated_frame() {
    let items = run(8192, &[b"<1>a\r\n<2>b\0\n\n<3>c"]);
    assert_eq!(
        reasons(&items),
        vec![
            Ok(b"<1>a".to_vec()),
            Ok(b"<2>b".to_vec()),
            Ok(b"<3>c".to_vec())
        ]
    );
}

#[test]
fn octet_counting_tolerates_newlines_between_frames() {
    let items = run(8192, &[b"3 abc\n3 def\r\n"]);
    assert_eq!(
        reasons(&items),
        vec![Ok(b"abc".to_vec()), Ok(b"def".to_vec())]
    );
}
