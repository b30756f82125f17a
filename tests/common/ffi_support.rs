//! Helpers of the tests that call the C functions directly (tests/ffi.rs,
//! tests/ffi_fleet.rs).

use std::ffi::{c_char, CStr, CString};
use std::ptr::null;

use super::TestCa;
use sslserver::ffi::config::*;
use sslserver::ffi::server::*;
use sslserver::ffi::sslserver_result::*;
use sslserver::ffi::*;

/// The calling thread's last error message.
pub fn last_error() -> String {
    // SAFETY: the library returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(sslserver_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// A string the library returned.
pub fn text(ptr: *const c_char) -> String {
    // SAFETY: the library returns valid NUL-terminated static strings.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// A server (through the C API) listening on 127.0.0.1 with a certificate
/// of a fresh test CA, without client certificates.
pub fn listening_server() -> (*mut sslserver::Server, u16, TestCa) {
    let ca = TestCa::new("ca");
    let server = configured_server(&ca);
    let local = CString::new("127.0.0.1").unwrap();
    assert_eq!(sslserver_listen(server, local.as_ptr(), 0), SSLSERVER_OK);
    let port = sslserver_server_port(server);
    assert_ne!(port, 0);
    (server, port, ca)
}

/// A new server (through the C API) with `ca`'s server certificate and no
/// client certificates, not listening yet.
pub fn configured_server(ca: &TestCa) -> *mut sslserver::Server {
    let id = ca.server();
    let cfg = sslconfig_new();
    assert_eq!(
        sslconfig_set_certificate_chain_pem(cfg, id.cert_pem.as_ptr(), id.cert_pem.len()),
        SSLSERVER_OK
    );
    assert_eq!(
        sslconfig_set_private_key_pem(cfg, id.key_pem.as_ptr(), id.key_pem.len(), null()),
        SSLSERVER_OK
    );
    assert_eq!(sslconfig_set_peer_verify_mode(cfg, 0), SSLSERVER_OK);
    let server = sslserver_new();
    assert_eq!(sslserver_set_config(server, cfg), SSLSERVER_OK);
    // The server keeps its own copy.
    sslconfig_free(cfg);
    server
}
