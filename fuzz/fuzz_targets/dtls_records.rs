#![no_main]
//! See `sslserver_fuzz::dtls_records` (fuzz/src/parsers.rs) for the input and the oracle.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sslserver_fuzz::dtls_records(data));
