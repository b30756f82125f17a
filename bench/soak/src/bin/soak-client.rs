//! Mixed good and bad clients against a server on loopback, for a bounded
//! time: good ones (handshake, echo check, close_notify), good ones that
//! reset, silent ones, partial and drip-fed ClientHellos, garbage, plaintext,
//! bursts of resets and TLS 1.0 hellos.
//!
//! Usage: soak-client ADDRESS:PORT CA.pem SECONDS [WORKERS]
//! Prints the counts per kind; exits 1 if any good client failed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const KINDS: [(&str, u32); 9] = [
    ("good", 40),
    ("good-then-reset", 10),
    ("silent", 8),
    ("partial-hello", 8),
    ("drip", 5),
    ("garbage", 10),
    ("plaintext", 9),
    ("reset-burst", 5),
    ("tls1.0-hello", 5),
];

/// Every wait of a client is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Stats {
    done: Vec<AtomicU64>,
    good_failures: AtomicU64,
    failures: Mutex<Vec<String>>,
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let tcp = TcpStream::connect_timeout(&addr, BOUND)?;
    tcp.set_read_timeout(Some(BOUND))?;
    tcp.set_write_timeout(Some(BOUND))?;
    Ok(tcp)
}

fn reset(tcp: TcpStream) {
    let socket = socket2::Socket::from(tcp);
    let _ = socket.set_linger(Some(Duration::ZERO));
}

/// Reads until the server closes (or BOUND passes).
fn until_closed(tcp: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = tcp.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

fn hello(config: &Arc<ClientConfig>) -> Vec<u8> {
    let mut conn =
        ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

fn good(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    rng: &mut Rng,
    reset_after: bool,
) -> Result<(), String> {
    let tcp = connect(addr).map_err(|e| format!("connect: {e}"))?;
    let conn =
        ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    if reset_after {
        reset(stream.sock);
        return Ok(());
    }
    let len = 1 + rng.below(64 * 1024) as usize;
    let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ rng.0) as u8).collect();
    stream.write_all(&data).map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; len];
    stream
        .read_exact(&mut back)
        .map_err(|e| format!("read {len} echoed bytes: {e}"))?;
    if back != data {
        return Err("the echo differs".into());
    }
    stream.conn.send_close_notify();
    stream.flush().map_err(|e| format!("close_notify: {e}"))?;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    Ok(())
}

fn bad(kind: &str, addr: SocketAddr, config: &Arc<ClientConfig>, rng: &mut Rng) {
    let Ok(mut tcp) = connect(addr) else { return };
    match kind {
        "silent" => until_closed(&mut tcp),
        "partial-hello" => {
            let h = hello(config);
            let _ = tcp.write_all(&h[..h.len() / 2]);
            until_closed(&mut tcp);
        }
        "drip" => {
            let h = hello(config);
            let started = Instant::now();
            for byte in &h[..h.len() - 1] {
                if tcp.write_all(&[*byte]).is_err() || started.elapsed() > BOUND {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            until_closed(&mut tcp);
        }
        "garbage" => {
            let len = 1 + rng.below(4096) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if rng.below(2) == 0 {
                data[0] = 0x16;
            }
            let _ = tcp.write_all(&data);
            let _ = tcp.shutdown(Shutdown::Write);
            until_closed(&mut tcp);
        }
        "plaintext" => {
            let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
            until_closed(&mut tcp);
        }
        "reset-burst" => {
            reset(tcp);
            for _ in 0..9 {
                if let Ok(tcp) = connect(addr) {
                    reset(tcp);
                }
            }
        }
        "tls1.0-hello" => {
            // A ClientHello of an old client: TLS 1.0, no extensions.
            let mut body = vec![0x03, 0x01];
            body.extend((0..32).map(|_| rng.next() as u8));
            body.extend_from_slice(&[0, 0, 4, 0x00, 0x2f, 0x00, 0x35, 1, 0]);
            let mut msg = vec![1, 0, 0, body.len() as u8];
            msg.extend_from_slice(&body);
            let mut record = vec![0x16, 0x03, 0x01, 0, msg.len() as u8];
            record.extend_from_slice(&msg);
            let _ = tcp.write_all(&record);
            let _ = tcp.shutdown(Shutdown::Write);
            until_closed(&mut tcp);
        }
        other => unreachable!("{other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: soak-client ADDRESS:PORT CA.pem SECONDS [WORKERS]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDRESS:PORT");
    let ca = CertificateDer::from_pem_file(&args[2]).expect("CA.pem");
    let seconds: u64 = args[3].parse().expect("SECONDS");
    let workers: u64 = args.get(4).map_or(16, |w| w.parse().expect("WORKERS"));
    let mut roots = RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let stats = Arc::new(Stats {
        done: KINDS.iter().map(|_| AtomicU64::new(0)).collect(),
        good_failures: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
    });
    let until = Instant::now() + Duration::from_secs(seconds);
    let total: u32 = KINDS.iter().map(|k| k.1).sum();
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let (stats, config) = (stats.clone(), config.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w + 1) * 0x1234_5678_9abc);
                while Instant::now() < until {
                    let mut pick = rng.below(total as u64) as u32;
                    let index = KINDS
                        .iter()
                        .position(|(_, weight)| {
                            if pick < *weight {
                                true
                            } else {
                                pick -= weight;
                                false
                            }
                        })
                        .unwrap();
                    let kind = KINDS[index].0;
                    match kind {
                        "good" | "good-then-reset" => {
                            if let Err(e) = good(addr, &config, &mut rng, kind != "good") {
                                stats.good_failures.fetch_add(1, Ordering::Relaxed);
                                stats.failures.lock().unwrap().push(format!("{kind}: {e}"));
                            }
                        }
                        _ => bad(kind, addr, &config, &mut rng),
                    }
                    stats.done[index].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut sum = 0;
    for (i, (kind, _)) in KINDS.iter().enumerate() {
        let n = stats.done[i].load(Ordering::Relaxed);
        sum += n;
        println!("clients {kind:>16}: {n}");
    }
    let failed = stats.good_failures.load(Ordering::Relaxed);
    println!("clients {:>16}: {sum}", "total");
    println!("good clients failed: {failed}");
    for f in stats.failures.lock().unwrap().iter().take(10) {
        println!("  {f}");
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
