//! Feeds arbitrary bytes to the pgoutput decoder: it must return, never
//! panic, and never allocate beyond what the input could hold (libFuzzer's
//! `-rss_limit_mb` / `-malloc_limit_mb` catch the latter).
//!
//! The decoder is pure, so the target compiles just its two source files
//! instead of the whole siphon crate (librdkafka's C build does not survive
//! the sanitizer flags cargo-fuzz sets).

#![no_main]

#[allow(dead_code)]
#[path = "../../src/event.rs"]
mod event;

#[path = "../../src/postgres/pgoutput.rs"]
mod pgoutput;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    if let Err(err) = pgoutput::decode(&buf) {
        // Error messages format input bytes; they must not panic either.
        let _ = err.to_string();
    }
});
