#![no_main]
//! See `sslserver_fuzz::post_handshake` (fuzz/src/harness.rs) for the input format and the oracle.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sslserver_fuzz::post_handshake(data));
