//! Feeds arbitrary bytes to the pgoutput decoder: it must return, never
//! panic, and never allocate beyond what the input could hold (libFuzzer's
//! `-rss_limit_mb` / `-malloc_limit_mb` catch the latter).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    if let Err(err) = siphon::postgres::pgoutput::decode(&buf) {
        // Error messages format input bytes; they must not panic either.
        let _ = err.to_string();
    }
});
