//! Shared test helpers: a throwaway PKI, a server on an ephemeral port, an
//! event recorder and real TLS clients (rustls, openssl CLI).
#![allow(dead_code)]

pub mod descriptors;
pub mod ffi_support;
pub mod openssl_client;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use sslserver::{
    AlertLevel, AlertType, Event, EventKind, PeerVerifyMode, Server, SocketError, SslErrorCode,
    TlsConfig,
};

/// Generous bound for things that should happen "soon" on a loaded machine.
pub const SOON: Duration = Duration::from_secs(30);

/// A certificate and its key, as PEM and DER.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
}

impl Identity {
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }
}

/// A test certificate authority.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pub identity: Identity,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let identity = Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
        };
        TestCa {
            params,
            key,
            identity,
        }
    }

    fn issue_with(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        expired: bool,
    ) -> Identity {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
        }
    }

    pub fn server(&self) -> Identity {
        self.issue_with(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
        )
    }

    pub fn client(&self, name: &str) -> Identity {
        self.issue_with(&[name], ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    pub fn expired_client(&self, name: &str) -> Identity {
        self.issue_with(&[name], ExtendedKeyUsagePurpose::ClientAuth, true)
    }
}

/// A self-signed certificate (issuer == subject), untrusted by anyone.
pub fn self_signed(name: &str) -> Identity {
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Identity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().clone(),
    }
}

/// A server configuration with `identity` and the given verification.
pub fn server_config(identity: &Identity, mode: PeerVerifyMode, ca: Option<&TestCa>) -> TlsConfig {
    let mut config = TlsConfig::new();
    config
        .set_certificate_chain_pem(identity.cert_pem.as_bytes())
        .unwrap();
    config
        .set_private_key_pem(identity.key_pem.as_bytes(), None)
        .unwrap();
    config.set_peer_verify_mode(mode);
    if let Some(ca) = ca {
        config
            .add_ca_certificates_pem(ca.identity.cert_pem.as_bytes())
            .unwrap();
    }
    config
}

/// A fresh CA and a server configuration with its server certificate that
/// asks clients for nothing.
pub fn plain_config() -> (TestCa, TlsConfig) {
    let ca = TestCa::new("ca");
    let config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    (ca, config)
}

/// A started server on 127.0.0.1 with an ephemeral port.
pub struct TestServer {
    pub server: Arc<Server>,
    pub port: u16,
    pub events: Arc<Recorder>,
}

impl TestServer {
    pub fn start(config: &TlsConfig) -> Self {
        Self::start_with(config, |_| {}, |_| {})
    }

