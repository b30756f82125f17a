//! What a server (and client mode) negotiates and presents, as a fleet
//! configures it: certificates chosen by SNI, OCSP stapling, cipher suites
//! and groups chosen by name, and the NSS key log. Checked with the openssl
//! CLI and the library's client mode.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::openssl_client::{ca_file, s_client, serve_all, serve_once, stdout_of};
use common::*;
use sslserver::{connect_encrypted, ErrorKind, PeerVerifyMode, Protocol, Server, TlsConfig};

/// A self-signed certificate for `name`, as chain and key files.
fn certificate_files(name: &str) -> (PathBuf, PathBuf) {
    let identity = self_signed(name);
    let file_name = name.replace('*', "star");
    (
        temp_file(&format!("{file_name}.pem"), identity.cert_pem.as_bytes()),
        temp_file(&format!("{file_name}.key"), identity.key_pem.as_bytes()),
    )
}

/// The subject of the certificate the server sends for `sni` (None: the
/// client sends no name).
fn subject_served(server: &TestServer, ca: &Path, sni: Option<&str>) -> String {
    let served = serve_once(server);
    let name_args = match sni {
        Some(name) => vec!["-servername", name],
        None => vec!["-noservername"],
    };
    let out = s_client(server.port, ca, &name_args, b"which certificate?\n");
    served.join().unwrap();
    let stdout = stdout_of(&out);
    let subject = stdout
        .lines()
        .find_map(|line| line.strip_prefix("subject="))
        .unwrap_or_else(|| panic!("no certificate for {sni:?}: {stdout}"));
    // "CN = name" or "CN=name", depending on the openssl version.
    subject
        .replace(' ', "")
        .trim_start_matches("CN=")
        .to_string()
}

#[test]
fn sni_chooses_exact_then_wildcard_then_the_default() {
    let default = self_signed("default.example.com");
    let mut config = server_config(&default, PeerVerifyMode::VerifyNone, None);
    for name in ["www.example.com", "*.example.com", "*.example.org"] {
        let (chain, key) = certificate_files(name);
        config
            .add_sni_certificate_files(name, chain.to_str().unwrap(), key.to_str().unwrap(), None)
            .unwrap();
    }
    let server = TestServer::start(&config);
    let ca = ca_file(&TestCa::new("unused"), "sni-ca.pem");
    for (asked, expected) in [
        (Some("www.example.com"), "www.example.com"),
        (Some("WWW.Example.COM"), "www.example.com"),
        (Some("api.example.com"), "*.example.com"),
        (Some("a.example.org"), "*.example.org"),
        // A wildcard covers one label only, and not the bare name.
        (Some("a.b.example.com"), "default.example.com"),
        (Some("example.com"), "default.example.com"),
        (Some("other.test"), "default.example.com"),
        (None, "default.example.com"),
    ] {
        assert_eq!(subject_served(&server, &ca, asked), expected, "{asked:?}");
    }
}

#[test]
fn sni_entries_are_checked_when_added() {
    let mut config = server_config(&self_signed("d.test"), PeerVerifyMode::VerifyNone, None);
    let (chain, key) = certificate_files("sni-check.example.com");
    let (_, other_key) = certificate_files("sni-other.example.com");
    let (chain, key, other_key) = (
        chain.to_str().unwrap(),
        key.to_str().unwrap(),
        other_key.to_str().unwrap(),
    );
    for name in [
        "",
        "*",
        "*.com",
        "a.*.example.com",
        "w*.example.com",
        "127.0.0.1",
    ] {
        let err = config
            .add_sni_certificate_files(name, chain, key, None)
            .expect_err(name);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}");
        assert!(
            err.message().contains(&format!("'{name}'")),
            "{}",
            err.message()
        );
    }
    let missing = "/nonexistent/sni-chain.pem";
    let garbage = temp_file("sni-garbage.pem", b"not a certificate");
    let garbage = garbage.to_str().unwrap();
    for (chain, key, kind, named) in [
        (missing, key, ErrorKind::Io, missing),
        (chain, missing, ErrorKind::Io, missing),
        (garbage, key, ErrorKind::Certificate, garbage),
        (chain, garbage, ErrorKind::PrivateKey, garbage),
        (chain, other_key, ErrorKind::PrivateKey, other_key),
    ] {
        let err = config
            .add_sni_certificate_files("x.example.com", chain, key, None)
            .expect_err(named);
        assert_eq!(err.kind(), kind, "{}", err.message());
        assert!(err.message().contains(named), "{}", err.message());
    }
    // Nothing was added: the default answers that name.
    let server = TestServer::start(&config);
    let ca = ca_file(&TestCa::new("unused"), "sni-check-ca.pem");
    assert_eq!(
        subject_served(&server, &ca, Some("x.example.com")),
        "d.test"
    );
}

