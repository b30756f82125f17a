//! Trust decisions: every problem of a certificate is reported (issuer
//! errors first), and a connection proceeds only when every reported error
//! is ignored. One matrix for each side: the library's server judging
//! client certificates, and the library's client judging a server's.
//!
//! leaf {valid, expired, not yet valid, wrong purpose, wrong name}
//! x issuer {trusted CA, self-signed, unknown CA, intermediate missing}
//! x ignore list {none, each single reported code, all reported codes,
//!                all bound to another certificate, all bound to this one}

mod common;

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, StreamOwned};
use sslserver::{connect_encrypted, EventKind, PeerVerifyMode, SslErrorCode, TlsConfig};

use SslErrorCode as E;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Leaf {
    Valid,
    Expired,
    NotYetValid,
    WrongPurpose,
    WrongName,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum IssuedBy {
    TrustedCa,
    Itself,
    UnknownCa,
    MissingIntermediate,
}

const LEAVES: [Leaf; 5] = [
    Leaf::Valid,
    Leaf::Expired,
    Leaf::NotYetValid,
    Leaf::WrongPurpose,
    Leaf::WrongName,
];
const ISSUERS: [IssuedBy; 4] = [
    IssuedBy::TrustedCa,
    IssuedBy::Itself,
    IssuedBy::UnknownCa,
    IssuedBy::MissingIntermediate,
];

/// Which end the certificate belongs to: it decides the purpose a leaf
/// needs, and whether its name is checked (only a client checks names).
#[derive(Clone, Copy, PartialEq)]
enum End {
    Server,
    Client,
}

struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Authority {
    fn root(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Authority { params, key, pem }
    }

    fn intermediate(name: &str, parent: &Authority) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&parent.params, &parent.key);
        let pem = params.signed_by(&key, &issuer).unwrap().pem();
        Authority { params, key, pem }
    }
}

struct Pki {
    trusted: Authority,
    unknown: Authority,
    intermediate: Authority,
}

impl Pki {
    fn new() -> Self {
        let trusted = Authority::root("Trusted Root");
        let intermediate = Authority::intermediate("Trusted Intermediate", &trusted);
        Pki {
            unknown: Authority::root("Unknown Root"),
            trusted,
            intermediate,
        }
    }

    /// A leaf for `end` with the given defect, issued as asked: its chain
    /// as the peer presents it (the leaf alone), and its key.
    fn leaf(
        &self,
        end: End,
        leaf: Leaf,
        issued_by: IssuedBy,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let name = if leaf == Leaf::WrongName {
            "wrong.example"
        } else {
            "localhost"
        };
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let right = match end {
            End::Server => ExtendedKeyUsagePurpose::ServerAuth,
            End::Client => ExtendedKeyUsagePurpose::ClientAuth,
        };
        let wrong = match end {
            End::Server => ExtendedKeyUsagePurpose::ClientAuth,
            End::Client => ExtendedKeyUsagePurpose::ServerAuth,
        };
        params.extended_key_usages = vec![if leaf == Leaf::WrongPurpose {
            wrong
        } else {
            right
        }];
        match leaf {
            Leaf::Expired => {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            }
            Leaf::NotYetValid => {
                params.not_before = rcgen::date_time_ymd(2090, 1, 1);
                params.not_after = rcgen::date_time_ymd(2091, 1, 1);
            }
            _ => {}
        }
        let key = KeyPair::generate().unwrap();
        let cert = match issued_by {
            IssuedBy::Itself => params.self_signed(&key).unwrap(),
            IssuedBy::TrustedCa => params
                .signed_by(
                    &key,
                    &Issuer::from_params(&self.trusted.params, &self.trusted.key),
                )
                .unwrap(),
            IssuedBy::UnknownCa => params
                .signed_by(
                    &key,
                    &Issuer::from_params(&self.unknown.params, &self.unknown.key),
                )
                .unwrap(),
            IssuedBy::MissingIntermediate => params
                .signed_by(
                    &key,
                    &Issuer::from_params(&self.intermediate.params, &self.intermediate.key),
                )
                .unwrap(),
        };
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        (vec![cert.der().clone()], key)
    }
}

