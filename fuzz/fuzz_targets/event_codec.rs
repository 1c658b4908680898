//! Any bytes through `vigil_parsers::codec::decode` (the event codec, both layout versions):
//! must never panic; whatever decodes survives a round trip in either layout,
//! `decode(encode(e)) == e` and `decode(encode_version_1(e)) == e`, and encoding it again gives
//! the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_parsers::codec;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = codec::decode(data) else {
        return;
    };
    let bytes = codec::to_vec(&event);
    let again = codec::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, event, "decode(encode(e)) != e");
    assert_eq!(codec::to_vec(&again), bytes, "encoding is not a fixed point");
    let mut v1 = Vec::new();
    codec::encode_version_1(&event, &mut v1);
    assert_eq!(v1.first(), Some(&1));
    assert_eq!(codec::decode(&v1).ok(), Some(event), "version 1 round trip");
});
