//! Memory per correlation key: the state the engine reports ([`EngineStats::approx_bytes`])
//! checked against what it actually holds from the allocator, and the per-key bound the engine
//! is built to (at most 256 bytes per key, 1 M keys under 1 GiB) for the shape of the pack's
//! `ssh_brute_force` (`event_count` by `source.ip`). Deterministic: allocation counts, no
//! timing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use vigil_correlate::{Engine, EngineLimits, EngineStats, RuleSet};

use crate::common::{ev, load, FAILED};

/// The system allocator, counting the bytes each thread holds (requested sizes, so without
/// the allocator's own overhead, which `approx_bytes` includes).
struct Counting;

thread_local! {
    static HELD: Cell<i64> = const { Cell::new(0) };
}

fn count(bytes: usize, sign: i64) {
    let n = i64::try_from(bytes).unwrap_or(i64::MAX) * sign;
    let _ = HELD.try_with(|c| c.set(c.get() + n));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(layout.size(), -1);
            count(new_size, 1);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn held() -> i64 {
    HELD.with(Cell::get)
}

/// `ssh_brute_force`'s shape: failed logins counted per source address, five minutes, ten.
fn brute_force() -> RuleSet {
    load(&format!(
        "{FAILED}---
title: brute
name: brute
correlation:
  type: event_count
  rules: [failed]
  group-by: [source.ip]
  timespan: 5m
  condition: {{gte: 10}}
"
    ))
}

/// Feeds `keys` source addresses `per_key` failures each (one second apart, all inside the
/// window, none reaching the threshold) to an engine keeping no payloads. Returns its stats
/// and the bytes the engine holds from the allocator (all of it, not just the windows).
fn fill(keys: u32, per_key: i64) -> (EngineStats, i64) {
    let set = Arc::new(brute_force());
    let limits = EngineLimits {
        max_keys_per_rule: 1_000_000,
        max_payload_bytes: 0,
        ..EngineLimits::default()
    };
    let mut out = Vec::with_capacity(16);
    let before = held();
    let mut engine = Engine::new(set, limits);
    for s in 0..per_key {
        for k in 0..keys {
            let ip = format!("10.{}.{}.{}", k >> 16, (k >> 8) & 255, k & 255);
            let e = ev(s, &[("event.outcome", "failure"), ("source.ip", &ip)]);
            engine.process(&e, &mut out);
            out.clear();
        }
    }
    let held = held() - before;
    let stats = engine.stats();
    drop(engine);
    (stats, held)
}

#[test]
fn a_correlation_key_costs_at_most_256_bytes_and_the_estimate_is_honest() {
    // Keys seen once (most keys of a large key set) and keys with a few occurrences.
    for (per_key, most) in [(1, 160), (3, 256)] {
        let (stats, held) = fill(100_000, per_key);
        assert_eq!(stats.keys_live, 100_000);
        assert_eq!(stats.payload_bytes, 0);
        assert_eq!(stats.rules[1].detections, 0);
        let per_key_bytes = stats.bytes_per_key();
        assert!(
            per_key_bytes <= most,
            "{per_key} occurrences: {per_key_bytes} bytes per key (at most {most})"
        );
        // The estimate counts allocator chunks, so it is at least what was requested and not
        // much more.
        let approx = i64::try_from(stats.approx_bytes).unwrap_or(i64::MAX);
        assert!(
            approx >= held && approx <= held + held / 4,
            "{per_key} occurrences: approx_bytes {approx}, allocator holds {held}"
        );
    }
}