/// What the library must report for a leaf: the issuer error first (iff
/// the chain is untrusted), then the leaf's own problems in any order.
fn expected_errors(end: End, leaf: Leaf, issued_by: IssuedBy) -> (Option<E>, Vec<E>) {
    let issuer = match issued_by {
        IssuedBy::TrustedCa => None,
        IssuedBy::Itself => Some(E::SelfSignedCertificate),
        IssuedBy::UnknownCa | IssuedBy::MissingIntermediate => {
            Some(E::UnableToGetLocalIssuerCertificate)
        }
    };
    let own = match leaf {
        Leaf::Valid => vec![],
        Leaf::Expired => vec![E::CertificateExpired],
        Leaf::NotYetValid => vec![E::CertificateNotYetValid],
        Leaf::WrongPurpose => vec![E::InvalidPurpose],
        // Only a client checks the name it expects.
        Leaf::WrongName if end == End::Server => vec![E::HostNameMismatch],
        Leaf::WrongName => vec![],
    };
    (issuer, own)
}

/// The ignore lists of one cell: (label, ignores, whether they cover
/// every reported error). `None` as certificate: any certificate.
type IgnoreCase = (String, Vec<(E, Option<Vec<u8>>)>, bool);

fn ignore_cases(reported: &[E], leaf: &CertificateDer<'_>, other: &[u8]) -> Vec<IgnoreCase> {
    let mut cases: Vec<IgnoreCase> = vec![("none".into(), vec![], reported.is_empty())];
    for &code in reported {
        cases.push((
            format!("only {code:?}"),
            vec![(code, None)],
            reported.len() == 1,
        ));
    }
    if !reported.is_empty() {
        cases.push((
            "all reported".into(),
            reported.iter().map(|&c| (c, None)).collect(),
            true,
        ));
        cases.push((
            "all, bound to another certificate".into(),
            reported
                .iter()
                .map(|&c| (c, Some(other.to_vec())))
                .collect(),
            false,
        ));
        cases.push((
            "all, bound to this certificate".into(),
            reported
                .iter()
                .map(|&c| (c, Some(leaf.as_ref().to_vec())))
                .collect(),
            true,
        ));
    }
    cases
}

fn apply_ignores(config: &mut TlsConfig, ignores: &[(E, Option<Vec<u8>>)]) {
    for (code, cert) in ignores {
        config.add_ignored_ssl_error(*code, cert.as_deref());
    }
}

/// Checks a reported error list against the expectation of its cell.
fn check_reported(cell: &str, reported: &[E], expected: &(Option<E>, Vec<E>)) {
    let (issuer, own) = expected;
    let mut want: Vec<E> = issuer.iter().copied().chain(own.iter().copied()).collect();
    if let Some(issuer) = issuer {
        assert_eq!(
            reported.first(),
            Some(issuer),
            "{cell}: the issuer error comes first, got {reported:?}"
        );
    }
    let mut got = reported.to_vec();
    got.sort_by_key(|c| *c as i32);
    want.sort_by_key(|c| *c as i32);
    assert_eq!(got, want, "{cell}: reported {reported:?}");
}

