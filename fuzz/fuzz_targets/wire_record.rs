//! Any bytes as a record on a Vigil topic (scaled-out mode) through
//! `vigil::cluster::wire::unpack`, as each item type: events, routed matches, detections and
//! dead letters, in the binary format (events in the event codec, `vigil_parsers::codec`) or
//! as JSON; and as a correlate node's checkpoint body (`CorrelateState::from_bytes`, binary or
//! JSON). Must never panic or allocate beyond the input; whatever a record holds survives
//! being packed again in the binary format and read back (`unpack(pack(items)) == items`),
//! and a checkpoint that reads survives `from_bytes(to_bytes(state)) == state`.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use vigil::cluster::wire::{
    pack, unpack, CorrelateState, DetectionRecord, MatchRecord, WireFormat, WireItem,
};
use vigil::store::DeadLetter;
use vigil_parsers::Event;

fn check<T: WireItem + PartialEq + Debug>(data: &[u8]) {
    let Ok(items) = unpack::<T>(data) else {
        return;
    };
    let encoded = items
        .iter()
        .map(|item| {
            let bytes = WireFormat::Binary
                .encode(item)
                .expect("an item that was read can be written");
            (b"k".to_vec(), bytes)
        })
        .collect();
    let back: Vec<T> = pack(encoded, 1, WireFormat::Binary)
        .iter()
        .flat_map(|(_, record)| unpack::<T>(record).expect("a packed record reads back"))
        .collect();
    assert_eq!(back, items, "unpack(pack(items)) != items");
}

fuzz_target!(|data: &[u8]| {
    check::<Event>(data);
    check::<MatchRecord>(data);
    check::<DetectionRecord>(data);
    check::<DeadLetter>(data);
    if let Ok(state) = CorrelateState::from_bytes(data) {
        assert_eq!(
            CorrelateState::from_bytes(&state.to_bytes()),
            Ok(state),
            "from_bytes(to_bytes(state)) != state"
        );
    }
});
