//! Non-blocking sockets and the pollable server (contract section V2.3):
//! what an event loop relies on. WOULD_BLOCK instead of waiting, partial
//! writes under a bounded queue that lose and duplicate nothing, records
//! without data that are not a close, close_notify vs truncation, switching
//! modes on a live socket, plain sockets, and the server's notification
//! descriptor following its queue.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use common::*;
use rustls::ServerConnection;
use sslserver::ffi::server::sslserver_notification_descriptor;
use sslserver::ffi::socket::{
    sslsocket_flush, sslsocket_read, sslsocket_set_blocking, sslsocket_wants_write,
};
use sslserver::ffi::sslserver_result::*;
use sslserver::ffi::sslserver_result_string;
use sslserver::{Connection, ErrorKind, PeerVerifyMode, Server, TlsConfig};

/// Waits up to `timeout` for `events` on `fd`; the events that came (0 on timeout).
fn poll_fd(fd: i32, events: i16, timeout: Duration) -> i16 {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY (test): one valid pollfd on the stack.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    assert!(n >= 0, "poll failed");
    if n == 0 {
        0
    } else {
        pfd.revents
    }
}

fn readable_now(fd: i32) -> bool {
    poll_fd(fd, libc::POLLIN, Duration::ZERO) & libc::POLLIN != 0
}

/// What an event loop does to read: poll for POLLIN, read, until the read
/// gives data or an end (anything but WOULD_BLOCK).
fn read_when_ready(socket: &Connection, fd: i32, buf: &mut [u8]) -> sslserver::Result<usize> {
    loop {
        match socket.read(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert_ne!(
                    poll_fd(fd, libc::POLLIN, SOON),
                    0,
                    "no input within {SOON:?}"
                );
            }
            other => return other,
        }
    }
}