#[test]
fn server_side_matrix_reports_every_error_and_proceeds_only_when_all_are_ignored() {
    let pki = Pki::new();
    let server_identity = TestCa::new("server ca").server();
    let other = self_signed("someone else").cert_der;
    let mut cells = 0;
    for leaf in LEAVES {
        for issued_by in ISSUERS {
            let (chain, key) = pki.leaf(End::Client, leaf, issued_by);
            let expected = expected_errors(End::Client, leaf, issued_by);
            let reported: Vec<E> = expected.0.iter().chain(&expected.1).copied().collect();
            for (label, ignores, proceeds) in ignore_cases(&reported, &chain[0], &other) {
                let cell = format!("client certificate {leaf:?}, {issued_by:?}, ignoring {label}");
                let mut config = server_config(&server_identity, PeerVerifyMode::VerifyPeer, None);
                config
                    .add_ca_certificates_pem(pki.trusted.pem.as_bytes())
                    .unwrap();
                apply_ignores(&mut config, &ignores);
                let server = TestServer::start(&config);
                let client = client_presenting(&chain, &key, rustls::ALL_VERSIONS);
                let port = match connect(server.port, client) {
                    Ok(stream) => port_of(&stream),
                    Err(e) => panic!("{cell}: the client's side of the handshake failed: {e}"),
                };
                let events = server.events.finished(port);
                let errors_event: Vec<E> = events
                    .iter()
                    .find(|e| e.kind == EventKind::SslErrors)
                    .map(|e| e.ssl_errors.clone())
                    .unwrap_or_default();
                check_reported(&cell, &errors_event, &expected);
                let last = events.last().unwrap().kind;
                if proceeds {
                    assert_eq!(last, EventKind::PendingConnectionAvailable, "{cell}");
                    let socket = server.accept_one();
                    check_reported(&cell, &socket.ssl_handshake_errors(), &expected);
                    assert_eq!(socket.peer_certificate_chain(), &chain[..], "{cell}");
                } else {
                    assert_eq!(last, EventKind::ErrorOccurred, "{cell}: {events:#?}");
                }
                cells += 1;
            }
        }
    }
    assert!(cells >= 80, "{cells} cells");
}

#[test]
fn client_side_matrix_reports_every_error_and_proceeds_only_when_all_are_ignored() {
    let pki = Pki::new();
    let other = self_signed("someone else").cert_der;
    let mut cells = 0;
    for leaf in LEAVES {
        for issued_by in ISSUERS {
            let (chain, key) = pki.leaf(End::Server, leaf, issued_by);
            let expected = expected_errors(End::Server, leaf, issued_by);
            let reported: Vec<E> = expected.0.iter().chain(&expected.1).copied().collect();
            let cases = ignore_cases(&reported, &chain[0], &other);
            let server = RustlsServer::start(chain.clone(), key, cases.len());
            for (label, ignores, proceeds) in cases {
                let cell = format!("server certificate {leaf:?}, {issued_by:?}, ignoring {label}");
                let mut config = TlsConfig::new();
                config
                    .add_ca_certificates_pem(pki.trusted.pem.as_bytes())
                    .unwrap();
                apply_ignores(&mut config, &ignores);
                let asked: Arc<Mutex<Vec<E>>> = Arc::default();
                let record = asked.clone();
                config.set_ssl_errors_callback(Some(Arc::new(move |errors| {
                    *record.lock().unwrap() = errors.iter().map(|e| e.code).collect();
                    false
                })));
                match connect_encrypted(
                    "127.0.0.1",
                    server.port,
                    &config,
                    Some("localhost"),
                    10_000,
                ) {
                    Ok(conn) => {
                        assert!(
                            proceeds,
                            "{cell}: connected despite {:?}",
                            conn.ssl_handshake_errors()
                        );
                        check_reported(&cell, &conn.ssl_handshake_errors(), &expected);
                        conn.abort();
                    }
                    Err(err) => {
                        assert!(!proceeds, "{cell}: refused: {}", err.message());
                        check_reported(&cell, &asked.lock().unwrap(), &expected);
                    }
                }
                cells += 1;
            }
            server.join();
        }
    }
    assert!(cells >= 80, "{cells} cells");
}

