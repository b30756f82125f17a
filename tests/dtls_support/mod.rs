//! Shared helpers of the DTLS tests: an event recorder, a server on an
//! ephemeral port that answers every datagram with "to PEER: ACK",
//! `openssl s_client -dtls1_2` as an independent client, hand-made
//! ClientHellos, and a relay that stands between a client and the server so
//! a test can drop, replay and inject datagrams from the client's own
//! address and port.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sslserver::dtls::{DtlsEvent, DtlsEventKind, DtlsServer};

/// Generous bound for things that should happen "soon" on a loaded machine.
pub const SOON: Duration = Duration::from_secs(15);
pub const KEY_HEX: &str = "1a2b3c4d5e6f";
pub const KEY: [u8; 6] = [0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f];

/// Collects events and lets a test wait for one.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<DtlsEvent>>,
    changed: Condvar,
}

impl Recorder {
    pub fn push(&self, event: &DtlsEvent) {
        self.events.lock().unwrap().push(event.clone());
        self.changed.notify_all();
    }

    /// The first event (in order) that satisfies `pred`, waiting up to SOON.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&DtlsEvent) -> bool) -> DtlsEvent {
        let deadline = Instant::now() + SOON;
        let mut events = self.events.lock().unwrap();
        loop {
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            let now = Instant::now();
            assert!(now < deadline, "no {what} event; got {:#?}", *events);
            events = self.changed.wait_timeout(events, deadline - now).unwrap().0;
        }
    }

    pub fn all(&self) -> Vec<DtlsEvent> {
        self.events.lock().unwrap().clone()
    }
}

pub fn key_for(identity: &[u8]) -> Option<Vec<u8>> {
    match identity {
        b"mallory" => None,
        _ => Some(KEY.to_vec()),
    }
}

/// A listening server on 127.0.0.1 that records every event and answers
/// each datagram with "to PEER: ACK", as the example does.
pub fn server_with(configure: impl FnOnce(&DtlsServer)) -> (Arc<DtlsServer>, Arc<Recorder>) {
    recording_server(true, configure)
}

/// As `server_with`; with `psk` false the server gets no PSK callback and
/// no identity hint (`configure` must then set a certificate).
pub fn recording_server(
    psk: bool,
    configure: impl FnOnce(&DtlsServer),
) -> (Arc<DtlsServer>, Arc<Recorder>) {
    let server = Arc::new(DtlsServer::new());
    let recorder = Arc::new(Recorder::default());
    if psk {
        server.set_psk_callback(Some(Arc::new(key_for)));
        server.set_identity_hint(b"test hint").unwrap();
    }
    for kind in [
        DtlsEventKind::HandshakeStarted,
        DtlsEventKind::HandshakeComplete,
        DtlsEventKind::PeerClosed,
        DtlsEventKind::Error,
    ] {
        let r = recorder.clone();
        server.set_callback(kind, Some(Arc::new(move |e: &DtlsEvent| r.push(e))));
    }
    let r = recorder.clone();
    let weak = Arc::downgrade(&server);
    server.set_callback(
        DtlsEventKind::DatagramReceived,
        Some(Arc::new(move |e: &DtlsEvent| {
            r.push(e);
            let peer = e.peer.unwrap();
            if let Some(server) = weak.upgrade() {
                let reply = format!("to {}:{}: ACK", peer.ip(), peer.port());
                server.write(peer, reply.as_bytes()).unwrap();
            }
        })),
    );
    configure(&server);
    server.listen(Some("127.0.0.1"), 0).unwrap();
    (server, recorder)
}

pub fn server() -> (Arc<DtlsServer>, Arc<Recorder>) {
    server_with(|_| {})
}

pub fn port(server: &DtlsServer) -> u16 {
    server.local_addr().unwrap().port()
}

/// `openssl s_client -dtls1_2 -psk ...` with its output (stdout and stderr)
/// on a channel. The server's replies carry no newline, so output is
/// searched as text, not line by line.
pub struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    chunks: Receiver<String>,
    pub output: String,
}

impl Client {
    pub fn start(port: u16, key_hex: &str, identity: &str) -> Client {
        Client::start_with(port, &["-psk", key_hex, "-psk_identity", identity])
    }

    /// `s_client -dtls1_2 -connect 127.0.0.1:PORT -trace` with `args`.
    pub fn start_with(port: u16, args: &[&str]) -> Client {
        let mut child = Command::new("openssl")
            .args(["s_client", "-dtls1_2", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .arg("-trace")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the openssl CLI is installed");
        let (tx, chunks) = channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for mut stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0
                        || tx
                            .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Client {
            child,
            stdin,
            chunks,
            output: String::new(),
        }
    }

    /// Waits until the output contains `text`; returns the line around it.
    pub fn wait_line(&mut self, text: &str) -> String {
        let deadline = Instant::now() + SOON;
        loop {
            if let Some(at) = self.output.find(text) {
                let start = self.output[..at].rfind('\n').map_or(0, |i| i + 1);
                let end = self.output[at..]
                    .find('\n')
                    .map_or(self.output.len(), |i| at + i);
                return self.output[start..end].to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.output.push_str(&chunk),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "s_client never printed {text:?}; it printed:\n{}",
                        self.output
                    )
                }
            }
        }
    }