fn tls_setup() -> (TlsConfig, Arc<rustls::ClientConfig>, TestCa) {
    let ca = TestCa::new("ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    let client = client_config(&ca.identity.cert_der, None, &[]);
    (config, client, ca)
}

fn raw_fd(socket: &Connection) -> i32 {
    let fd = socket.descriptor();
    assert!(fd >= 0);
    fd
}

#[test]
fn a_nonblocking_read_on_an_empty_socket_would_block_then_gets_the_data() {
    let (config, client_config, _ca) = tls_setup();
    let server = TestServer::start(&config);
    let mut client = connect(server.port, client_config).unwrap();
    let socket = server.accept_one();
    socket.set_blocking(false);
    assert!(!socket.is_blocking());

    let mut buf = [0u8; 64];
    let err = socket.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");

    // The C API gives the new code, with its text.
    let mut n = usize::MAX;
    let ptr = Arc::as_ptr(&socket).cast_mut();
    assert_eq!(
        sslsocket_read(ptr, buf.as_mut_ptr(), buf.len(), &mut n),
        SSLSERVER_ERROR_WOULD_BLOCK
    );
    assert_eq!(n, usize::MAX, "a WOULD_BLOCK read must not report a count");
    // SAFETY (test): the result string is a static C string.
    let text = unsafe {
        std::ffi::CStr::from_ptr(sslserver_result_string(SSLSERVER_ERROR_WOULD_BLOCK as i32))
    };
    assert!(text.to_str().unwrap().contains("would block"));
    assert!(!sslsocket_wants_write(ptr));
    assert_eq!(
        sslsocket_flush(ptr),
        SSLSERVER_OK,
        "nothing queued to flush"
    );
    assert_eq!(
        sslsocket_set_blocking(std::ptr::null_mut(), false),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );

    client.write_all(b"hello").unwrap();
    let fd = raw_fd(&socket);
    let n = read_when_ready(&socket, fd, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(
        socket.read(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
}

/// The server side of an echo on one thread, as an event loop writes it:
/// partial writes keep their rest, nothing is read while much is unsent.
struct EchoLoop {
    partial_writes: usize,
    would_block_writes: usize,
    would_block_flushes: usize,
}

fn run_echo_loop(socket: &Connection, backpressure: &AtomicBool) -> EchoLoop {
    let fd = raw_fd(socket);
    let mut stats = EchoLoop {
        partial_writes: 0,
        would_block_writes: 0,
        would_block_flushes: 0,
    };
    let mut unsent: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut peer_done = false;
    loop {
        let want_input = !peer_done && unsent.len() < 64 * 1024;
        // Plaintext already decrypted makes no POLLIN: read it first.
        if !(want_input && socket.bytes_available() > 0) {
            let mut events = 0;
            if want_input {
                events |= libc::POLLIN;
            }
            if !unsent.is_empty() || socket.wants_write() {
                events |= libc::POLLOUT;
            }
            assert_ne!(poll_fd(fd, events, SOON), 0, "the echo stalled");
        }
        if want_input {
            loop {
                match socket.read(&mut buf) {
                    Ok(0) => {
                        peer_done = true;
                        break;
                    }
                    Ok(n) => {
                        unsent.extend_from_slice(&buf[..n]);
                        if unsent.len() >= 64 * 1024 {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read failed: {e}"),
                }
            }
        }
        if socket.wants_write() {
            match socket.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => stats.would_block_flushes += 1,
                Err(e) => panic!("flush failed: {e}"),
            }
        }
        while !unsent.is_empty() {
            match socket.write(&unsent) {
                Ok(n) => {
                    assert!(n > 0, "a write took nothing without WOULD_BLOCK");
                    let full = n == unsent.len();
                    unsent.drain(..n);
                    if !full {
                        stats.partial_writes += 1;
                        backpressure.store(true, Ordering::Release);
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    stats.would_block_writes += 1;
                    backpressure.store(true, Ordering::Release);
                    break;
                }
                Err(e) => panic!("write failed: {e}"),
            }
        }
        if socket.wants_write() {
            // The kernel did not take every record: the peer is behind.
            backpressure.store(true, Ordering::Release);
        }
        if peer_done && unsent.is_empty() && !socket.wants_write() {
            // Answer the peer's close_notify with ours.
            socket.disconnect_from_host().unwrap();
            while socket.wants_write() {
                if socket.flush().is_err() {
                    assert_ne!(poll_fd(fd, libc::POLLOUT, SOON), 0, "the close stalled");
                }
            }
            return stats;
        }
    }
}

#[test]
fn ten_mib_echo_through_a_nonblocking_socket_whose_peer_reads_slowly() {
    const TOTAL: usize = 10 * 1024 * 1024;
    let (config, _, ca) = tls_setup();
    let server = TestServer::start(&config);
    let mut client_tls = TlsConfig::new();
    client_tls
        .add_ca_certificates_pem(ca.identity.cert_pem.as_bytes())
        .unwrap();
    let client = sslserver::connect_encrypted(
        "127.0.0.1",
        server.port,
        &client_tls,
        Some("localhost"),
        30_000,
    )
    .unwrap();
    let socket = server.accept_one();
    socket.set_blocking(false);

    let data = Arc::new(XorShift::new(14).bytes(TOTAL));
    let backpressure = Arc::new(AtomicBool::new(false));

    let writer = {
        let (client, data) = (client.clone(), data.clone());
        thread::spawn(move || {
            for chunk in data.chunks(100_003) {
                client.write(chunk).unwrap();
            }
        })
    };
    // The peer reads nothing until the server had to queue or refuse, then
    // reads in small pieces: the server's writes keep meeting a full socket.
    let reader = {
        let (client, backpressure) = (client.clone(), backpressure.clone());
        thread::spawn(move || {
            poll_until(SOON, || backpressure.load(Ordering::Acquire))
                .expect("the server never met a full socket");
            let mut echoed = Vec::with_capacity(TOTAL);
            let mut buf = [0u8; 1500];
            while echoed.len() < TOTAL {
                let n = client.read(&mut buf).unwrap();
                assert_ne!(n, 0, "the echo ended early at {}", echoed.len());
                echoed.extend_from_slice(&buf[..n]);
            }
            echoed
        })
    };
    let server_thread = {
        let (socket, backpressure) = (socket.clone(), backpressure.clone());
        thread::spawn(move || run_echo_loop(&socket, &backpressure))
    };

    // A failure on either side must not leave the other blocked forever.
    let stop_all = || {
        client.abort();
        socket.abort();
    };
    let echoed = reader.join().unwrap_or_else(|_| {
        stop_all();
        panic!("the reading peer failed")
    });
    if server_thread.is_finished() {
        stop_all();
    }
    writer.join().unwrap();
    assert_eq!(echoed.len(), TOTAL);
    let first_difference = echoed.iter().zip(data.iter()).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "the echo differs from what was sent"
    );

    client.disconnect_from_host().unwrap();
    let stats = server_thread.join().unwrap();
    assert!(
        stats.partial_writes + stats.would_block_writes > 0,
        "no write was ever partial or refused"
    );
    eprintln!(
        "partial writes {}, WOULD_BLOCK writes {}, WOULD_BLOCK flushes {}",
        stats.partial_writes, stats.would_block_writes, stats.would_block_flushes
    );
    let mut buf = [0u8; 16];
    assert_eq!(
        client.read(&mut buf).unwrap(),
        0,
        "no close_notify after the echo"
    );
}

#[test]
fn a_nonblocking_write_takes_at_most_the_queue_bound_and_flush_sends_the_rest() {
    let (config, client_config, _ca) = tls_setup();
    let server = TestServer::start(&config);
    let mut client = connect(server.port, client_config).unwrap();
    let socket = server.accept_one();
    socket.set_blocking(false);

    // The peer does not read: the kernel buffers fill, then the queue.
    let data = XorShift::new(7).bytes(8 * 1024 * 1024);
    let mut taken = 0;
    loop {
        match socket.write(&data[taken..]) {
            Ok(n) => {
                assert!(n > 0 && taken + n <= data.len());
                taken += n;
                assert!(taken < data.len(), "8 MiB fit into a socket nobody reads");
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    assert!(socket.wants_write(), "WOULD_BLOCK with nothing queued");
    assert_eq!(
        socket.flush().unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "a flush to a full socket must say so"
    );

    // The peer reads everything taken; flushes then empty the queue.
    let fd = raw_fd(&socket);
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; taken];
        client.read_exact(&mut got).unwrap();
        (client, got)
    });
    while socket.wants_write() {
        match socket.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert_ne!(poll_fd(fd, libc::POLLOUT, SOON), 0);
            }
            Err(e) => panic!("flush failed: {e}"),
        }
    }
    let (mut client, got) = reader.join().unwrap();
    assert!(got == data[..taken], "queued bytes arrived altered");

    // Nothing is left behind in the queue.
    assert_eq!(socket.write(b"tail").unwrap(), 4);
    let mut tail = [0u8; 4];
    client.read_exact(&mut tail).unwrap();
    assert_eq!(&tail, b"tail");
}

#[test]
fn a_key_update_alone_makes_the_socket_readable_but_is_no_close() {
    let (config, client_config, _ca) = tls_setup();
    let server = TestServer::start(&config);
    let mut client = connect(server.port, client_config).unwrap();
    let socket = server.accept_one();
    socket.set_blocking(false);
    let fd = raw_fd(&socket);

    client.conn.refresh_traffic_keys().unwrap();
    while client.conn.wants_write() {
        client.conn.write_tls(&mut client.sock).unwrap();
    }
    assert_ne!(poll_fd(fd, libc::POLLIN, SOON) & libc::POLLIN, 0);
    let mut buf = [0u8; 64];
    let err = socket.read(&mut buf).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::WouldBlock,
        "a KeyUpdate read as: {err}"
    );
    assert_eq!(socket.bytes_available(), 0);
    assert_eq!(socket.state(), sslserver::SocketState::Connected);

    // Both directions go on under the new keys.
    client.write_all(b"after the update").unwrap();
    let n = read_when_ready(&socket, fd, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"after the update");
    assert_eq!(socket.write(b"reply").unwrap(), 5);
    let mut reply = [0u8; 5];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"reply");
}

/// A TLS 1.3 server (rustls) that completes the handshake, then sends its
/// session ticket only when told to, then data, then close_notify.
fn ticket_server(
    listener: TcpListener,
    ca: &TestCa,
    steps: mpsc::Receiver<()>,
) -> thread::JoinHandle<()> {
    let identity = ca.server();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert_der.clone()], identity.key_der())
        .unwrap();
    let mut config = config;
    config.send_tls13_tickets = 1;
    let config = Arc::new(config);
    thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut conn = ServerConnection::new(config).unwrap();
        while conn.is_handshaking() {
            while conn.wants_write() && conn.is_handshaking() {
                conn.write_tls(&mut tcp).unwrap();
            }
            if conn.is_handshaking() {
                conn.read_tls(&mut tcp).unwrap();
                conn.process_new_packets().unwrap();
            }
        }
        steps.recv().unwrap();
        assert!(conn.wants_write(), "no ticket waits to be sent");
        while conn.wants_write() {
            conn.write_tls(&mut tcp).unwrap();
        }
        steps.recv().unwrap();
        conn.writer().write_all(b"data after the ticket").unwrap();
        conn.send_close_notify();
        while conn.wants_write() {
            conn.write_tls(&mut tcp).unwrap();
        }
        let _ = steps.recv();
    })
}

