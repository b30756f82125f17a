//! The C functions of the fleet features (PROXY protocol, reuse-port, the
//! transport address, ticket keys, SNI, OCSP, suites, groups, key log),
//! called as C calls them: NULL handles and arguments, values outside
//! their enums, small buffers, and the error message of each refusal.

mod common;

use std::ffi::{c_char, CString};
use std::ptr::{null, null_mut};

use common::ffi_support::*;
use common::*;
use sslserver::ffi::config::*;
use sslserver::ffi::server::*;
use sslserver::ffi::socket::*;
use sslserver::ffi::sslserver_result::*;
use sslserver::ProxyProtocol;

#[test]
fn proxy_protocol_reuse_port_and_transport_address_functions() {
    // NULL handles.
    let mut n = 0usize;
    let mut buf = [0 as c_char; 64];
    assert_eq!(
        sslserver_set_reuse_port(null_mut(), true),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(last_error(), "server must not be NULL");
    assert_eq!(
        sslserver_set_proxy_protocol(null_mut(), 1),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslsocket_transport_peer_address(null(), buf.as_mut_ptr(), 64, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(last_error(), "s must not be NULL");

    let (server, port, ca) = listening_server();
    // Values outside the enum are refused and change nothing.
    for bad in [2, -1, i32::MAX] {
        assert_eq!(
            sslserver_set_proxy_protocol(server, bad),
            SSLSERVER_ERROR_INVALID_ARGUMENT
        );
        assert!(last_error().contains(&bad.to_string()), "{}", last_error());
    }
    assert_eq!(sslserver_set_reuse_port(server, false), SSLSERVER_OK);
    assert_eq!(
        sslserver_set_proxy_protocol(server, ProxyProtocol::Required as i32),
        SSLSERVER_OK
    );

    // A client behind a balancer: the header, then the ClientHello.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(SOON)).unwrap();
    let transport_port = tcp.local_addr().unwrap().port();
    let config = client_config(&ca.identity.cert_der, None, &[]);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(config, name).unwrap();
    let mut bytes = format!("PROXY TCP6 2001:db8::99 ::1 4242 {port}\r\n").into_bytes();
    tls.write_tls(&mut bytes).unwrap();
    use std::io::Write;
    tcp.write_all(&bytes).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).unwrap();
    }
    assert!(sslserver_wait_for_new_connection(
        server,
        30_000,
        null_mut()
    ));
    let socket = sslserver_next_pending_connection(server);
    assert!(!socket.is_null());

    assert_eq!(
        sslsocket_peer_address(socket, buf.as_mut_ptr(), 64, &mut n),
        SSLSERVER_OK
    );
    assert_eq!(text(buf.as_ptr()), "2001:db8::99");
    assert_eq!(sslsocket_peer_port(socket), 4242);
    // The string-out convention, as for sslsocket_peer_address.
    assert_eq!(
        sslsocket_transport_peer_address(socket, null_mut(), 0, &mut n),
        SSLSERVER_ERROR_BUFFER_TOO_SMALL
    );
    assert_eq!(n, "127.0.0.1".len());
    let mut small = [0 as c_char; 9];
    assert_eq!(
        sslsocket_transport_peer_address(socket, small.as_mut_ptr(), small.len(), &mut n),
        SSLSERVER_ERROR_BUFFER_TOO_SMALL,
        "no room for the NUL"
    );
    assert_eq!(n, 9);
    assert_eq!(
        sslsocket_transport_peer_address(socket, null_mut(), 5, &mut n),
        SSLSERVER_ERROR_INVALID_ARGUMENT,
        "a length without a buffer"
    );
    assert_eq!(
        sslsocket_transport_peer_address(socket, buf.as_mut_ptr(), 64, null_mut()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslsocket_transport_peer_address(socket, buf.as_mut_ptr(), 10, &mut n),
        SSLSERVER_OK
    );
    assert_eq!((text(buf.as_ptr()).as_str(), n), ("127.0.0.1", 9));
    assert_ne!(transport_port, 4242);
    sslsocket_free(socket);

    // Back to OFF: the next connection is plain TLS, and both addresses agree.
    assert_eq!(
        sslserver_set_proxy_protocol(server, ProxyProtocol::Off as i32),
        SSLSERVER_OK
    );
    let client = connect(port, client_config(&ca.identity.cert_der, None, &[])).unwrap();
    assert!(sslserver_wait_for_new_connection(
        server,
        30_000,
        null_mut()
    ));
    let socket = sslserver_next_pending_connection(server);
    assert_eq!(sslsocket_peer_port(socket), port_of(&client));
    assert_eq!(
        sslsocket_transport_peer_address(socket, buf.as_mut_ptr(), 64, &mut n),
        SSLSERVER_OK
    );
    assert_eq!(text(buf.as_ptr()), "127.0.0.1");
    sslsocket_free(socket);
    sslserver_free(server);
}

#[test]
fn fleet_configuration_calls_check_their_arguments() {
    let name = CString::new("www.example.com").unwrap();
    let path = CString::new("/nonexistent/file").unwrap();
    let list = CString::new("X25519").unwrap();
    // NULL configuration.
    assert_eq!(
        sslconfig_set_session_ticket_keys_files(null_mut(), null(), 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(last_error(), "cfg must not be NULL");
    assert_eq!(
        sslconfig_set_session_tickets(null_mut(), false),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_add_sni_certificate_files(
            null_mut(),
            name.as_ptr(),
            path.as_ptr(),
            path.as_ptr(),
            null()
        ),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_ocsp_response(null_mut(), null(), 0),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_ciphers(null_mut(), list.as_ptr()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_groups(null_mut(), list.as_ptr()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_key_log_file(null_mut(), null()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    let cfg = sslconfig_new();
    // A count with no array, and a NULL entry in one.
    assert_eq!(
        sslconfig_set_session_ticket_keys_files(cfg, null(), 2),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(last_error(), "paths must not be NULL");
    let entries = [path.as_ptr(), null()];
    assert_eq!(
        sslconfig_set_session_ticket_keys_files(cfg, entries.as_ptr(), 2),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(last_error(), "paths[1] must not be NULL");
    // No paths: back to the default; a missing file names itself.
    assert_eq!(
        sslconfig_set_session_ticket_keys_files(cfg, null(), 0),
        SSLSERVER_OK
    );
    assert_eq!(
        sslconfig_set_session_ticket_keys_files(cfg, entries.as_ptr(), 1),
        SSLSERVER_ERROR_IO
    );
    assert_eq!(last_error(), "/nonexistent/file: No such file or directory");
    assert_eq!(sslconfig_set_session_tickets(cfg, false), SSLSERVER_OK);
    // SNI: every string but the passphrase is required.
    for (n, c, k) in [
        (null(), path.as_ptr(), path.as_ptr()),
        (name.as_ptr(), null(), path.as_ptr()),
        (name.as_ptr(), path.as_ptr(), null()),
    ] {
        assert_eq!(
            sslconfig_add_sni_certificate_files(cfg, n, c, k, null()),
            SSLSERVER_ERROR_INVALID_ARGUMENT
        );
    }
    let star = CString::new("*").unwrap();
    assert_eq!(
        sslconfig_add_sni_certificate_files(
            cfg,
            star.as_ptr(),
            path.as_ptr(),
            path.as_ptr(),
            null()
        ),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("'*'"), "{}", last_error());
    // OCSP: NULL with a length is refused, NULL/0 clears, garbage is refused.
    assert_eq!(
        sslconfig_set_ocsp_response(cfg, null(), 5),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(sslconfig_set_ocsp_response(cfg, null(), 0), SSLSERVER_OK);
    let garbage = b"\x30\x03garbage";
    assert_eq!(
        sslconfig_set_ocsp_response(cfg, garbage.as_ptr(), garbage.len()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    // Ciphers and groups: NULL and unknown names.
    assert_eq!(
        sslconfig_set_ciphers(cfg, null()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert_eq!(
        sslconfig_set_groups(cfg, null()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    let unknown = CString::new("TLS_AES_128_GCM_SHA256:RC4-MD5").unwrap();
    assert_eq!(
        sslconfig_set_ciphers(cfg, unknown.as_ptr()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("'RC4-MD5'"), "{}", last_error());
    assert_eq!(sslconfig_set_groups(cfg, list.as_ptr()), SSLSERVER_OK);
    // Key log: NULL and "" turn it off; an unopenable path is named.
    assert_eq!(sslconfig_set_key_log_file(cfg, null()), SSLSERVER_OK);
    let empty = CString::new("").unwrap();
    assert_eq!(
        sslconfig_set_key_log_file(cfg, empty.as_ptr()),
        SSLSERVER_OK
    );
    assert_eq!(
        sslconfig_set_key_log_file(cfg, path.as_ptr()),
        SSLSERVER_ERROR_IO
    );
    assert!(
        last_error().contains("/nonexistent/file"),
        "{}",
        last_error()
    );
    sslconfig_free(cfg);
}
