//! The server under soak: the library on 127.0.0.1 with a self-signed
//! certificate, serving each taken connection on its own thread with an
//! echo until the peer closes, as `c_examples/echo_server` does.
//!
//! Usage: soak-server [HANDSHAKE_TIMEOUT_MS]
//! Prints `listening on 127.0.0.1:PORT` (flushed), then the certificate as
//! PEM between marker lines, and runs until its standard input closes.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sslserver::{EventKind, Server, TlsConfig, WaitOutcome};

/// How connections ended, by kind and reason, printed to stderr at exit.
type Tally = Arc<Mutex<BTreeMap<String, u64>>>;

fn count(tally: &Tally, what: String) {
    *tally.lock().unwrap().entry(what).or_default() += 1;
}

fn main() {
    let timeout: i32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("HANDSHAKE_TIMEOUT_MS"))
        .unwrap_or(1000);
    let mut config = TlsConfig::new();
    config
        .generate_self_signed(&["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("a certificate");
    let server = Arc::new(Server::new());
    server.set_config(&config).expect("set_config");
    server.set_handshake_timeout(timeout).unwrap();
    server.set_max_pending_connections(64).unwrap();
    server.set_listen_backlog_size(512).unwrap();
    let tally: Tally = Arc::default();
    for kind in [
        EventKind::ErrorOccurred,
        EventKind::AcceptError,
        EventKind::AlertSent,
    ] {
        let tally = tally.clone();
        server.set_callback(
            kind,
            Some(Arc::new(move |event: &sslserver::Event<'_>| {
                let what = match event.kind {
                    EventKind::AlertSent => format!("alert sent: {:?}", event.alert.map(|a| a.1)),
                    _ => format!("{:?}: {:?}", event.kind, event.socket_error),
                };
                count(&tally, what);
            })),
        );
    }
    server.listen(Some("127.0.0.1"), 0).expect("listen");
    let addr = server.local_addr().unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}").unwrap();
    writeln!(out, "-----CERTIFICATE FOLLOWS-----").unwrap();
    write!(out, "{}", config.certificate_chain_pem().unwrap()).unwrap();
    writeln!(out, "-----CERTIFICATE ENDS-----").unwrap();
    out.flush().unwrap();
    drop(out);

    let acceptor = {
        let server = server.clone();
        let tally = tally.clone();
        std::thread::spawn(move || loop {
            match server.wait_for_new_connection(Some(Duration::from_millis(500))) {
                WaitOutcome::Ready => {}
                WaitOutcome::TimedOut => continue,
                WaitOutcome::NotListening => return,
            }
            while let Some(conn) = server.next_pending_connection() {
                let tally = tally.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    let end = loop {
                        match conn.read(&mut buf) {
                            Ok(0) => break "echo: clean end".to_string(),
                            Ok(n) => {
                                if let Err(e) = conn.write(&buf[..n]) {
                                    break format!("echo: write failed: {:?}: {e}", e.kind());
                                }
                            }
                            Err(e) => break format!("echo: read ended: {:?}: {e}", e.kind()),
                        }
                    };
                    count(&tally, end);
                    conn.release();
                });
            }
        })
    };
    // Runs until standard input closes.
    for _ in std::io::stdin().lock().lines() {}
    server.close();
    acceptor.join().unwrap();
    let mut err = std::io::stderr().lock();
    for (what, n) in tally.lock().unwrap().iter() {
        let _ = writeln!(err, "{n:>8}  {what}");
    }
}