#[test]
fn a_session_ticket_alone_makes_the_socket_readable_but_is_no_close() {
    let ca = TestCa::new("ca");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (step, steps) = mpsc::channel();
    let peer = ticket_server(listener, &ca, steps);
    let mut client_tls = TlsConfig::new();
    client_tls
        .add_ca_certificates_pem(ca.identity.cert_pem.as_bytes())
        .unwrap();
    let socket =
        sslserver::connect_encrypted("127.0.0.1", port, &client_tls, Some("localhost"), 30_000)
            .unwrap();
    socket.set_blocking(false);
    let fd = raw_fd(&socket);
    let mut buf = [0u8; 64];
    assert_eq!(
        socket.read(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );

    step.send(()).unwrap(); // the ticket, alone
    assert_ne!(poll_fd(fd, libc::POLLIN, SOON) & libc::POLLIN, 0);
    let err = socket.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "a ticket read as: {err}");
    assert_eq!(socket.state(), sslserver::SocketState::Connected);

    step.send(()).unwrap(); // data, then close_notify
    let n = read_when_ready(&socket, fd, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"data after the ticket");
    assert_eq!(
        read_when_ready(&socket, fd, &mut buf).unwrap(),
        0,
        "close_notify is a clean close"
    );
    drop(step);
    peer.join().unwrap();
}

