//! The `openssl s_client` side of tests: a client run against a test
//! server, and a server side that serves one such client.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{temp_file, TestCa, TestServer, SOON};

/// Runs `openssl s_client` against `port` with `input` on stdin; the CA
/// file verifies the server.
pub fn s_client(port: u16, ca: &Path, extra: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .arg("-CAfile")
        .arg(ca)
        .args(["-ign_eof"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl CLI is installed");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// What s_client printed on its standard output.
pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Serves one connection on `server` (if one comes soon): echoes one
/// message, then closes gracefully.
pub fn serve_once(server: &TestServer) -> std::thread::JoinHandle<()> {
    let server = server.server.clone();
    std::thread::spawn(move || {
        if server.wait_for_new_connection(Some(SOON)) == sslserver::WaitOutcome::Ready {
            echo_one_message(&server);
        }
    })
}

/// Serves every connection of `server` the same way until none comes for a
/// while: for tests whose handshakes may fail, where a thread per expected
/// connection would wait for one that never comes.
pub fn serve_all(server: &TestServer) {
    let server = server.server.clone();
    std::thread::spawn(move || {
        while server.wait_for_new_connection(Some(SOON)) == sslserver::WaitOutcome::Ready {
            echo_one_message(&server);
        }
    });
}

/// Takes the queued connection, echoes one message, closes gracefully.
fn echo_one_message(server: &sslserver::Server) {
    let conn = server.next_pending_connection().unwrap();
    let mut buf = [0u8; 1024];
    if let Ok(n) = conn.read(&mut buf) {
        let _ = conn.write(&buf[..n]);
    }
    let _ = conn.disconnect_from_host();
    conn.release();
}

/// A CA certificate file (PEM) for s_client's -CAfile.
pub fn ca_file(ca: &TestCa, name: &str) -> PathBuf {
    temp_file(name, ca.identity.cert_pem.as_bytes())
}
