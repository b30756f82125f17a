//! A TLS echo server on the sslserver library, written the way an
//! application would write it with the public Rust API, in one of two ways:
//!
//! - `--serve queue` (the default): one thread waits for handshaken
//!   connections (`wait_for_new_connection` + `next_pending_connection`)
//!   and starts one thread per connection;
//! - `--serve callback`: the PENDING_CONNECTION_AVAILABLE callback takes
//!   the connection and serves it on the library thread that ran its
//!   handshake, so a connection costs no hand-off to another thread and no
//!   thread start (the fastest way the API allows; see the README's
//!   "Serving a connection from its callback").
//!
//! Either way a connection is echoed with blocking `read`/`write` until the
//! peer closes.
//!
//!   sslserver_echo --cert CHAIN.pem --key KEY.pem [--port P] [--address A]
//!                  [--verify none|query|auto] [--handshake-timeout MS] [--backlog N]
//!                  [--serve queue|callback]
//!
//! It prints `listening on ADDR` once it accepts connections, and runs until
//! it is killed.

use std::io::Write;
use std::process::exit;
use std::sync::Arc;

use sslserver::{Connection, Event, EventKind, PeerVerifyMode, Server, TlsConfig, WaitOutcome};

#[derive(PartialEq)]
enum Serve {
    Queue,
    Callback,
}

struct Options {
    address: String,
    port: u16,
    cert: String,
    key: String,
    verify: PeerVerifyMode,
    handshake_timeout: Option<i32>,
    backlog: Option<i32>,
    serve: Serve,
}

fn usage(error: &str) -> ! {
    eprintln!("sslserver_echo: {error}");
    eprintln!(
        "usage: sslserver_echo --cert CHAIN.pem --key KEY.pem [--port P] [--address A] \
         [--verify none|query|auto] [--handshake-timeout MS] [--backlog N] \
         [--serve queue|callback]"
    );
    exit(2)
}

fn parse() -> Options {
    let mut o = Options {
        address: "127.0.0.1".into(),
        port: 0,
        cert: String::new(),
        key: String::new(),
        verify: PeerVerifyMode::VerifyNone,
        handshake_timeout: None,
        backlog: None,
        serve: Serve::Queue,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--address" => o.address = value(),
            "--port" => o.port = value().parse().unwrap_or_else(|_| usage("bad --port")),
            "--cert" => o.cert = value(),
            "--key" => o.key = value(),
            "--verify" => {
                o.verify = match value().as_str() {
                    "none" => PeerVerifyMode::VerifyNone,
                    "query" => PeerVerifyMode::QueryPeer,
                    "auto" => PeerVerifyMode::AutoVerifyPeer,
                    other => usage(&format!("unknown --verify {other}")),
                }
            }
            "--handshake-timeout" => {
                o.handshake_timeout = Some(
                    value()
                        .parse()
                        .unwrap_or_else(|_| usage("bad --handshake-timeout")),
                )
            }
            "--backlog" => {
                o.backlog = Some(value().parse().unwrap_or_else(|_| usage("bad --backlog")))
            }
            "--serve" => {
                o.serve = match value().as_str() {
                    "queue" => Serve::Queue,
                    "callback" => Serve::Callback,
                    other => usage(&format!("unknown --serve {other}")),
                }
            }
            other => usage(&format!("unknown option {other}")),
        }
    }
    if o.cert.is_empty() || o.key.is_empty() {
        usage("--cert and --key are required");
    }
    o
}

/// The per-connection loop: echo every byte until the peer closes.
///
/// The buffer starts at one page and grows to a full TLS record (16 KiB)
/// once a read fills it: a zeroed 16 KiB buffer up front would be 16 KiB of
/// resident memory per idle connection that belongs to this program, not to
/// the library (the C peers keep theirs on the stack, touched only as used).
fn echo(connection: Arc<Connection>) {
    const MAX: usize = 16 * 1024;
    let mut buf = vec![0u8; 4096];
    loop {
        match connection.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if connection.write(&buf[..n]).is_err() {
                    break;
                }
                if n == buf.len() && buf.len() < MAX {
                    buf.resize(MAX, 0);
                }
            }
        }
    }
    connection.release();
}

fn main() {
    let o = parse();
    let read = |path: &str| {
        std::fs::read(path).unwrap_or_else(|e| usage(&format!("cannot read {path}: {e}")))
    };
    let mut config = TlsConfig::new();
    if let Err(e) = config.set_certificate_chain_pem(&read(&o.cert)) {
        usage(&format!("{}: {e}", o.cert));
    }
    if let Err(e) = config.set_private_key_pem(&read(&o.key), None) {
        usage(&format!("{}: {e}", o.key));
    }
    config.set_peer_verify_mode(o.verify);

    let server = Arc::new(Server::new());
    if let Err(e) = server.set_config(&config) {
        usage(&format!("set_config: {e}"));
    }
    if let Some(ms) = o.handshake_timeout {
        if let Err(e) = server.set_handshake_timeout(ms) {
            usage(&format!("set_handshake_timeout: {e}"));
        }
    }
    if let Some(n) = o.backlog {
        if let Err(e) = server.set_listen_backlog_size(n) {
            usage(&format!("set_listen_backlog_size: {e}"));
        }
    }
    if o.serve == Serve::Callback {
        // Weak: the server owns its callbacks.
        let weak = Arc::downgrade(&server);
        let serve: sslserver::Callback = Arc::new(move |_: &Event<'_>| {
            let Some(server) = weak.upgrade() else { return };
            // Another thread's callback may have taken this thread's
            // connection first; take whatever is queued until none is.
            while let Some(connection) = server.next_pending_connection() {
                echo(connection);
            }
        });
        server.set_callback(EventKind::PendingConnectionAvailable, Some(serve));
    }
    if let Err(e) = server.listen(Some(&o.address), o.port) {
        eprintln!("sslserver_echo: listen: {e}");
        exit(1);
    }
    let addr = server.local_addr().expect("listening");
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    if o.serve == Serve::Callback {
        // The callbacks do all the work; this thread only keeps the process.
        loop {
            std::thread::park();
        }
    }

    loop {
        match server.wait_for_new_connection(None) {
            WaitOutcome::Ready => {
                while let Some(connection) = server.next_pending_connection() {
                    let spawned = std::thread::Builder::new()
                        .name("echo".into())
                        .spawn(move || echo(connection));
                    if let Err(e) = spawned {
                        eprintln!("sslserver_echo: cannot start a thread: {e}");
                    }
                }
            }
            WaitOutcome::TimedOut => {}
            WaitOutcome::NotListening => {
                eprintln!("sslserver_echo: the server stopped listening");
                exit(1);
            }
        }
    }
}