#[test]
fn nonblocking_reads_tell_close_notify_from_truncation() {
    let (config, client_config, _ca) = tls_setup();
    let server = TestServer::start(&config);
    let mut buf = [0u8; 64];

    // close_notify: the data, then 0 bytes with OK, and again.
    let mut client = connect(server.port, client_config.clone()).unwrap();
    let socket = server.accept_one();
    socket.set_blocking(false);
    let fd = raw_fd(&socket);
    client.write_all(b"last words").unwrap();
    client.conn.send_close_notify();
    client.flush().unwrap();
    let n = read_when_ready(&socket, fd, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"last words");
    assert_eq!(read_when_ready(&socket, fd, &mut buf).unwrap(), 0);
    assert_eq!(
        socket.read(&mut buf).unwrap(),
        0,
        "a clean close is not repeated as"
    );

    // TCP closed without close_notify: the data, then CLOSED.
    let mut client = connect(server.port, client_config).unwrap();
    let socket = server.accept_one();
    socket.set_blocking(false);
    let fd = raw_fd(&socket);
    client.write_all(b"cut short").unwrap();
    client.flush().unwrap();
    drop(client);
    let n = read_when_ready(&socket, fd, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"cut short");
    let err = read_when_ready(&socket, fd, &mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "truncation read as: {err}");
}

