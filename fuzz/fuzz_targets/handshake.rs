#![no_main]
//! See `sslserver_fuzz::handshake` (fuzz/src/harness.rs) for the input format and the oracle.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sslserver_fuzz::handshake(data));