    /// `setup` runs before listening; `react` runs inside every callback.
    pub fn start_with(
        config: &TlsConfig,
        setup: impl FnOnce(&Server),
        react: impl Fn(&Event<'_>) + Send + Sync + 'static,
    ) -> Self {
        let server = Arc::new(Server::new());
        server.set_config(config).unwrap();
        let events = Recorder::attach(&server, react);
        setup(&server);
        server.listen(Some("127.0.0.1"), 0).unwrap();
        let port = server.local_addr().unwrap().port();
        TestServer {
            server,
            port,
            events,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn tcp(&self) -> TcpStream {
        TcpStream::connect(self.addr()).unwrap()
    }

    /// Waits for the next handshaken connection and takes it.
    pub fn accept_one(&self) -> Arc<sslserver::Connection> {
        assert_eq!(
            self.server.wait_for_new_connection(Some(SOON)),
            sslserver::WaitOutcome::Ready
        );
        self.server.next_pending_connection().unwrap()
    }
}

/// The kinds of `events`, in order.
pub fn kinds_of(events: &[Recorded]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

/// One event as the test sees it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub kind: EventKind,
    pub peer_port: Option<u16>,
    pub socket_error: SocketError,
    pub alert: Option<(AlertLevel, AlertType)>,
    pub ssl_errors: Vec<SslErrorCode>,
    pub description: String,
    pub at: Instant,
}

/// Records every event of a server, in order.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<Recorded>>,
    arrived: Condvar,
}

impl Recorder {
    pub fn attach(
        server: &Server,
        react: impl Fn(&Event<'_>) + Send + Sync + 'static,
    ) -> Arc<Self> {
        let recorder = Arc::new(Recorder::default());
        let react = Arc::new(react);
        for raw in 0..EventKind::COUNT as i32 {
            let kind = EventKind::from_raw(raw).unwrap();
            let (recorder, react) = (recorder.clone(), react.clone());
            server.set_callback(
                kind,
                Some(Arc::new(move |event: &Event<'_>| {
                    assert!(
                        !event.description.is_empty(),
                        "every event has a description"
                    );
                    recorder.push(Recorded {
                        kind: event.kind,
                        peer_port: event.connection.map(|c| c.peer_addr().port()),
                        socket_error: event.socket_error,
                        alert: event.alert,
                        ssl_errors: event.ssl_errors.iter().map(|e| e.code).collect(),
                        description: event.description.clone(),
                        at: Instant::now(),
                    });
                    react(event);
                })),
            );
        }
        recorder
    }

    fn push(&self, event: Recorded) {
        self.events.lock().unwrap().push(event);
        self.arrived.notify_all();
    }

    pub fn all(&self) -> Vec<Recorded> {
        self.events.lock().unwrap().clone()
    }

    pub fn of(&self, port: u16) -> Vec<Recorded> {
        self.all()
            .into_iter()
            .filter(|e| e.peer_port == Some(port))
            .collect()
    }

    /// Waits until `pred` holds for the recorded events, or panics after `SOON`.
    pub fn wait_until(&self, what: &str, pred: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
        let deadline = Instant::now() + SOON;
        let mut events = self.events.lock().unwrap();
        loop {
            if pred(&events) {
                return events.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; events: {:#?}",
                *events
            );
            events = self.arrived.wait_timeout(events, left).unwrap().0;
        }
    }

    /// Waits for the last event of the connection from `port` (PENDING or
    /// ERROR_OCCURRED) and returns its events.
    pub fn finished(&self, port: u16) -> Vec<Recorded> {
        self.wait_until(&format!("the end of connection :{port}"), |events| {
            events.iter().any(|e| {
                e.peer_port == Some(port)
                    && matches!(
                        e.kind,
                        EventKind::PendingConnectionAvailable | EventKind::ErrorOccurred
                    )
            })
        });
        self.of(port)
    }

    pub fn kinds(&self, port: u16) -> Vec<EventKind> {
        kinds_of(&self.finished(port))
    }
}

/// A rustls client config trusting `ca`, with an optional client identity.
pub fn client_config(
    ca: &CertificateDer<'static>,
    identity: Option<&Identity>,
    alpn: &[&str],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(vec![id.cert_der.clone()], id.key_der())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

pub type Client = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake (client side); Err on TLS failure.
pub fn connect(port: u16, config: Arc<ClientConfig>) -> Result<Client, std::io::Error> {
    connect_to(("127.0.0.1", port), config)
}

/// As [`connect`], to any address.
pub fn connect_to(
    addr: impl std::net::ToSocketAddrs,
    config: Arc<ClientConfig>,
) -> Result<Client, std::io::Error> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(SOON))?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    // TLS 1.3: the server learns of a rejected client certificate only after
    // the client's flight; a read surfaces the server's alert, if any.
    Ok(stream)
}

/// As [`connect`], also returning the client's port, which identifies the
/// connection in the server's events whether or not the handshake succeeded.
pub fn connect_from_port(
    port: u16,
    config: Arc<ClientConfig>,
) -> (u16, Result<Client, std::io::Error>) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let local = tcp.local_addr().unwrap().port();
    tcp.set_read_timeout(Some(SOON)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            return (local, Err(e));
        }
    }
    (local, Ok(stream))
}

/// The local (client-side) port of a client.
pub fn port_of(client: &Client) -> u16 {
    client.sock.local_addr().unwrap().port()
}

/// Writes `data` and reads back as many bytes.
pub fn echo_roundtrip(client: &mut Client, data: &[u8]) -> Vec<u8> {
    client.write_all(data).unwrap();
    let mut back = vec![0u8; data.len()];
    client.read_exact(&mut back).unwrap();
    back
}

/// Serves one connection from the queue: echoes until the peer closes.
pub fn spawn_echo(server: &Arc<Server>) -> std::thread::JoinHandle<()> {
    let server = server.clone();
    std::thread::spawn(move || {
        assert_eq!(
            server.wait_for_new_connection(Some(SOON)),
            sslserver::WaitOutcome::Ready
        );
        let conn = server.next_pending_connection().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 || conn.write(&buf[..n]).is_err() {
                break;
            }
        }
        conn.release();
    })
}

