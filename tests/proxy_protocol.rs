//! The PROXY protocol in front of TLS, as a server behind a load balancer
//! sees it: the client's address from the header, the balancer's as the
//! transport address, and every bad or late header refused before a byte of
//! TLS is read. Also SO_REUSEPORT.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use sslserver::{
    ErrorKind, EventKind, PeerVerifyMode, ProxyProtocol, Server, SocketError, TlsConfig,
};

struct Setup {
    ca: TestCa,
    server: TestServer,
}

/// A server that requires the PROXY protocol, with `timeout_ms` as its
/// handshake deadline.
fn proxied_server(timeout_ms: i32) -> Setup {
    let ca = TestCa::new("proxy-ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let server = TestServer::start_with(
        &config,
        |s| {
            s.set_proxy_protocol(ProxyProtocol::Required);
            s.set_handshake_timeout(timeout_ms).unwrap();
        },
        |_| {},
    );
    Setup { ca, server }
}

/// A client's TCP connection and the ClientHello it has not sent yet.
struct Pending {
    tcp: TcpStream,
    tls: ClientConnection,
    hello: Vec<u8>,
}

impl Pending {
    fn new(setup: &Setup) -> Pending {
        let tcp = TcpStream::connect(setup.server.addr()).unwrap();
        tcp.set_read_timeout(Some(SOON)).unwrap();
        tcp.set_nodelay(true).unwrap();
        let config = client_config(&setup.ca.identity.cert_der, None, &[]);
        let mut tls =
            ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut hello = Vec::new();
        tls.write_tls(&mut hello).unwrap();
        Pending { tcp, tls, hello }
    }

    /// The balancer's side of the connection: the port the server sees.
    fn transport_port(&self) -> u16 {
        self.tcp.local_addr().unwrap().port()
    }

    /// Completes the handshake whose ClientHello has been sent.
    fn finish(self) -> std::io::Result<Client> {
        let mut client = StreamOwned::new(self.tls, self.tcp);
        while client.conn.is_handshaking() {
            client.conn.complete_io(&mut client.sock)?;
        }
        Ok(client)
    }

    /// Sends `header` and the ClientHello in one write (one segment, as a
    /// balancer does) and completes the handshake.
    fn handshake_behind(mut self, header: &[u8]) -> std::io::Result<Client> {
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&self.hello);
        self.tcp.write_all(&bytes)?;
        self.finish()
    }
}

fn v1(client: SocketAddr, server_port: u16) -> Vec<u8> {
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    let destination = if client.is_ipv4() { "127.0.0.1" } else { "::1" };
    format!(
        "PROXY {family} {} {destination} {} {server_port}\r\n",
        client.ip(),
        client.port()
    )
    .into_bytes()
}

/// The longest version 2 header the server accepts (documented).
const MAX_V2_HEADER: usize = 1024;

const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

fn v2_raw(version_command: u8, family_transport: u8, body: &[u8]) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[version_command, family_transport]);
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    header.extend_from_slice(body);
    header
}

/// A version 2 PROXY command for `client`, followed by `tlvs`.
fn v2(client: SocketAddr, server_port: u16, tlvs: &[u8]) -> Vec<u8> {
    let (family_transport, mut body) = match client.ip() {
        IpAddr::V4(ip) => (0x11, [ip.octets(), [127, 0, 0, 1]].concat()),
        IpAddr::V6(ip) => (0x21, [ip.octets(), Ipv6Addr::LOCALHOST.octets()].concat()),
    };
    body.extend_from_slice(&client.port().to_be_bytes());
    body.extend_from_slice(&server_port.to_be_bytes());
    body.extend_from_slice(tlvs);
    v2_raw(0x21, family_transport, &body)
}

/// Takes the connection, checks both addresses, and echoes one message
/// through it (the TLS stream behind the header is intact).
fn check_proxied(setup: &Setup, client: Client, expected_peer: SocketAddr, transport_port: u16) {
    let mut client = client;
    let connection = setup.server.accept_one();
    assert_eq!(connection.peer_addr(), expected_peer, "the peer address");
    let transport = connection.transport_peer_addr();
    assert_eq!(transport.ip().to_string(), "127.0.0.1");
    assert_eq!(transport.port(), transport_port, "the balancer's port");
    client.write_all(b"behind a balancer").unwrap();
    let mut buf = [0u8; 64];
    let n = connection.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"behind a balancer");
    connection.write(b"pong").unwrap();
    let mut back = [0u8; 4];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"pong");
    connection.release();
}

