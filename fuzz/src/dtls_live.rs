//! The `dtls_server` target: datagrams from a peer that completed the
//! cookie exchange, so they reach the DTLS engine (a third-party parser of
//! peer bytes) behind the server's own record checks.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sslserver::dtls::{DtlsEvent, DtlsEventKind, DtlsServer};

// The DTLS tests' ClientHello builder, one copy for both.
#[path = "../../tests/dtls_support/client_hello.rs"]
mod client_hello;
use client_hello::{client_hello, hello_verify_cookie};

/// No answer the oracle waits for takes longer than this.
const BOUND: Duration = Duration::from_secs(10);

struct Shared {
    server: Arc<DtlsServer>,
    port: u16,
    /// Texts of ERROR events that report a panic caught on the server's
    /// thread.
    internal_errors: Arc<Mutex<Vec<String>>>,
    /// The text of the last ERROR event, for the messages of failures.
    last_error: Arc<Mutex<String>>,
}

/// One server for the whole run. Fuzz inputs all come from 127.0.0.1, so
/// its per-address bounds are opened up, and a short handshake deadline
/// clears the peers inputs leave behind.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let server = Arc::new(DtlsServer::new());
        server.set_psk_callback(Some(Arc::new(|identity: &[u8]| {
            (identity != b"mallory").then(|| vec![0x42; 16])
        })));
        server.set_identity_hint(b"fuzz").unwrap();
        server.set_handshake_timeout(500).unwrap();
        server.set_max_peers(100_000).unwrap();
        server.set_max_handshakes_per_address(100_000).unwrap();
        server.set_max_peers_per_address(100_000).unwrap();
        let internal_errors = Arc::new(Mutex::new(Vec::new()));
        let last_error = Arc::new(Mutex::new(String::new()));
        let (sink, last) = (internal_errors.clone(), last_error.clone());
        server.set_callback(
            DtlsEventKind::Error,
            Some(Arc::new(move |event: &DtlsEvent| {
                if event.description.contains("internal error") {
                    sink.lock().unwrap().push(event.description.clone());
                }
                *last.lock().unwrap() = event.description.clone();
            })),
        );
        server.listen(Some("127.0.0.1"), 0).unwrap();
        let port = server.local_addr().unwrap().port();
        Shared {
            server,
            port,
            internal_errors,
            last_error,
        }
    })
}

/// `[u16 len][datagram]...`, sent after a ClientHello with a valid cookie
/// from a fresh port. Oracles: no panic on the server's thread (caught
/// there and reported as an internal error), and the server still answers
/// a new client's ClientHello with a HelloVerifyRequest afterwards.
pub fn dtls_server(data: &[u8]) {
    static INPUTS: AtomicU64 = AtomicU64::new(0);
    let shared = shared();
    let n = INPUTS.fetch_add(1, Ordering::Relaxed);
    let socket = socket(shared.port);
    let mut random = [0u8; 32];
    random[..8].copy_from_slice(&n.to_be_bytes());
    let cookie = cookie_for(&socket, random).unwrap_or_else(|| {
        panic!(
            "no HelloVerifyRequest within {BOUND:?}; {:?}",
            shared.server.stats()
        )
    });
    socket
        .send(&client_hello(random, &cookie, 1, 1))
        .expect("send the ClientHello");
    let mut rest = data;
    while let [high, low, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
        let _ = socket.send(&tail[..len]);
        rest = &tail[len..];
    }
    // A new client is still answered: the server's thread goes on.
    let probe = self::socket(shared.port);
    if cookie_for(&probe, [0xee; 32]).is_none() {
        panic!(
            "a new client's ClientHello got no HelloVerifyRequest within {BOUND:?}; {:?}; last error: {}",
            shared.server.stats(),
            shared.last_error.lock().unwrap()
        );
    }
    let errors = shared.internal_errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "a panic on the server's thread: {errors:?}"
    );
}

fn socket(port: u16) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    socket
}

/// Sends a ClientHello without a cookie, again every `RETRANSMIT` as a
/// real client does (a datagram may be dropped: a burst of inputs can fill
/// the server's receive buffer), and returns the cookie of the
/// HelloVerifyRequest, or `None` if none comes within `BOUND`.
fn cookie_for(socket: &UdpSocket, random: [u8; 32]) -> Option<Vec<u8>> {
    const RETRANSMIT: Duration = Duration::from_millis(250);
    socket.set_read_timeout(Some(RETRANSMIT)).unwrap();
    let hello = client_hello(random, &[], 0, 0);
    let until = Instant::now() + BOUND;
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        socket.send(&hello).expect("send the first ClientHello");
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => panic!("receiving the HelloVerifyRequest failed: {e}"),
        };
        if let Some(cookie) = hello_verify_cookie(&buf[..n]) {
            return Some(cookie.to_vec());
        }
    }
    None
}