/// Runs the openssl CLI in `dir`; panics with its output if it fails.
fn openssl_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A real OCSP response for `leaf`, signed by `ca` with `openssl ocsp` as
/// a responder (an empty index: the status is "unknown", but the response
/// is a complete, successful one); and its text as openssl prints it.
fn ocsp_response(ca: &TestCa, leaf: &Identity) -> (Vec<u8>, String) {
    let dir = temp_file("marker", b"").parent().unwrap().join(format!(
        "ocsp-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.identity.cert_pem).unwrap();
    std::fs::write(dir.join("ca.key"), &ca.identity.key_pem).unwrap();
    std::fs::write(dir.join("leaf.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("index.txt"), b"").unwrap();
    openssl_in(
        &dir,
        &["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem"]
            .into_iter()
            .chain(["-no_nonce", "-reqout", "req.der"])
            .collect::<Vec<_>>(),
    );
    openssl_in(
        &dir,
        &["ocsp", "-index", "index.txt", "-rsigner", "ca.pem"]
            .into_iter()
            .chain(["-rkey", "ca.key", "-CA", "ca.pem", "-reqin", "req.der"])
            .chain(["-respout", "resp.der", "-ndays", "1"])
            .collect::<Vec<_>>(),
    );
    let text = openssl_in(
        &dir,
        &["ocsp", "-respin", "resp.der", "-resp_text", "-noverify"],
    );
    (std::fs::read(dir.join("resp.der")).unwrap(), text)
}

/// The lines of an OCSP response's text that identify it: when it was
/// made and the serial number it speaks for (the first of each: s_client
/// prints the response before anything else with such lines).
fn identifying_lines(text: &str) -> Vec<String> {
    ["Produced At:", "Serial Number:"]
        .iter()
        .map(|label| {
            text.lines()
                .map(str::trim)
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no {label} in {text}"))
                .to_string()
        })
        .collect()
}

#[test]
fn ocsp_response_is_stapled_to_the_default_certificate() {
    let ca = TestCa::new("ocsp ca");
    let leaf = ca.server();
    let (der, text) = ocsp_response(&ca, &leaf);
    let mut config = server_config(&leaf, PeerVerifyMode::VerifyNone, None);
    config.set_ocsp_response(&der).unwrap();
    let server = TestServer::start(&config);
    let ca_path = ca_file(&ca, "ocsp-ca.pem");
    for version in ["-tls1_3", "-tls1_2"] {
        let served = serve_once(&server);
        let out = s_client(server.port, &ca_path, &["-status", version], b"status?\n");
        served.join().unwrap();
        let stdout = stdout_of(&out);
        assert!(
            stdout.contains("OCSP Response Status: successful"),
            "{version}: {stdout}"
        );
        assert_eq!(
            identifying_lines(&stdout),
            identifying_lines(&text),
            "{version}"
        );
    }
    // A new chain drops the response (it spoke for the old certificate);
    // so does an empty one.
    let mut renewed = config.clone();
    renewed
        .set_certificate_chain_pem(leaf.cert_pem.as_bytes())
        .unwrap();
    assert_eq!(renewed.ocsp_response(), None);
    let mut cleared = config.clone();
    cleared.set_ocsp_response(&[]).unwrap();
    for config in [renewed, cleared] {
        server.server.set_config(&config).unwrap();
        let served = serve_once(&server);
        let out = s_client(server.port, &ca_path, &["-status"], b"status?\n");
        served.join().unwrap();
        let stdout = stdout_of(&out);
        assert!(
            stdout.contains("OCSP response: no response sent"),
            "{stdout}"
        );
    }
}

#[test]
fn bytes_that_are_not_a_successful_ocsp_response_are_refused() {
    let ca = TestCa::new("ocsp ca");
    let leaf = ca.server();
    let (der, _) = ocsp_response(&ca, &leaf);
    let mut config = server_config(&leaf, PeerVerifyMode::VerifyNone, None);
    config.set_ocsp_response(&der).unwrap();
    let mut longer = der.clone();
    longer.push(0);
    let try_later = [0x30, 0x03, 0x0a, 0x01, 0x03];
    for bad in [
        &b"garbage"[..],
        &der[..der.len() - 1],
        &longer,
        &try_later,
        leaf.cert_der.as_ref(),
    ] {
        let err = config.set_ocsp_response(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("OCSP response"), "{}", err.message());
    }
    assert_eq!(config.ocsp_response(), Some(&der[..]), "unchanged");
}

/// What s_client negotiated with `server` (served by [`serve_all`]) given
/// `args`: the cipher and the key exchange ("X25519, 253 bits") if the
/// handshake completed and the echo came back, None if it failed.
fn negotiated(server: &TestServer, ca: &Path, args: &[&str]) -> Option<(String, String)> {
    let out = s_client(server.port, ca, args, b"suite?\n");
    let stdout = stdout_of(&out);
    if !stdout.contains("suite?") {
        return None;
    }
    let find = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| {
                l.split_once(prefix)
                    .map(|(_, rest)| rest.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no '{prefix}' in {stdout}"))
    };
    Some((find("Cipher is "), find("Server Temp Key: ")))
}

fn cipher(negotiated: Option<(String, String)>) -> Option<String> {
    negotiated.map(|(cipher, _)| cipher)
}

fn group(negotiated: Option<(String, String)>) -> Option<String> {
    // "X25519, 253 bits" or "ECDH, prime256v1, 256 bits": the name of the
    // group is the last field but one.
    negotiated.map(|(_, key)| {
        let fields: Vec<&str> = key.split(", ").collect();
        fields[fields.len().saturating_sub(2)].to_string()
    })
}

#[test]
fn only_the_configured_cipher_suites_are_negotiated_in_the_configured_order() {
    let ca = TestCa::new("ca");
    let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    config.set_ciphers("TLS_CHACHA20_POLY1305_SHA256").unwrap();
    let server = TestServer::start(&config);
    serve_all(&server);
    let ca_path = ca_file(&ca, "suites-ca.pem");
    let chacha = ["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"];
    assert_eq!(
        cipher(negotiated(&server, &ca_path, &chacha)).as_deref(),
        Some("TLS_CHACHA20_POLY1305_SHA256")
    );
    let aes = ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"];
    assert_eq!(
        negotiated(&server, &ca_path, &aes),
        None,
        "a suite not chosen"
    );
    assert_eq!(
        negotiated(&server, &ca_path, &["-tls1_2"]),
        None,
        "no TLS 1.2 suite"
    );
    // The server's order wins over the client's.
    let mut ordered = config.clone();
    ordered
        .set_ciphers(
            "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        )
        .unwrap();
    server.server.set_config(&ordered).unwrap();
    let client_prefers_256 = [
        "-tls1_3",
        "-ciphersuites",
        "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
    ];
    assert_eq!(
        cipher(negotiated(&server, &ca_path, &client_prefers_256)).as_deref(),
        Some("TLS_AES_128_GCM_SHA256")
    );
    let tls12 = cipher(negotiated(&server, &ca_path, &["-tls1_2"]));
    assert_eq!(tls12.as_deref(), Some("ECDHE-ECDSA-AES256-GCM-SHA384"));
    assert_eq!(
        ordered.ciphers(),
        [
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        ]
    );
}

#[test]
fn only_the_configured_groups_are_used() {
    let ca = TestCa::new("ca");
    let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    config.set_groups("x25519").unwrap();
    let server = TestServer::start(&config);
    serve_all(&server);
    let ca_path = ca_file(&ca, "groups-ca.pem");
    // (TLS 1.2 clients also need the certificate's curve, P-256, in their
    // list, so the client offers it second.)
    for version in ["-tls1_3", "-tls1_2"] {
        assert_eq!(
            group(negotiated(
                &server,
                &ca_path,
                &[version, "-groups", "P-256:X25519"]
            ))
            .as_deref(),
            Some("X25519"),
            "{version}"
        );
        assert_eq!(
            negotiated(&server, &ca_path, &[version, "-groups", "P-256:P-384"]),
            None,
            "{version}: groups not chosen"
        );
    }
    let mut p256 = config.clone();
    p256.set_groups("secp384r1:P-256").unwrap();
    assert_eq!(p256.groups(), ["secp384r1", "secp256r1"]);
    server.server.set_config(&p256).unwrap();
    // The client prefers X25519, which is no longer allowed.
    for version in ["-tls1_3", "-tls1_2"] {
        assert_eq!(
            group(negotiated(
                &server,
                &ca_path,
                &[version, "-groups", "X25519:P-256"]
            ))
            .as_deref(),
            Some("prime256v1"),
            "{version}"
        );
    }
    assert_eq!(
        negotiated(&server, &ca_path, &["-groups", "X25519"]),
        None,
        "a group no longer chosen"
    );
}

#[test]
fn unknown_names_and_unusable_combinations_are_refused() {
    let mut config = TlsConfig::new();
    for bad in ["TLS_AES_128_GCM_SHA256:TLS_NOPE", "", "a::b"] {
        let err = config.set_ciphers(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
    }
    let err = config
        .set_ciphers("TLS_AES_128_GCM_SHA256:TLS_NOPE")
        .unwrap_err();
    assert!(err.message().contains("'TLS_NOPE'"), "{}", err.message());
    let err = config.set_groups("X25519:P-999").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("'P-999'"), "{}", err.message());
    assert_eq!(config.ciphers(), TlsConfig::new().ciphers(), "unchanged");
    // TLS 1.3 only with only TLS 1.2 suites: no handshake could complete,
    // so the server refuses the configuration.
    let ca = TestCa::new("ca");
    let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    config.set_protocol(Protocol::TlsV1_3).unwrap();
    config
        .set_ciphers("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
        .unwrap();
    let server = Server::new();
    let err = server.set_config(&config).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("TLS 1.3"), "{}", err.message());
    // ...and so does client mode, before connecting anywhere.
    let err = connect_encrypted("127.0.0.1", 9, &config, None, 1000).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.message());
}

#[test]
fn suites_that_cannot_serve_the_certificate_are_refused_by_the_server() {
    // TLS 1.2 only, with only RSA suites, and an ECDSA certificate: every
    // handshake would fail, so the server refuses the configuration.
    let ca = TestCa::new("ca");
    let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    config.set_protocol(Protocol::TlsV1_2).unwrap();
    config
        .set_ciphers("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
        .unwrap();
    let server = Server::new();
    let err = server.set_config(&config).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.message());
    assert!(
        err.message()
            .contains("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        "{}",
        err.message()
    );
    // With a suite for its key, or with TLS 1.3 allowed, it serves.
    let mut ecdsa = config.clone();
    ecdsa
        .set_ciphers(
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        )
        .unwrap();
    server.set_config(&ecdsa).unwrap();
    let mut tls13 = config.clone();
    tls13.set_protocol(Protocol::TlsV1_2OrLater).unwrap();
    tls13
        .set_ciphers("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:TLS_AES_128_GCM_SHA256")
        .unwrap();
    server.set_config(&tls13).unwrap();
}

#[test]
fn client_mode_uses_the_configured_suites() {
    let ca = TestCa::new("ca");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::VerifyNone,
        None,
    ));
    let echo = spawn_echo(&server.server);
    let mut config = TlsConfig::new();
    config
        .add_ca_certificates_pem(ca.identity.cert_pem.as_bytes())
        .unwrap();
    config.set_ciphers("TLS_CHACHA20_POLY1305_SHA256").unwrap();
    let conn =
        connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000).unwrap();
    assert_eq!(
        conn.session().unwrap().cipher,
        "TLS_CHACHA20_POLY1305_SHA256"
    );
    conn.release();
    drop(echo);
}

/// The line of an NSS key log with `label`, if any.
fn key_log_line(log: &str, label: &str) -> Option<String> {
    log.lines()
        .find(|l| l.starts_with(&format!("{label} ")))
        .map(str::to_string)
}

#[test]
fn the_key_log_holds_the_secrets_openssl_logs_for_the_same_connection() {
    use std::os::unix::fs::PermissionsExt;
    let ca = TestCa::new("ca");
    let dir = temp_file("marker", b"").parent().unwrap().to_path_buf();
    let ours = dir.join("server-keys.log");
    let _ = std::fs::remove_file(&ours);
    let mut config = server_config(&ca.server(), PeerVerifyMode::VerifyNone, None);
    config.set_key_log_file(ours.to_str()).unwrap();
    let server = TestServer::start(&config);
    let ca_path = ca_file(&ca, "keylog-ca.pem");
    for (version, label) in [
        ("-tls1_3", "CLIENT_TRAFFIC_SECRET_0"),
        ("-tls1_2", "CLIENT_RANDOM"),
    ] {
        let theirs = dir.join(format!("openssl-keys{version}.log"));
        let _ = std::fs::remove_file(&theirs);
        let served = serve_once(&server);
        let out = s_client(
            server.port,
            &ca_path,
            &[version, "-keylogfile", theirs.to_str().unwrap()],
            b"secrets\n",
        );
        served.join().unwrap();
        assert!(stdout_of(&out).contains("secrets"));
        let theirs = std::fs::read_to_string(&theirs).unwrap();
        let expected = key_log_line(&theirs, label).expect("openssl logged it");
        let ours = std::fs::read_to_string(&ours).unwrap();
        assert!(
            ours.lines().any(|l| l == expected),
            "{version}: {expected} not in {ours}"
        );
    }
    let mode = std::fs::metadata(&ours).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner reads the secrets");
    // Turned off: nothing more is written.
    let before = std::fs::read_to_string(&ours).unwrap();
    let mut off = config.clone();
    off.set_key_log_file(Some("")).unwrap();
    server.server.set_config(&off).unwrap();
    let served = serve_once(&server);
    s_client(server.port, &ca_path, &[], b"quiet\n");
    served.join().unwrap();
    assert_eq!(std::fs::read_to_string(&ours).unwrap(), before);
}

#[test]
fn client_mode_logs_keys_and_an_unopenable_key_log_is_refused() {
    let ca = TestCa::new("ca");
    let server = TestServer::start(&server_config(
        &ca.server(),
        PeerVerifyMode::VerifyNone,
        None,
    ));
    let echo = spawn_echo(&server.server);
    let log = temp_file("marker", b"")
        .parent()
        .unwrap()
        .join("client-keys.log");
    let _ = std::fs::remove_file(&log);
    let mut config = TlsConfig::new();
    config
        .add_ca_certificates_pem(ca.identity.cert_pem.as_bytes())
        .unwrap();
    config.set_key_log_file(log.to_str()).unwrap();
    let conn =
        connect_encrypted("127.0.0.1", server.port, &config, Some("localhost"), 10_000).unwrap();
    conn.release();
    drop(echo);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        key_log_line(&logged, "CLIENT_TRAFFIC_SECRET_0").is_some(),
        "{logged}"
    );
    for bad in ["/nonexistent/dir/keys.log", "/"] {
        let err = config.set_key_log_file(Some(bad)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.message().contains(bad), "{}", err.message());
    }
}