/// Reads until EOF or error within `SOON`; true if the server closed.
pub fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(SOON)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A ClientHello as a rustls client would send it.
pub fn client_hello() -> Vec<u8> {
    let ca = self_signed("unused");
    let config = client_config(&ca.cert_der, None, &[]);
    let mut conn =
        ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// Writes PEM text to a fresh temporary file and returns its path.
pub fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sslserver-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// What `openssl req -x509 -subj /CN=<cn>` makes: self-signed, CA:TRUE, no
/// subject alternative names (the most common hand-made test certificate).
pub fn openssl_req_x509(cn: &str) -> Identity {
    use rustls::pki_types::pem::PemObject;
    let dir = temp_file("req-marker", b"").parent().unwrap().to_path_buf();
    let unique = format!(
        "{cn}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let (key, cert) = (
        dir.join(format!("{unique}.key")),
        dir.join(format!("{unique}.pem")),
    );
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", &format!("/CN={cn}"), "-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl CLI is installed");
    assert!(status.success());
    Identity {
        cert_pem: std::fs::read_to_string(&cert).unwrap(),
        key_pem: std::fs::read_to_string(&key).unwrap(),
        cert_der: CertificateDer::from_pem_file(&cert).unwrap(),
    }
}

// ---------------------------------------------------------------------------
// Helpers for the hostile-client, descriptor-exhaustion and C API misuse
// tests (tests/hostile.rs, tests/garbage.rs, tests/descriptor_exhaustion.rs,
// tests/c_api_misuse.rs).

/// The library's threads in this process, as (tid, name): those whose name
/// starts with `sslserver-` (the kernel keeps 15 bytes of a thread's name,
/// so the accept thread is `sslserver-accep`).
pub fn library_threads() -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return found;
    };
    for task in tasks.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread may end between the listing and the read.
        if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
            let name = name.trim_end().to_string();
            if name.starts_with("sslserver-") {
                found.push((tid, name));
            }
        }
    }
    found
}

/// How many threads the process has.
pub fn process_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// How many descriptors the process has open.
pub fn open_fds() -> usize {
    // read_dir itself holds one descriptor while listing.
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0)
}

/// User + system CPU time of one of this process's threads, in clock ticks
/// (fields 14 and 15 of /proc/self/task/TID/stat); None once it has ended.
pub fn thread_cpu_ticks(tid: u32) -> Option<u64> {
    ThreadStat::open(tid)?.ticks()
}

/// An open /proc/self/task/TID/stat, re-read in place: it keeps working
/// when the descriptor table is full.
pub struct ThreadStat(std::fs::File);

impl ThreadStat {
    pub fn open(tid: u32) -> Option<ThreadStat> {
        std::fs::File::open(format!("/proc/self/task/{tid}/stat"))
            .ok()
            .map(ThreadStat)
    }

    /// User + system CPU time so far, in clock ticks.
    pub fn ticks(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 1024];
        let n = self.0.read_at(&mut buf, 0).ok()?;
        let stat = std::str::from_utf8(&buf[..n]).ok()?;
        // The name (field 2) is in parentheses and may hold spaces: split after it.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3, so fields 14 and 15 are at indices 11 and 12.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    }
}

/// Clock ticks per second for [`thread_cpu_ticks`].
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Polls `check` every 20 ms until it returns true or `within` passes;
/// returns how long it took, or None on timeout. For conditions no event
/// signals (thread and descriptor counts), instead of fixed sleeps.
pub fn poll_until(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if check() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Closes a connection with a TCP reset (SO_LINGER 0) instead of a FIN.
pub fn close_with_reset(stream: TcpStream) {
    let socket = socket2::Socket::from(stream);
    let _ = socket.set_linger(Some(Duration::ZERO));
    drop(socket);
}

/// A small deterministic PRNG (xorshift64*), so random inputs can be replayed
/// from the seed printed by a failing test.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// One TLS record as seen on the wire (unencrypted view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireRecord {
    pub content_type: u8,
    pub version: u16,
    pub payload: Vec<u8>,
}

