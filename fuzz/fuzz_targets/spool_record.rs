//! Any bytes as the body of a spool record through `vigil::bus::spool::decode` (the spool's
//! on-disk format: src/bus/spool.rs). Must never panic; whatever decodes survives a round trip,
//! `decode(encode(r)) == r`, and encoding it again gives the same bytes (the first encoding
//! normalizes the event's JSON; after that the format is a fixed point).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::bus::spool::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let record = match decode(data) {
        Ok(r) => r,
        Err(message) => {
            assert!(!message.is_empty());
            return;
        }
    };
    assert!(record.ack.is_none());
    let bytes = encode(&record);
    match decode(&bytes) {
        Ok(again) => {
            assert_eq!(again, record, "decode(encode(r)) != r");
            assert_eq!(encode(&again), bytes, "encode(decode(encode(r))) != encode(r)");
        }
        Err(e) => panic!("an encoded record does not decode: {e}"),
    }
});
