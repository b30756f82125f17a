//! The fuzz targets' inputs outside cargo-fuzz: the committed corpus and
//! crash regressions replayed through the targets' own code on every test
//! run, and (by hand) the seeds of the TLS targets, recorded from real
//! handshakes.

mod common;
#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::io::Write;
use std::sync::Arc;

use common::*;
use rustls::ClientConnection;

// ---------------------------------------------------------------------------
// The fuzz corpus and crash inputs, replayed through the fuzz targets' code.

#[test]
fn fuzz_corpus_and_regressions_replay_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(targets) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for target in targets.flatten() {
            let name = target.file_name().to_string_lossy().into_owned();
            let Some(run) = harness::target(&name) else {
                panic!("fuzz/{dir}/{name}: no such fuzz target");
            };
            let mut inputs: Vec<_> = std::fs::read_dir(target.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            inputs.sort();
            for input in inputs {
                let data = std::fs::read(&input).unwrap();
                eprintln!("replaying {}", input.display());
                run(&data);
                replayed += 1;
            }
        }
    }
    assert!(replayed > 0, "no corpus under {}", root.display());
}

// ---------------------------------------------------------------------------
// Seeds of the TLS fuzz targets (run by hand, then commit fuzz/corpus):
//   cargo test --test fuzz_inputs -- --ignored write_tls_fuzz_seeds

/// The bytes a client sends in a whole handshake, recorded in memory
/// against a plain rustls server.
fn record_client_flights(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    then_send: &[u8],
) -> Vec<u8> {
    let mut client = ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
    let mut server = rustls::ServerConnection::new(server).unwrap();
    client.writer().write_all(then_send).unwrap();
    let mut sent = Vec::new();
    for _ in 0..20 {
        let mut out = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut out).unwrap();
        }
        sent.extend_from_slice(&out);
        let mut input = &out[..];
        while !input.is_empty() {
            server.read_tls(&mut input).unwrap();
            server.process_new_packets().unwrap();
        }
        let mut back = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut back).unwrap();
        }
        let mut input = &back[..];
        while !input.is_empty() {
            client.read_tls(&mut input).unwrap();
            client.process_new_packets().unwrap();
        }
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
            break;
        }
    }
    assert!(!client.is_handshaking());
    sent
}

#[test]
#[ignore = "writes fuzz/corpus seeds; run by hand"]
fn write_tls_fuzz_seeds() {
    use rustls::version::{TLS12, TLS13};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };
    let ca = TestCa::new("seed ca");
    let server_id = ca.server();
    let client_id = ca.client("seed client");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.identity.cert_der.clone()).unwrap();
    let roots = Arc::new(roots);
    let client_for = |version: &'static rustls::SupportedProtocolVersion, id: Option<&Identity>| {
        let builder = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots.clone());
        Arc::new(match id {
            Some(id) => builder
                .with_client_auth_cert(vec![id.cert_der.clone()], id.key_der())
                .unwrap(),
            None => builder.with_no_client_auth(),
        })
    };
    let server_for = |version: &'static rustls::SupportedProtocolVersion, mtls: bool| {
        let builder = rustls::ServerConfig::builder_with_protocol_versions(&[version]);
        let builder = if mtls {
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder(roots.clone())
                    .build()
                    .unwrap(),
            )
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(
            builder
                .with_single_cert(vec![server_id.cert_der.clone()], server_id.key_der())
                .unwrap(),
        )
    };
    let first_flight = |config: Arc<rustls::ClientConfig>| {
        let mut conn = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    };

    let hello13 = first_flight(client_for(&TLS13, None));
    let hello12 = first_flight(client_for(&TLS12, None));
    write("handshake", "tls13-hello", &hello13);
    write("handshake", "tls12-hello", &hello12);
    write(
        "handshake",
        "tls13-hello-1-byte-records",
        &fragment_handshake_records(&hello13, 1),
    );
    write(
        "handshake",
        "tls10-hello",
        &legacy_client_hello(0x0301, false),
    );
    write(
        "handshake",
        "tls10-hello-sigalgs",
        &legacy_client_hello(0x0301, true),
    );
    write(
        "handshake",
        "http",
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    let mut garbage_after = hello13.clone();
    garbage_after.extend_from_slice(&[0x16, 0x03, 0x03, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]);
    write("handshake", "tls13-hello-then-garbage", &garbage_after);
    write("handshake", "empty-record", &[0x16, 0x03, 0x01, 0x00, 0x00]);
    write(
        "handshake",
        "tls12-full-handshake",
        &record_client_flights(client_for(&TLS12, None), server_for(&TLS12, false), b""),
    );

    write(
        "handshake_mtls",
        "tls12-client-certificate",
        &record_client_flights(
            client_for(&TLS12, Some(&client_id)),
            server_for(&TLS12, true),
            b"",
        ),
    );
    write(
        "handshake_mtls",
        "tls13-client-certificate",
        &record_client_flights(
            client_for(&TLS13, Some(&client_id)),
            server_for(&TLS13, true),
            b"",
        ),
    );
    write("handshake_mtls", "tls12-hello", &hello12);

    write("post_handshake", "application-data", b"\x01hello, world");
    write("post_handshake", "empty-then-close-notify", b"\x01");
    write(
        "post_handshake",
        "forged-record",
        &[0x00, 0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5],
    );
    write(
        "post_handshake",
        "plaintext-alert",
        &[0x00, 0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00],
    );
    write(
        "post_handshake",
        "data-then-garbage",
        b"\x02\x05hello\x17\x03\x03\x00\x03abc",
    );
}