    /// Waits until the output contains `text` at least `n` times.
    pub fn wait_count(&mut self, text: &str, n: usize) {
        let deadline = Instant::now() + SOON;
        while self.output.matches(text).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.output.push_str(&chunk),
                Err(_) => panic!(
                    "s_client printed {text:?} fewer than {n} times:\n{}",
                    self.output
                ),
            }
        }
    }

    pub fn saw(&mut self, text: &str) -> bool {
        while let Ok(chunk) = self.chunks.try_recv() {
            self.output.push_str(&chunk);
        }
        self.output.contains(text)
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// End of input: s_client sends close_notify and exits.
    pub fn close_input(&mut self) {
        self.stdin.take();
    }

    /// Waits for the process to end and its output to be read; its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + SOON;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The readers end at EOF, which closes the channel.
                while let Ok(chunk) = self.chunks.recv_timeout(SOON) {
                    self.output.push_str(&chunk);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "s_client did not exit:\n{}",
                self.output
            );
            if let Ok(chunk) = self.chunks.recv_timeout(Duration::from_millis(50)) {
                self.output.push_str(&chunk);
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `cond` holds, polling a counter the server updates before it
/// sends what the test already saw, so this returns at once in practice.
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + SOON;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

// ------------------------------------------------------------ raw datagrams

mod client_hello;
// Each test binary uses its own subset (as with `dead_code` above).
#[allow(unused_imports)]
pub use client_hello::{client_hello, handshake_type, hello_verify_cookie};

pub fn raw_socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(SOON)).unwrap();
    socket
}

/// Receives a HelloVerifyRequest and returns its cookie.
pub fn receive_cookie(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).expect("a HelloVerifyRequest");
    let datagram = &buf[..n];
    hello_verify_cookie(datagram)
        .unwrap_or_else(|| panic!("HelloVerifyRequest: {datagram:02x?}"))
        .to_vec()
}

pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

// ------------------------------------------------------------ the relay

/// What the relay does with a client datagram that carries a
/// ChangeCipherSpec (the client's last flight).
#[derive(Default)]
struct RelayState {
    /// The client's address (it sent the first datagram).
    client: Option<SocketAddr>,
    /// Every datagram the client sent, in order.
    from_client: Vec<Vec<u8>>,
    /// Server datagrams that start with a ServerHello to drop (retransmission).
    drop_server_hellos: usize,
    /// Server datagrams that carry a ChangeCipherSpec (its last flight) to
    /// drop.
    drop_server_finished: usize,
    /// Datagrams to send between the client's ChangeCipherSpec and the rest
    /// of its flight, as if they came from the client.
    between_ccs_and_finished: Vec<Vec<u8>>,
    /// Datagrams sent to the server from the client's address, by the
    /// relay and by `inject`.
    injected: usize,
}

