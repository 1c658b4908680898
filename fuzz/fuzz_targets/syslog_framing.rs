//! Any byte stream, cut into chunks at fuzzer-chosen points, through the RFC 6587 framer: must
//! never panic, must stay bounded, and must give the same items as the unchunked stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_parsers::syslog::framing::{FrameError, Framer};

const MAX: usize = 256;

fn run(chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut framer = Framer::new(MAX);
    let mut out = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        while let Some(item) = framer.next_frame() {
            out.push(item);
        }
        assert!(framer.buffered_len() <= MAX + 16 + chunk.len());
    }
    while let Some(item) = framer.finish() {
        out.push(item);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // First byte: chunk size (1-256); the rest is the stream.
    let Some((&size, stream)) = data.split_first() else {
        return;
    };
    let chunks: Vec<&[u8]> = stream.chunks(usize::from(size) + 1).collect();
    assert_eq!(run(&chunks), run(&[stream]));
});
