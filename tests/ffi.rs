//! The C API's boundary: NULL everywhere, bad enum values, the string-out
//! convention, error messages, and freeing handles while other threads are
//! blocked on them.

mod common;

use std::ffi::{c_char, CString};
use std::ptr::{null, null_mut};
use std::thread;
use std::time::Duration;

use common::ffi_support::*;
use common::*;
use sslserver::ffi::config::*;
use sslserver::ffi::server::*;
use sslserver::ffi::socket::*;
use sslserver::ffi::sslserver_result::{self, *};
use sslserver::ffi::*;
use sslserver::{PeerVerifyMode, Protocol, SocketError, SocketState};

#[test]
fn every_function_accepts_null() {
    let mut n = 0usize;
    let mut buf = [0 as c_char; 8];
    let c = CString::new("x").unwrap();
    assert!(sslconfig_clone(null()).is_null());
    sslconfig_free(null_mut());
    assert_eq!(
        sslconfig_set_certificate_chain_pem(null_mut(), null(), 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(last_error(), "cfg must not be NULL");
    assert_eq!(
        sslconfig_set_certificate_chain_file(null_mut(), c.as_ptr()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_private_key_pem(null_mut(), null(), 0, null()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_private_key_file(null_mut(), null(), null()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_generate_self_signed(null_mut(), null(), 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_add_ca_certificates_pem(null_mut(), null(), 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_add_ca_certificates_file(null_mut(), null()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_peer_verify_mode(null_mut(), 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_protocol(null_mut(), 4),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_alpn_protocols(null_mut(), null(), 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_handshake_must_interrupt_on_error(null_mut(), true),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_certificate_fingerprint_sha256(null(), buf.as_mut_ptr(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_certificate_chain_pem(null(), buf.as_mut_ptr(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_peer_verify_mode(null()),
        PeerVerifyMode::AutoVerifyPeer
    );
    assert_eq!(sslconfig_protocol(null()), Protocol::SecureProtocols);

    sslserver_free(null_mut());
    assert_eq!(
        sslserver_set_config(null_mut(), null()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslserver_set_handshake_timeout(null_mut(), 1),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(sslserver_handshake_timeout(null()), 0);
    assert_eq!(
        sslserver_set_max_pending_connections(null_mut(), 1),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(sslserver_max_pending_connections(null()), 0);
    assert_eq!(
        sslserver_set_max_concurrent_handshakes(null_mut(), 1),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(sslserver_max_concurrent_handshakes(null()), 0);
    assert_eq!(
        sslserver_set_listen_backlog_size(null_mut(), 1),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(sslserver_listen_backlog_size(null()), 0);
    assert_eq!(
        sslserver_listen(null_mut(), null(), 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslserver_set_socket_descriptor(null_mut(), 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(sslserver_socket_descriptor(null()), -1);
    assert!(!sslserver_is_listening(null()));
    assert_eq!(sslserver_server_port(null()), 0);
    assert_eq!(
        sslserver_server_address(null(), buf.as_mut_ptr(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    sslserver_close(null_mut());
    sslserver_pause_accepting(null_mut());
    sslserver_resume_accepting(null_mut());
    assert!(!sslserver_has_pending_connections(null()));
    assert!(sslserver_next_pending_connection(null_mut()).is_null());
    let mut timed_out = true;
    assert!(!sslserver_wait_for_new_connection(
        null_mut(),
        0,
        &mut timed_out
    ));
    assert_eq!(sslserver_server_error(null()), SocketError::Unknown);
    assert_eq!(
        sslserver_error_string(null(), buf.as_mut_ptr(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslserver_register_callback(null_mut(), 0, None, null_mut()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );

    let mut bytes = [0u8; 8];
    let mut der: *const u8 = null();
    assert_eq!(
        sslsocket_read(null_mut(), bytes.as_mut_ptr(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslsocket_write(null_mut(), bytes.as_ptr(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert!(!sslsocket_wait_for_ready_read(null_mut(), 0));
    assert_eq!(sslsocket_bytes_available(null()), 0);
    assert!(!sslsocket_is_encrypted(null()));
    assert_eq!(sslsocket_state(null()), SocketState::Unconnected);
    assert_eq!(sslsocket_error(null()), SocketError::Unknown);
    assert_eq!(
        sslsocket_error_string(null(), buf.as_mut_ptr(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslsocket_peer_address(null(), buf.as_mut_ptr(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(sslsocket_peer_port(null()), 0);
    assert_eq!(sslsocket_local_port(null()), 0);
    assert_eq!(sslsocket_session_protocol(null()), Protocol::Unknown);
    assert_eq!(
        sslsocket_session_cipher(null(), buf.as_mut_ptr(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(sslsocket_peer_certificate_chain_length(null()), 0);
    assert_eq!(
        sslsocket_peer_certificate_der(null(), 0, &mut der, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslsocket_alpn_protocol(null(), buf.as_mut_ptr(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslsocket_server_name(null(), buf.as_mut_ptr(), 8, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(sslsocket_ssl_handshake_error_count(null()), 0);
    assert_eq!(
        sslsocket_ssl_handshake_error(null(), 0),
        sslserver::SslErrorCode::None
    );
    sslsocket_ignore_ssl_errors(null_mut());
    sslsocket_continue_interrupted_handshake(null_mut());
    assert_eq!(
        sslsocket_disconnect_from_host(null_mut()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    sslsocket_abort(null_mut());
    sslsocket_free(null_mut());
}

#[test]
fn bad_enum_values_and_out_of_range_numbers_are_invalid_arguments() {
    let cfg = sslconfig_new();
    assert_eq!(
        sslconfig_set_peer_verify_mode(cfg, 42),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("42"));
    assert_eq!(
        sslconfig_set_protocol(cfg, 99),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_protocol(cfg, Protocol::TlsV1_1 as i32),
        SSLSERVER_ERROR_UNSUPPORTED
    );
    assert_eq!(
        sslconfig_set_protocol(cfg, Protocol::TlsV1_3 as i32),
        SSLSERVER_OK
    );
    assert_eq!(sslconfig_protocol(cfg), Protocol::TlsV1_3);
    let server = sslserver_new();
    assert_eq!(
        sslserver_register_callback(server, 77, None, null_mut()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslserver_register_callback(server, 9, None, null_mut()),
        SSLSERVER_ERROR_UNSUPPORTED,
        "PRE_SHARED_KEY_AUTHENTICATION_REQUIRED"
    );
    assert_eq!(
        sslserver_set_handshake_timeout(server, -2),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(sslserver_set_handshake_timeout(server, -1), SSLSERVER_OK);
    assert_eq!(sslserver_handshake_timeout(server), -1);
    assert_eq!(
        sslserver_set_max_pending_connections(server, 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslserver_max_pending_connections(server),
        30,
        "unchanged default"
    );
    assert_eq!(sslserver_max_concurrent_handshakes(server), 1024);
    assert_eq!(sslserver_listen_backlog_size(server), 50);
    let fresh = sslserver_new();
    assert_eq!(sslserver_handshake_timeout(fresh), 5000);
    sslserver_free(fresh);
    let bad_utf8 = [0xffu8 as c_char, 0];
    assert_eq!(
        sslserver_listen(server, bad_utf8.as_ptr(), 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(text(sslserver_result_string(1234)), "unknown result code");
    assert_eq!(
        text(sslserver_result_string(SSLSERVER_ERROR_PRIVATE_KEY as i32)),
        "private key error"
    );
    assert_eq!(text(sslserver_socket_error_name(5)), "SocketTimeoutError");
    assert_eq!(
        text(sslserver_ssl_error_code_name(9)),
        "SelfSignedCertificate"
    );
    assert_eq!(text(sslserver_protocol_name(12)), "TLSv1.3");
    assert_eq!(
        text(sslserver::ffi::events::sslserver_event_kind_name(0)),
        "NEW_CONNECTION"
    );
    assert_eq!(
        text(sslserver::ffi::events::sslserver_event_kind_name(-5)),
        "unknown"
    );
    assert_eq!(text(sslserver_version()), env!("CARGO_PKG_VERSION"));
    sslserver_free(server);
    sslconfig_free(cfg);
}

#[test]
fn string_out_convention() {
    let cfg = sslconfig_new();
    assert_eq!(sslconfig_generate_self_signed(cfg, null(), 0), SSLSERVER_OK);
    let mut n = 0usize;
    // Size query with no buffer.
    assert_eq!(
        sslconfig_certificate_fingerprint_sha256(cfg, null_mut(), 0, &mut n),
        SSLSERVER_ERROR_BUFFER_TOO_SMALL
    );
    assert_eq!(n, 95);
    let mut small = [0 as c_char; 95];
    assert_eq!(
        sslconfig_certificate_fingerprint_sha256(cfg, small.as_mut_ptr(), small.len(), &mut n),
        SSLSERVER_ERROR_BUFFER_TOO_SMALL,
        "no room for the NUL"
    );
    let mut exact = [0 as c_char; 96];
    let mut written = 0usize;
    assert_eq!(
        sslconfig_certificate_fingerprint_sha256(cfg, exact.as_mut_ptr(), 96, &mut written),
        SSLSERVER_OK
    );
    assert_eq!(written, 95);
    let fingerprint = text(exact.as_ptr());
    assert_eq!(fingerprint.len(), 95);
    assert!(fingerprint
        .chars()
        .all(|c| c.is_ascii_hexdigit() || c == ':'));
    assert_eq!(
        sslconfig_certificate_fingerprint_sha256(cfg, exact.as_mut_ptr(), 96, null_mut()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    sslconfig_free(cfg);
}

#[test]
fn loader_errors_reach_last_error_message() {
    let cfg = sslconfig_new();
    let path = CString::new("/nonexistent/chain.pem").unwrap();
    assert_eq!(
        sslconfig_set_certificate_chain_file(cfg, path.as_ptr()),
        SSLSERVER_ERROR_IO
    );
    assert_eq!(
        last_error(),
        "/nonexistent/chain.pem: No such file or directory"
    );
    let garbage = b"not pem at all";
    assert_eq!(
        sslconfig_set_private_key_pem(cfg, garbage.as_ptr(), garbage.len(), null()),
        SSLSERVER_ERROR_PRIVATE_KEY
    );
    assert!(last_error().contains("no PEM private key"));
    assert_eq!(
        sslconfig_set_certificate_chain_pem(cfg, null(), 5),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(last_error(), "pem must not be NULL");
    let ca = TestCa::new("ca");
    let (one, two) = (ca.server(), ca.server());
    assert_eq!(
        sslconfig_set_certificate_chain_pem(cfg, one.cert_pem.as_ptr(), one.cert_pem.len()),
        SSLSERVER_OK
    );
    assert_eq!(
        sslconfig_set_private_key_pem(cfg, two.key_pem.as_ptr(), two.key_pem.len(), null()),
        SSLSERVER_ERROR_PRIVATE_KEY
    );
    assert_eq!(last_error(), "private key does not match the certificate");
    let server = sslserver_new();
    assert_eq!(
        sslserver_set_config(server, cfg),
        SSLSERVER_ERROR_PRIVATE_KEY,
        "no key was kept"
    );
    assert_eq!(
        sslserver_listen(server, null(), 0),
        SSLSERVER_ERROR_INVALID_STATE
    );
    sslserver_free(server);
    sslconfig_free(cfg);
}

/// Raw pointers are not Send; tests move them across threads as addresses.
#[derive(Clone, Copy)]
struct Handle(usize);

#[test]
fn close_wakes_a_thread_blocked_in_wait_for_new_connection_then_free() {
    let (server, _port, _ca) = listening_server();
    let handle = Handle(server as usize);
    let waiter = thread::spawn(move || {
        let mut timed_out = true;
        let got = sslserver_wait_for_new_connection(handle.0 as *mut _, -1, &mut timed_out);
        (got, timed_out)
    });
    thread::sleep(Duration::from_millis(100));
    sslserver_close(server);
    assert_eq!(waiter.join().unwrap(), (false, false));
    sslserver_free(server);
}

#[test]
fn socket_calls_and_free_while_a_read_is_blocked() {
    let (server, port, ca) = listening_server();
    let mut client = connect(port, client_config(&ca.identity.cert_der, None, &["x"])).unwrap();
    let mut timed_out = true;
    assert!(sslserver_wait_for_new_connection(
        server,
        10_000,
        &mut timed_out
    ));
    assert!(!timed_out);
    let socket = sslserver_next_pending_connection(server);
    assert!(!socket.is_null());
    assert!(sslsocket_is_encrypted(socket));
    assert_eq!(sslsocket_state(socket), SocketState::Connected);
    assert_eq!(sslsocket_peer_port(socket), port_of(&client));
    assert_eq!(sslsocket_local_port(socket), port);
    let mut buf = [0 as c_char; 64];
    let mut n = 0;
    assert_eq!(
        sslsocket_peer_address(socket, buf.as_mut_ptr(), 64, &mut n),
        SSLSERVER_OK
    );
    assert_eq!(text(buf.as_ptr()), "127.0.0.1");
    assert_eq!(
        sslsocket_session_cipher(socket, buf.as_mut_ptr(), 64, &mut n),
        SSLSERVER_OK
    );
    assert!(text(buf.as_ptr()).starts_with("TLS_"));
    assert_eq!(
        sslsocket_alpn_protocol(socket, buf.as_mut_ptr(), 64, &mut n),
        SSLSERVER_OK
    );
    assert_eq!(n, 0, "no ALPN configured on the server");
    assert_eq!(
        sslsocket_server_name(socket, buf.as_mut_ptr(), 64, &mut n),
        SSLSERVER_OK
    );
    assert_eq!(text(buf.as_ptr()), "localhost");
    let mut der: *const u8 = null();
    assert_eq!(
        sslsocket_peer_certificate_der(socket, 0, &mut der, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );

    use std::io::Write;
    client.write_all(b"abc").unwrap();
    assert!(sslsocket_wait_for_ready_read(socket, 10_000));
    let mut bytes = [0u8; 16];
    assert_eq!(
        sslsocket_read(socket, bytes.as_mut_ptr(), 0, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslsocket_read(socket, bytes.as_mut_ptr(), 16, &mut n),
        SSLSERVER_OK
    );
    assert_eq!(&bytes[..n], b"abc");

    // Another thread blocks in read; freeing the socket wakes it.
    let handle = Handle(socket as usize);
    let reader = thread::spawn(move || {
        let mut bytes = [0u8; 16];
        let mut n = 0;
        sslsocket_read(handle.0 as *mut _, bytes.as_mut_ptr(), 16, &mut n)
    });
    thread::sleep(Duration::from_millis(100));
    sslsocket_free(socket);
    assert_eq!(reader.join().unwrap(), SSLSERVER_ERROR_CLOSED);
    sslserver_free(server);
}

#[test]
fn adopting_a_descriptor_and_refusing_non_listeners() {
    use std::os::fd::AsRawFd;
    let (server, _port, _ca) = listening_server();
    let fd = sslserver_socket_descriptor(server);
    assert!(fd >= 0);
    let other = sslserver_new();
    // Not a listening socket: refused, and the descriptor is left open.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        sslserver_set_socket_descriptor(other, udp.as_raw_fd()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert!(udp.local_addr().is_ok(), "still open");
    assert_eq!(
        sslserver_set_socket_descriptor(other, -1),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslserver_set_socket_descriptor(other, 999_999),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    // A listening socket, but no config yet: refused, still open.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        sslserver_set_socket_descriptor(other, listener.as_raw_fd()),
        SSLSERVER_ERROR_INVALID_STATE
    );
    assert!(listener.local_addr().is_ok());
    sslserver_free(other);
    sslserver_free(server);
}

#[test]
fn result_codes_all_have_text() {
    for code in 0..=13 {
        let t = text(sslserver_result_string(code));
        assert!(!t.is_empty() && t != "unknown result code", "{code}");
    }
    let _: sslserver_result = SSLSERVER_OK;
}