/// Waits for ERROR_OCCURRED on the connection the server saw from
/// `transport_port`, and checks it came alone, with `error`, and that
/// nothing was queued.
fn check_refused(setup: &Setup, transport_port: u16, error: SocketError) -> Duration {
    let events = setup.server.events.finished(transport_port);
    assert_eq!(
        kinds_of(&events),
        [EventKind::ErrorOccurred],
        "ERROR_OCCURRED and nothing else: {events:#?}"
    );
    assert_eq!(events[0].socket_error, error, "{events:#?}");
    assert!(
        events[0].description.contains("PROXY protocol header"),
        "{}",
        events[0].description
    );
    assert!(!setup.server.server.has_pending_connections());
    events[0].at.elapsed()
}

#[test]
fn v1_tcp4_header_gives_the_client_address_and_the_balancer_stays_the_transport() {
    let setup = proxied_server(5000);
    let claimed: SocketAddr = "203.0.113.7:40001".parse().unwrap();
    let pending = Pending::new(&setup);
    let transport_port = pending.transport_port();
    let client = pending
        .handshake_behind(&v1(claimed, setup.server.port))
        .expect("the handshake behind a v1 header");
    check_proxied(&setup, client, claimed, transport_port);
    // Events name the client: NEW_CONNECTION came after the header.
    let events = setup.server.events.finished(claimed.port());
    assert_eq!(
        kinds_of(&events),
        [
            EventKind::NewConnection,
            EventKind::StartedEncryptionHandshake,
            EventKind::PendingConnectionAvailable
        ]
    );
    assert!(
        events[0].description.contains("203.0.113.7:40001"),
        "{}",
        events[0].description
    );
}

#[test]
fn v1_tcp6_header_gives_an_ipv6_client_address() {
    let setup = proxied_server(5000);
    let claimed: SocketAddr = "[2001:db8::7]:40002".parse().unwrap();
    let pending = Pending::new(&setup);
    let transport_port = pending.transport_port();
    let client = pending
        .handshake_behind(&v1(claimed, setup.server.port))
        .unwrap();
    check_proxied(&setup, client, claimed, transport_port);
}

#[test]
fn v1_tcp6_with_an_ipv4_mapped_client_gives_the_ipv4_client() {
    // What HAProxy sends for an IPv4 client when either side is IPv6 (a
    // dual-stack `bind :::443 v4v6`, or an IPv6 path to this server).
    let setup = proxied_server(5000);
    let pending = Pending::new(&setup);
    let transport_port = pending.transport_port();
    let header = format!(
        "PROXY TCP6 ::ffff:203.0.113.9 ::ffff:10.0.0.1 40009 {}\r\n",
        setup.server.port
    );
    let client = pending
        .handshake_behind(header.as_bytes())
        .expect("the handshake behind a TCP6 line with IPv4-mapped addresses");
    let claimed: SocketAddr = "203.0.113.9:40009".parse().unwrap();
    check_proxied(&setup, client, claimed, transport_port);
}

#[test]
fn v2_headers_with_tlvs_give_ipv4_and_ipv6_client_addresses() {
    let setup = proxied_server(5000);
    let mut tlvs = vec![0x02, 0x00, 0x0B];
    tlvs.extend_from_slice(b"example.com");
    tlvs.extend_from_slice(&[0x05, 0x00, 0x03, 1, 2, 3]);
    for claimed in ["198.51.100.20:40003", "[2001:db8::20]:40004"] {
        let claimed: SocketAddr = claimed.parse().unwrap();
        let pending = Pending::new(&setup);
        let transport_port = pending.transport_port();
        let client = pending
            .handshake_behind(&v2(claimed, setup.server.port, &tlvs))
            .unwrap();
        check_proxied(&setup, client, claimed, transport_port);
    }
}