/// Splits bytes into TLS records; a trailing partial record is left out.
pub fn tls_records(mut bytes: &[u8]) -> Vec<WireRecord> {
    let mut records = Vec::new();
    while bytes.len() >= 5 {
        let len = u16::from_be_bytes([bytes[3], bytes[4]]) as usize;
        if bytes.len() < 5 + len {
            break;
        }
        records.push(WireRecord {
            content_type: bytes[0],
            version: u16::from_be_bytes([bytes[1], bytes[2]]),
            payload: bytes[5..5 + len].to_vec(),
        });
        bytes = &bytes[5 + len..];
    }
    records
}

/// The first plaintext alert record in `bytes`, as (level, description).
pub fn first_plaintext_alert(bytes: &[u8]) -> Option<(u8, u8)> {
    tls_records(bytes)
        .into_iter()
        .find(|r| r.content_type == 0x15 && r.payload.len() == 2)
        .map(|r| (r.payload[0], r.payload[1]))
}

/// Re-frames TLS handshake records so each new record carries at most
/// `size` bytes of the handshake messages: a legal fragmentation
/// (RFC 8446 section 5.1) that a server must reassemble.
pub fn fragment_handshake_records(flight: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for record in tls_records(flight) {
        if record.content_type != 0x16 {
            out.extend_from_slice(&[record.content_type]);
            out.extend_from_slice(&record.version.to_be_bytes());
            out.extend_from_slice(&(record.payload.len() as u16).to_be_bytes());
            out.extend_from_slice(&record.payload);
            continue;
        }
        for chunk in record.payload.chunks(size) {
            out.push(0x16);
            out.extend_from_slice(&record.version.to_be_bytes());
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
    }
    out
}

/// A ClientHello record as an old client sends it: `version` in the record
/// and the hello (0x0300 = SSLv3, 0x0301 = TLS 1.0), no supported_versions
/// extension, pre-TLS 1.2 RSA/CBC cipher suites only; with or without a
/// signature_algorithms extension (old clients send none).
pub fn legacy_client_hello(version: u16, signature_algorithms: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    body.push(0); // session id
    let suites: [u16; 3] = [0x002f, 0x0035, 0x000a];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    if signature_algorithms {
        let schemes: [u16; 3] = [0x0401, 0x0403, 0x0804];
        let mut ext = Vec::new();
        ext.extend_from_slice(&0x000du16.to_be_bytes());
        ext.extend_from_slice(&((schemes.len() * 2 + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&((schemes.len() * 2) as u16).to_be_bytes());
        for scheme in schemes {
            ext.extend_from_slice(&scheme.to_be_bytes());
        }
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
    }
    let mut message = vec![0x01];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    let mut record = vec![0x16];
    record.extend_from_slice(&version.to_be_bytes());
    record.extend_from_slice(&(message.len() as u16).to_be_bytes());
    record.extend_from_slice(&message);
    record
}

/// Sends `bytes` on a fresh connection to `port`, optionally half-closes,
/// and reads whatever the server answers until it closes (or `SOON`
/// passes). Returns (client port, the reply, whether the server closed,
/// how long the server took to close after the last byte was sent).
pub fn send_raw(port: u16, bytes: &[u8], half_close: bool) -> (u16, Vec<u8>, bool, Duration) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client_port = tcp.local_addr().unwrap().port();
    // The server may close before it read everything: a failed write is fine.
    let _ = tcp.write_all(bytes);
    if half_close {
        let _ = tcp.shutdown(std::net::Shutdown::Write);
    }
    let sent = Instant::now();
    tcp.set_read_timeout(Some(SOON)).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tcp.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break false,
        }
    };
    (client_port, reply, closed, sent.elapsed())
}

/// A rustls client presenting `chain` with the given protocol versions,
/// accepting any server (the server's certificate is not what the tests
/// using it are about). Its sessions resume.
pub fn client_presenting(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_protocol_versions(versions)
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
            .with_client_auth_cert(chain.to_vec(), key.clone_key())
            .unwrap(),
    )
}

#[derive(Debug)]
pub struct AcceptAnyServer;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Drops `keep` on a helper thread (for servers: a close from outside any
/// callback) and fails if that takes longer than `bound`, so a hang fails
/// the test instead of hanging it.
pub fn drop_within<T: Send + 'static>(keep: T, bound: Duration, what: &str) {
    let (dropped, dropped_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(keep);
        let _ = dropped.send(());
    });
    assert!(
        dropped_rx.recv_timeout(bound).is_ok(),
        "{what}: the final close hangs"
    );
}