#[test]
fn switching_modes_on_a_live_socket_keeps_every_byte_in_order() {
    let (config, client_config, _ca) = tls_setup();
    let server = TestServer::start(&config);
    let client = connect(server.port, client_config).unwrap();
    let socket = server.accept_one();
    let (go_read, read_now) = mpsc::channel::<()>();
    let (to_client, client_writes) = mpsc::channel::<Vec<u8>>();
    // The client writes when told and reads everything only when told.
    let peer = thread::spawn(move || {
        let mut client = client;
        for message in client_writes {
            if message.is_empty() {
                break;
            }
            client.write_all(&message).unwrap();
        }
        read_now.recv().unwrap();
        let mut all = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) => panic!("client read failed: {e}"),
            }
        }
        all
    });

    let mut buf = [0u8; 64];
    // Blocking first: a read waits for the data.
    to_client.send(b"one".to_vec()).unwrap();
    assert_eq!(socket.read(&mut buf).unwrap(), 3);
    // Non-blocking: nothing there.
    socket.set_blocking(false);
    assert_eq!(
        socket.read(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    // Non-blocking writes until the queue holds bytes.
    let data = XorShift::new(3).bytes(8 * 1024 * 1024);
    let mut taken = 0;
    while !socket.wants_write() {
        match socket.write(&data[taken..]) {
            Ok(n) => taken += n,
            Err(e) => panic!("write refused with nothing queued: {e}"),
        }
        assert!(taken < data.len(), "8 MiB fit into a socket nobody reads");
    }
    // Back to blocking: a read waits again, and a blocking write sends what
    // is queued first, then the rest, while the peer reads.
    socket.set_blocking(true);
    assert!(socket.is_blocking());
    to_client.send(b"two".to_vec()).unwrap();
    to_client.send(Vec::new()).unwrap();
    assert_eq!(socket.read(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"two");
    go_read.send(()).unwrap();
    assert_eq!(socket.write(&data[taken..]).unwrap(), data.len() - taken);
    assert!(!socket.wants_write());
    socket.disconnect_from_host().unwrap();
    let all = peer.join().unwrap();
    assert_eq!(all.len(), data.len());
    assert!(
        all == data,
        "bytes lost, duplicated or reordered across the switch"
    );
}

#[test]
fn a_nonblocking_disconnect_queues_close_notify_and_flush_completes_it() {
    let (config, client_config, _ca) = tls_setup();
    let server = TestServer::start(&config);
    let client = connect(server.port, client_config).unwrap();
    let socket = server.accept_one();
    socket.set_blocking(false);
    // More than loopback's autotuned socket buffers and the queue hold, so
    // the queue fills; the loop ends even if everything were taken.
    let data = XorShift::new(5).bytes(32 * 1024 * 1024);
    let mut taken = 0;
    while taken < data.len() {
        match socket.write(&data[taken..]) {
            Ok(n) => taken += n,
            Err(_) => break,
        }
    }
    assert!(
        taken < data.len(),
        "the socket took 32 MiB while the peer read nothing"
    );
    assert!(socket.wants_write());
    // Returns at once although the peer reads nothing.
    socket.disconnect_from_host().unwrap();
    assert!(
        socket.wants_write(),
        "close_notify should wait behind the queue"
    );
    assert_eq!(
        socket.write(b"x").unwrap_err().kind(),
        ErrorKind::Closed,
        "a write after disconnect"
    );
    let reader = thread::spawn(move || {
        let mut client = client;
        let mut all = Vec::new();
        client.read_to_end(&mut all).map(|_| all)
    });
    let fd = raw_fd(&socket);
    while socket.wants_write() {
        if socket.flush().is_err() {
            assert_ne!(poll_fd(fd, libc::POLLOUT, SOON), 0);
        }
    }
    let all = reader
        .join()
        .unwrap()
        .expect("the peer saw no close_notify");
    assert!(all == data[..taken]);
}

#[test]
fn plain_sockets_read_and_write_without_blocking_too() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let socket = sslserver::connect("127.0.0.1", port, 30_000).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(SOON)).unwrap();
    socket.set_blocking(false);
    let fd = raw_fd(&socket);
    let mut buf = [0u8; 64];
    assert_eq!(
        socket.read(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );

    peer.write_all(b"EHLO example\r\n").unwrap();
    let n = read_when_ready(&socket, fd, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"EHLO example\r\n");

    // Writes take what the kernel takes; WOULD_BLOCK once it takes nothing.
    let data = XorShift::new(11).bytes(16 * 1024 * 1024);
    let mut taken = 0;
    loop {
        match socket.write(&data[taken..]) {
            Ok(n) => {
                assert!(n > 0);
                taken += n;
                assert!(taken < data.len(), "16 MiB fit into a socket nobody reads");
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    assert!(!socket.wants_write(), "plain mode queues nothing");
    let mut got = vec![0u8; taken];
    peer.read_exact(&mut got).unwrap();
    assert!(got == data[..taken]);

    // The peer's close is a clean end (0 bytes, OK).
    drop(peer);
    assert_eq!(read_when_ready(&socket, fd, &mut buf).unwrap(), 0);
}

fn wait_readable(fd: i32) -> bool {
    poll_fd(fd, libc::POLLIN, SOON) & libc::POLLIN != 0
}

#[test]
fn the_notification_descriptor_follows_the_queue() {
    let (config, client_config, _ca) = tls_setup();
    let server = Arc::new(Server::new());
    server.set_config(&config).unwrap();
    // Made before listening: the same descriptor for the server's life.
    let fd = sslserver_notification_descriptor(Arc::as_ptr(&server).cast_mut());
    assert!(fd >= 0);
    assert_eq!(sslserver_notification_descriptor(std::ptr::null_mut()), -1);
    server.listen(Some("127.0.0.1"), 0).unwrap();
    let port = server.local_addr().unwrap().port();
    assert!(!readable_now(fd), "readable with an empty queue");

    let _a = connect(port, client_config.clone()).unwrap();
    assert!(wait_readable(fd), "not readable with a connection queued");
    let _b = connect(port, client_config.clone()).unwrap();
    poll_until(SOON, || server.has_pending_connections()).unwrap();
    let first = server.next_pending_connection().expect("queued");
    // A level-triggered descriptor: the queue still holds one.
    assert!(wait_readable(fd));
    let second = server.next_pending_connection().expect("queued");
    let _ = poll_until(SOON, || !readable_now(fd));
    assert!(server.next_pending_connection().is_none());
    assert!(!readable_now(fd), "readable after the queue emptied");
    assert_eq!(server.notification_descriptor().unwrap(), fd);

    // close empties the queue, and the descriptor with it.
    let _c = connect(port, client_config).unwrap();
    assert!(wait_readable(fd));
    server.close();
    assert!(!readable_now(fd), "readable after close emptied the queue");
    drop((first, second));
}

#[test]
fn the_notification_descriptor_stays_right_with_the_queue_full() {
    let (config, client_config, _ca) = tls_setup();
    let server = Arc::new(Server::new());
    server.set_config(&config).unwrap();
    server.set_max_pending_connections(2).unwrap();
    server.listen(Some("127.0.0.1"), 0).unwrap();
    let port = server.local_addr().unwrap().port();

    // Five clients, two queue slots: three handshakes wait for a slot.
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let config = client_config.clone();
            thread::spawn(move || connect(port, config).unwrap())
        })
        .collect();
    poll_until(SOON, || server.has_pending_connections()).unwrap();
    // Taken after the queue filled, the descriptor reflects it at once.
    let fd = server.notification_descriptor().unwrap();
    assert!(readable_now(fd));

    let mut taken = Vec::new();
    while taken.len() < 5 {
        assert!(
            wait_readable(fd),
            "not readable with {} of 5 taken",
            taken.len()
        );
        while let Some(connection) = server.next_pending_connection() {
            taken.push(connection);
        }
    }
    assert!(
        !readable_now(fd),
        "readable after the last connection was taken"
    );
    let clients: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(clients.len(), 5);
    assert_eq!(taken.len(), 5);
    server.close();
}

#[test]
fn a_ffi_flush_on_a_null_socket_is_an_error_not_a_crash() {
    assert_eq!(
        sslsocket_flush(std::ptr::null_mut()),
        SSLSERVER_ERROR_INVALID_ARGUMENT
    );
    assert!(!sslsocket_wants_write(std::ptr::null()));
}