#[test]
fn v2_local_and_v1_unknown_keep_the_transport_address() {
    let setup = proxied_server(5000);
    let headers = [
        v2_raw(0x20, 0x00, &[]),
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"PROXY UNKNOWN ::1 ::1 1 2\r\n".to_vec(),
    ];
    for header in headers {
        let pending = Pending::new(&setup);
        let transport_port = pending.transport_port();
        let client = pending.handshake_behind(&header).unwrap();
        let transport = SocketAddr::new("127.0.0.1".parse().unwrap(), transport_port);
        check_proxied(&setup, client, transport, transport_port);
    }
}

#[test]
fn a_header_split_across_packets_is_put_together() {
    let setup = proxied_server(5000);
    let claimed: SocketAddr = "192.0.2.55:40005".parse().unwrap();
    for header in [
        v1(claimed, setup.server.port),
        v2(claimed, setup.server.port, &[]),
    ] {
        let mut pending = Pending::new(&setup);
        let transport_port = pending.transport_port();
        // Three segments: the start of the header, its rest with the start
        // of the ClientHello, then the rest of the ClientHello. The pauses
        // are the scenario (a slow path), not a wait for the server.
        let mut bytes = header.clone();
        bytes.extend_from_slice(&pending.hello);
        let cuts = [0, 7, header.len() + 3, bytes.len()];
        for pair in cuts.windows(2) {
            pending.tcp.write_all(&bytes[pair[0]..pair[1]]).unwrap();
            pending.tcp.flush().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        let client = pending
            .finish()
            .expect("the handshake behind a split header");
        check_proxied(&setup, client, claimed, transport_port);
    }
}

#[test]
fn a_plain_client_hello_without_a_header_is_refused_unread() {
    let setup = proxied_server(5000);
    let (transport_port, reply, closed, _) = send_raw(setup.server.port, &client_hello(), false);
    assert!(closed, "the server closed the connection");
    assert!(
        reply.is_empty(),
        "the server answered a ClientHello it must not read: {reply:?}"
    );
    check_refused(&setup, transport_port, SocketError::SslHandshakeFailed);
}

#[test]
fn garbage_malformed_and_oversized_headers_are_refused() {
    let setup = proxied_server(5000);
    let port = setup.server.port;
    let oversized = v2_raw(0x21, 0x00, &vec![0u8; 2000]);
    let cases: [&[u8]; 7] = [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 443\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 443\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 443\n",
        b"PROXY TCP9 1.2.3.4 5.6.7.8 1 443\r\n",
        &oversized,
        &[
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x11,
        ],
    ];
    for bytes in cases {
        let mut with_hello = bytes.to_vec();
        with_hello.extend_from_slice(&client_hello());
        let (transport_port, reply, closed, _) = send_raw(port, &with_hello, false);
        assert!(closed, "{:?}", String::from_utf8_lossy(bytes));
        assert!(reply.is_empty(), "{:?}", String::from_utf8_lossy(bytes));
        check_refused(&setup, transport_port, SocketError::SslHandshakeFailed);
    }
    // A long v1 line without its CRLF.
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(300, b'a');
    let (transport_port, _, closed, _) = send_raw(port, &long, false);
    assert!(closed);
    check_refused(&setup, transport_port, SocketError::SslHandshakeFailed);
}

#[test]
fn a_truncated_header_is_refused_when_the_peer_closes() {
    let setup = proxied_server(5000);
    let claimed: SocketAddr = "192.0.2.1:1".parse().unwrap();
    for header in [v1(claimed, 443), v2(claimed, 443, &[])] {
        let cut = &header[..header.len() - 1];
        let (transport_port, _, closed, _) = send_raw(setup.server.port, cut, true);
        assert!(closed);
        check_refused(&setup, transport_port, SocketError::SslHandshakeFailed);
    }
    // Nothing at all, then a close.
    let (transport_port, _, _, _) = send_raw(setup.server.port, b"", true);
    check_refused(&setup, transport_port, SocketError::SslHandshakeFailed);
}

#[test]
fn a_header_that_does_not_arrive_in_time_ends_at_the_deadline() {
    let timeout = Duration::from_millis(300);
    let setup = proxied_server(timeout.as_millis() as i32);
    for start in [&b""[..], b"PROXY TCP4 ", &V2_SIGNATURE[..]] {
        let mut tcp = TcpStream::connect(setup.server.addr()).unwrap();
        let connected = Instant::now();
        let transport_port = tcp.local_addr().unwrap().port();
        tcp.write_all(start).unwrap();
        check_refused(&setup, transport_port, SocketError::SocketTimeout);
        let took = connected.elapsed();
        assert!(
            took >= timeout,
            "refused after {took:?}, before the deadline"
        );
        assert!(took < SOON, "refused only after {took:?}");
        assert!(closed_by_server(&mut tcp));
    }
}

#[test]
fn off_by_default_and_a_change_applies_to_the_next_connection() {
    let ca = TestCa::new("proxy-off-ca");
    let config: TlsConfig = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let server = TestServer::start(&config);
    assert_eq!(server.server.proxy_protocol(), ProxyProtocol::Off);
    let client_config = client_config(&ca.identity.cert_der, None, &[]);
    let mut client = connect(server.port, client_config.clone()).unwrap();
    let connection = server.accept_one();
    assert_eq!(connection.peer_addr().port(), port_of(&client));
    assert_eq!(connection.transport_peer_addr(), connection.peer_addr());
    assert_eq!(echo_roundtrip_with(&mut client, &connection), b"plain");
    connection.release();

    // A header sent to a server that does not expect one is not TLS.
    let (port, _, closed, _) = send_raw(server.port, b"PROXY UNKNOWN\r\n", false);
    assert!(closed);
    assert_eq!(
        server.events.kinds(port),
        [EventKind::NewConnection, EventKind::ErrorOccurred]
    );

    // Turned on while listening: the next connection needs a header.
    server.server.set_proxy_protocol(ProxyProtocol::Required);
    let (port, _) = connect_from_port(server.port, client_config);
    let events = server.events.finished(port);
    assert_eq!(kinds_of(&events), [EventKind::ErrorOccurred]);
    assert_eq!(events[0].socket_error, SocketError::SslHandshakeFailed);
}

/// The client writes "plain"; the server echoes it.
fn echo_roundtrip_with(client: &mut Client, connection: &Arc<sslserver::Connection>) -> Vec<u8> {
    client.write_all(b"plain").unwrap();
    let mut buf = [0u8; 16];
    let n = connection.read(&mut buf).unwrap();
    connection.write(&buf[..n]).unwrap();
    let mut back = vec![0u8; n];
    client.read_exact(&mut back).unwrap();
    back
}

#[test]
fn servers_with_reuse_port_share_a_port_and_one_without_is_refused() {
    let ca = TestCa::new("reuse-ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let first = Server::new();
    first.set_config(&config).unwrap();
    first.set_reuse_port(true);
    first.listen(Some("127.0.0.1"), 0).unwrap();
    let port = first.local_addr().unwrap().port();

    let second = Server::new();
    second.set_config(&config).unwrap();
    second.set_reuse_port(true);
    second
        .listen(Some("127.0.0.1"), port)
        .expect("a second SO_REUSEPORT listener on the same port");
    assert!(first.is_listening() && second.is_listening());
    assert_eq!(second.local_addr().unwrap().port(), port);

    // Both serve: connections reach one or the other.
    let client_config = client_config(&ca.identity.cert_der, None, &[]);
    let client = connect(port, client_config).expect("a handshake on the shared port");
    let deadline = Instant::now() + SOON;
    let taken = loop {
        if let Some(c) = first
            .next_pending_connection()
            .or_else(|| second.next_pending_connection())
        {
            break c;
        }
        assert!(Instant::now() < deadline, "no server queued the connection");
        first.wait_for_new_connection(Some(Duration::from_millis(20)));
    };
    assert_eq!(taken.peer_addr().port(), port_of(&client));

    let third = Server::new();
    third.set_config(&config).unwrap();
    let refused = third
        .listen(Some("127.0.0.1"), port)
        .expect_err("a listener without SO_REUSEPORT on a shared port");
    assert_eq!(refused.kind(), ErrorKind::AddressInUse, "{refused}");
    assert_eq!(third.server_error().0, SocketError::AddressInUse);
}

#[test]
fn a_dripping_header_ends_at_the_deadline_from_accept() {
    // A v2 header announcing 1000 bytes, one byte every 20 ms: 20 s of
    // bytes that keep arriving. Every receive waits only until the one
    // deadline from accept, so it ends then, long before the drip does.
    let timeout = Duration::from_millis(300);
    let setup = proxied_server(timeout.as_millis() as i32);
    let mut tcp = TcpStream::connect(setup.server.addr()).unwrap();
    tcp.set_nodelay(true).unwrap();
    let connected = Instant::now();
    let transport_port = tcp.local_addr().unwrap().port();
    let header = v2_raw(0x21, 0x00, &[0u8; 1000 - 16]);
    for byte in &header {
        let refused = !setup.server.events.of(transport_port).is_empty();
        if refused || tcp.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check_refused(&setup, transport_port, SocketError::SocketTimeout);
    let took = connected.elapsed();
    assert!(
        took >= timeout,
        "refused after {took:?}, before the deadline"
    );
    assert!(
        took < Duration::from_secs(10),
        "the drip kept the connection for {took:?}"
    );
}

#[test]
fn one_deadline_covers_the_header_and_the_handshake() {
    // The header comes late, then no ClientHello: the handshake ends at the
    // deadline counted from accept, not from the header.
    let timeout = Duration::from_millis(2000);
    let setup = proxied_server(timeout.as_millis() as i32);
    let claimed: SocketAddr = "192.0.2.77:40077".parse().unwrap();
    let mut tcp = TcpStream::connect(setup.server.addr()).unwrap();
    let connected = Instant::now();
    std::thread::sleep(Duration::from_millis(1400));
    tcp.write_all(&v1(claimed, setup.server.port)).unwrap();
    let sent = Instant::now();
    let events = setup.server.events.finished(claimed.port());
    let ended = Instant::now();
    assert_eq!(
        kinds_of(&events),
        [EventKind::NewConnection, EventKind::ErrorOccurred]
    );
    assert_eq!(events[1].socket_error, SocketError::SocketTimeout);
    let took = ended - connected;
    assert!(took >= timeout, "ended after {took:?}");
    // A deadline restarted by the header could not end before `sent +
    // timeout`; the one from accept ends 1.4 s earlier (the slack a loaded
    // machine gets).
    assert!(
        ended < sent + timeout,
        "the deadline restarted after the header: ended {took:?} after connect"
    );
}

#[test]
fn the_longest_headers_leave_the_client_hello_behind_them_intact() {
    let setup = proxied_server(5000);
    let claimed: SocketAddr = "192.0.2.9:4000".parse().unwrap();
    // A v2 header of exactly the 1024 bytes accepted (a NOOP TLV pads it).
    let pad = MAX_V2_HEADER - 16 - 12;
    let mut tlv = vec![0x04];
    tlv.extend_from_slice(&((pad - 3) as u16).to_be_bytes());
    tlv.resize(pad, 0);
    let longest_v2 = v2(claimed, setup.server.port, &tlv);
    assert_eq!(longest_v2.len(), MAX_V2_HEADER);
    let pending = Pending::new(&setup);
    let transport_port = pending.transport_port();
    let client = pending.handshake_behind(&longest_v2).unwrap();
    check_proxied(&setup, client, claimed, transport_port);
    // The longest v1 line (107 bytes).
    let longest_v1 = format!(
        "PROXY UNKNOWN {0} {0} 65535 65535\r\n",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    );
    assert_eq!(longest_v1.len(), 107);
    let pending = Pending::new(&setup);
    let transport_port = pending.transport_port();
    let client = pending.handshake_behind(longest_v1.as_bytes()).unwrap();
    let transport = SocketAddr::new("127.0.0.1".parse().unwrap(), transport_port);
    check_proxied(&setup, client, transport, transport_port);
}