/// Ignoring only expiry never accepts an expired certificate that is also
/// untrusted: the report of the issue, with the shipped client's settings.
#[test]
fn ignoring_expiry_does_not_accept_an_expired_self_signed_certificate() {
    let pki = Pki::new();
    let (chain, key) = pki.leaf(End::Server, Leaf::Expired, IssuedBy::Itself);
    let server = RustlsServer::start(chain, key, 1);
    let mut config = TlsConfig::new();
    config.set_ignored_ssl_errors(&[E::CertificateExpired]);
    let err = connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000)
        .expect_err("an untrusted certificate is refused");
    assert!(
        err.message().contains("SelfSignedCertificate (9)")
            && err.message().contains("CertificateExpired (6)"),
        "{}",
        err.message()
    );
    server.join();
}

/// An intermediate that expired is reported with that certificate, on a
/// chain that is otherwise trusted (no issuer error).
#[test]
fn an_expired_intermediate_is_named_in_its_error() {
    let trusted = Authority::root("Root");
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "Old Intermediate");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let intermediate_key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&trusted.params, &trusted.key);
    let intermediate = params.signed_by(&intermediate_key, &issuer).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.not_before = rcgen::date_time_ymd(2000, 6, 1);
    leaf.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf
        .signed_by(&leaf_key, &Issuer::from_params(&params, &intermediate_key))
        .unwrap();
    let chain = vec![leaf_cert.der().clone(), intermediate.der().clone()];
    let server = RustlsServer::start(
        chain,
        PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        2,
    );
    let mut config = TlsConfig::new();
    config
        .add_ca_certificates_pem(trusted.pem.as_bytes())
        .unwrap();
    let found: Arc<Mutex<Vec<sslserver::SslError>>> = Arc::default();
    let record = found.clone();
    config.set_ssl_errors_callback(Some(Arc::new(move |errors| {
        *record.lock().unwrap() = errors.to_vec();
        false
    })));
    connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000)
        .expect_err("an expired intermediate is refused");
    let errors = found.lock().unwrap().clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code, E::CertificateExpired);
    assert_eq!(
        errors[0].certificate.as_ref().map(|c| c.as_ref()),
        Some(intermediate.der().as_ref()),
        "the error names the intermediate"
    );
    // Ignoring it for the leaf does not accept it; for the intermediate does.
    let mut config = TlsConfig::new();
    config
        .add_ca_certificates_pem(trusted.pem.as_bytes())
        .unwrap();
    config.add_ignored_ssl_error(E::CertificateExpired, Some(leaf_cert.der().as_ref()));
    connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000)
        .expect_err("bound to the wrong certificate");
    config.add_ignored_ssl_error(E::CertificateExpired, Some(intermediate.der().as_ref()));
    let server2 = RustlsServer::start(
        vec![leaf_cert.der().clone(), intermediate.der().clone()],
        PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        1,
    );
    connect_encrypted(
        "127.0.0.1",
        server2.port,
        &config,
        Some("localhost"),
        10_000,
    )
    .expect("ignored for the certificate it concerns");
    server.join();
    server2.join();
}

/// A rustls server presenting any chain, for `connections` handshakes.
struct RustlsServer {
    port: u16,
    thread: thread::JoinHandle<()>,
}

impl RustlsServer {
    fn start(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        connections: usize,
    ) -> Self {
        let config = Arc::new(
            ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = thread::spawn(move || {
            for _ in 0..connections {
                let (tcp, _) = listener.accept().unwrap();
                serve_one(config.clone(), tcp);
            }
        });
        RustlsServer { port, thread }
    }

    fn join(self) {
        self.thread.join().unwrap();
    }
}

/// Completes (or fails) one handshake, then says hello so that a client
/// that reads takes in the session tickets.
fn serve_one(config: Arc<ServerConfig>, tcp: TcpStream) {
    tcp.set_read_timeout(Some(SOON)).unwrap();
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        if stream.conn.complete_io(&mut stream.sock).is_err() {
            return;
        }
    }
    let _ = std::io::Write::write_all(&mut stream, b"hello\n");
    let _ = std::io::Write::flush(&mut stream);
}