/// A UDP relay between a client and the server: the server sees one address
/// and port (the relay's), so whatever a test injects through it comes from
/// the client's own address and port, as a spoofer on the path would send.
pub struct Relay {
    /// Where the client connects.
    pub port: u16,
    upstream: Arc<UdpSocket>,
    server: SocketAddr,
    state: Arc<Mutex<RelayState>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Relay {
    pub fn start(server: SocketAddr) -> Relay {
        use std::sync::atomic::{AtomicBool, Ordering};
        let downstream = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let upstream = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        // The loops look at `stop` this often; the timeout bounds the wait
        // for shutdown, it orders nothing.
        let tick = Some(Duration::from_millis(50));
        downstream.set_read_timeout(tick).unwrap();
        upstream.set_read_timeout(tick).unwrap();
        let port = downstream.local_addr().unwrap().port();
        let state: Arc<Mutex<RelayState>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (down, up, state, stop) = (
                downstream.clone(),
                upstream.clone(),
                state.clone(),
                stop.clone(),
            );
            threads.push(thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = down.recv_from(&mut buf) else {
                        continue;
                    };
                    let datagram = buf[..n].to_vec();
                    let mut st = state.lock().unwrap();
                    st.client = Some(from);
                    st.from_client.push(datagram.clone());
                    let records = records(&datagram);
                    let ccs = records.iter().position(|r| r[0] == 20);
                    match ccs {
                        Some(at) if !st.between_ccs_and_finished.is_empty() => {
                            // The flight record by record, the injected
                            // datagrams right after the ChangeCipherSpec.
                            let junk = std::mem::take(&mut st.between_ccs_and_finished);
                            for record in &records[..=at] {
                                up.send_to(record, server).unwrap();
                            }
                            for datagram in &junk {
                                // Empty stands for a replay of the
                                // client's previous datagram.
                                let datagram = if datagram.is_empty() {
                                    let n = st.from_client.len();
                                    st.from_client[n.saturating_sub(2)].clone()
                                } else {
                                    datagram.clone()
                                };
                                up.send_to(&datagram, server).unwrap();
                                st.injected += 1;
                            }
                            let rest: Vec<u8> = records[at + 1..].concat();
                            if !rest.is_empty() {
                                up.send_to(&rest, server).unwrap();
                            }
                        }
                        _ => {
                            up.send_to(&datagram, server).unwrap();
                        }
                    }
                }
            }));
        }
        {
            let (down, up, state, stop) =
                (downstream, upstream.clone(), state.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, _)) = up.recv_from(&mut buf) else {
                        continue;
                    };
                    let mut st = state.lock().unwrap();
                    if handshake_type(&buf[..n]) == Some(2) && st.drop_server_hellos > 0 {
                        st.drop_server_hellos -= 1;
                        continue;
                    }
                    let ccs = records(&buf[..n]).iter().any(|r| r[0] == 20);
                    if ccs && st.drop_server_finished > 0 {
                        st.drop_server_finished -= 1;
                        continue;
                    }
                    if let Some(client) = st.client {
                        down.send_to(&buf[..n], client).unwrap();
                    }
                }
            }));
        }
        Relay {
            port,
            upstream,
            server,
            state,
            stop,
            threads,
        }
    }

    /// Sends `datagram` to the server from the client's address and port.
    pub fn inject(&self, datagram: &[u8]) {
        self.upstream.send_to(datagram, self.server).unwrap();
        self.state.lock().unwrap().injected += 1;
    }

    /// Every datagram the client has sent so far.
    pub fn client_datagrams(&self) -> Vec<Vec<u8>> {
        self.state.lock().unwrap().from_client.clone()
    }

    /// Drops the server's next `n` datagrams that start with a ServerHello.
    pub fn drop_server_hellos(&self, n: usize) {
        self.state.lock().unwrap().drop_server_hellos = n;
    }

    /// Drops the server's next `n` datagrams that carry a ChangeCipherSpec
    /// (its last flight: the client repeats its own).
    pub fn drop_server_finished(&self, n: usize) {
        self.state.lock().unwrap().drop_server_finished = n;
    }

    /// Whether every last flight the test asked to drop was dropped.
    pub fn dropped_all_server_finished(&self) -> bool {
        self.state.lock().unwrap().drop_server_finished == 0
    }

    /// Whether every ServerHello the test asked to drop was dropped.
    pub fn dropped_all_server_hellos(&self) -> bool {
        self.state.lock().unwrap().drop_server_hellos == 0
    }

    /// Splits the client's flight that carries its ChangeCipherSpec after
    /// that record and sends `datagrams` in between, from the client's
    /// address: the server then has the new keys but not yet the Finished.
    /// An empty datagram stands for a replay of the client's previous one.
    pub fn inject_after_change_cipher_spec(&self, datagrams: Vec<Vec<u8>>) {
        self.state.lock().unwrap().between_ccs_and_finished = datagrams;
    }

    /// Whether the datagrams for `inject_after_change_cipher_spec` went out.
    pub fn injected_after_change_cipher_spec(&self) -> bool {
        self.state
            .lock()
            .unwrap()
            .between_ccs_and_finished
            .is_empty()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The records of a datagram (as far as their framing holds).
pub fn records(datagram: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 13 {
        let len = 13 + usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        if len > rest.len() {
            break;
        }
        out.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    out
}

/// A DTLS 1.2 record with the given header fields and body.
pub fn record(content_type: u8, epoch: u16, sequence: u64, body: &[u8]) -> Vec<u8> {
    let mut out = vec![content_type, 0xfe, 0xfd];
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes()[2..]);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Datagrams that do not authenticate, as an off-path attacker who knows
/// the client's address and port can send them (no keys): one byte, broken
/// record headers, an epoch-1 record with a bad tag, records of epochs the
/// session is not in, and a plaintext application-data record.
pub fn forged_datagrams() -> Vec<(&'static str, Vec<u8>)> {
    let junk: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let mut overlong = record(23, 1, 7, &junk);
    overlong[11] = 0x40; // says 16 KiB follow
    vec![
        ("one byte", vec![0x17]),
        ("a bare header", record(23, 1, 5, &[])[..13].to_vec()),
        (
            "a header with an unknown content type",
            record(99, 1, 6, &junk),
        ),
        ("a header longer than the datagram", overlong),
        ("a header with a wrong version", {
            let mut r = record(23, 1, 8, &junk);
            r[1] = 0x03;
            r[2] = 0x03;
            r
        }),
        ("an epoch-1 record with a bad tag", record(23, 1, 9, &junk)),
        (
            "an epoch-1 handshake record with a bad tag",
            record(22, 1, 10, &junk),
        ),
        ("an epoch-1 alert with a bad tag", record(21, 1, 11, &junk)),
        ("an epoch-2 record", record(23, 2, 1, &junk)),
        // The engine would take it for a change to epoch 2 and then drop
        // every genuine epoch-1 record.
        ("an epoch-1 ChangeCipherSpec", record(20, 1, 13, &[1])),
        (
            "a plaintext application-data record",
            record(23, 0, 40, b"hello"),
        ),
        ("a bad record after a good-looking one", {
            let mut d = record(23, 1, 12, &junk);
            d.push(0x16);
            d
        }),
    ]
}
