//! The floor: rustls alone, client and server in one thread, records passed
//! through memory, no sockets. Only the server side's calls are timed, so
//! the figures are what the TLS engine costs a server and nothing else.
//!
//! The server is configured as the library configures it: the aws-lc-rs
//! provider, TLS 1.3 and 1.2, no client authentication, the aws-lc-rs
//! session ticketer and a 1024-entry session cache.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::aws_lc_rs;
use rustls::server::ServerSessionMemoryCache;
use rustls::{ClientConnection, HandshakeKind, ServerConfig, ServerConnection};

use crate::tls::{client_config, load_certs, load_key, server_name};
use crate::util::{thread_cpu, Args, Json};

pub fn server_config(a: &Args) -> Result<Arc<ServerConfig>, String> {
    let cert = a.opt("--cert").ok_or("--cert is required")?;
    let key = a.opt("--key").ok_or("--key is required")?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(load_certs(&cert)?, load_key(&key)?)
        .map_err(|e| e.to_string())?;
    config.ticketer = aws_lc_rs::Ticketer::new().map_err(|e| e.to_string())?;
    config.session_storage = ServerSessionMemoryCache::new(1024);
    Ok(Arc::new(config))
}

/// CPU time spent in the server's calls: the thread's CPU clock around each
/// call, less the clock's own cost (calibrated), so time the thread spends
/// preempted by other work on a shared machine does not count.
#[derive(Default)]
struct ServerClock {
    total: Duration,
    sections: u64,
}

impl ServerClock {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let t = thread_cpu();
        let r = f();
        self.total += thread_cpu() - t;
        self.sections += 1;
        r
    }

    /// Seconds, less `overhead` per timed section.
    fn seconds(&self, overhead: Duration) -> f64 {
        (self.total.as_secs_f64() - overhead.as_secs_f64() * self.sections as f64).max(0.0)
    }
}

/// What reading the thread CPU clock twice adds to a timed section.
fn clock_overhead() -> Duration {
    const N: u32 = 20_000;
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t0 = thread_cpu();
        for _ in 0..N {
            std::hint::black_box(thread_cpu());
        }
        best = best.min((thread_cpu() - t0) / N);
    }
    best
}

/// Client -> server: everything the client has queued.
fn to_server(
    c: &mut ClientConnection,
    s: &mut ServerConnection,
    wire: &mut Vec<u8>,
    clock: &mut ServerClock,
) -> Result<(), String> {
    wire.clear();
    while c.wants_write() {
        c.write_tls(wire).map_err(|e| e.to_string())?;
    }
    if wire.is_empty() {
        return Ok(());
    }
    clock.time(|| {
        let mut rest = &wire[..];
        while !rest.is_empty() {
            s.read_tls(&mut rest).map_err(|e| e.to_string())?;
            s.process_new_packets().map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Server -> client: everything the server has queued.
fn to_client(
    s: &mut ServerConnection,
    c: &mut ClientConnection,
    wire: &mut Vec<u8>,
    clock: &mut ServerClock,
) -> Result<(), String> {
    wire.clear();
    clock.time(|| {
        while s.wants_write() {
            s.write_tls(wire).map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })?;
    let mut rest = &wire[..];
    while !rest.is_empty() {
        c.read_tls(&mut rest).map_err(|e| e.to_string())?;
        c.process_new_packets().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Full or resumed handshakes in memory, with the close_notify exchange.
pub fn handshake(a: &Args) -> Result<bool, String> {
    let proto = a.str("--proto", "1.3");
    let resume = a.flag("--resume");
    let duration = a.secs("--duration", 5.0)?;
    let warmup = a.secs("--warmup", 0.5)?;
    let server = server_config(a)?;
    let client = client_config(&proto, resume)?;
    let mut wire = Vec::with_capacity(64 * 1024);
    let one = |wire: &mut Vec<u8>, clock: &mut ServerClock| -> Result<bool, String> {
        let mut c =
            ClientConnection::new(client.clone(), server_name()).map_err(|e| e.to_string())?;
        let mut s =
            clock.time(|| ServerConnection::new(server.clone()).map_err(|e| e.to_string()))?;
        while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
            to_server(&mut c, &mut s, wire, clock)?;
            to_client(&mut s, &mut c, wire, clock)?;
        }
        let resumed = c.handshake_kind() == Some(HandshakeKind::Resumed);
        c.send_close_notify();
        to_server(&mut c, &mut s, wire, clock)?;
        clock.time(|| s.send_close_notify());
        to_client(&mut s, &mut c, wire, clock)?;
        clock.time(|| drop(s));
        Ok(resumed)
    };
    let end_warmup = Instant::now() + warmup;
    while Instant::now() < end_warmup {
        one(&mut wire, &mut ServerClock::default())?;
    }
    let overhead = clock_overhead();
    let mut clock = ServerClock::default();
    let (mut count, mut resumed) = (0u64, 0u64);
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    while t0.elapsed() < duration {
        if one(&mut wire, &mut clock)? {
            resumed += 1;
        }
        count += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let both_cpu = (thread_cpu() - cpu0).as_secs_f64();
    let server_us = clock.seconds(overhead) * 1e6 / count.max(1) as f64;
    Json::new()
        .s("mode", "floor-handshake")
        .s("server", "rustls-in-memory")
        .s("proto", &proto)
        .b("resume", resume)
        .n("secs", secs)
        .i("count", count)
        .n("per_s", count as f64 / secs)
        .n("resumed_fraction", resumed as f64 / count.max(1) as f64)
        .n("server_cpu_us_per_conn", server_us)
        .n(
            "client_and_server_cpu_us_per_conn",
            both_cpu * 1e6 / count.max(1) as f64,
        )
        .n("clock_overhead_ns", overhead.as_nanos() as f64)
        .print();
    Ok(count > 0)
}

/// Echo in memory: the server decrypts each `--size`-byte write and encrypts
/// it back; the timed part is its reading, decrypting, copying out,
/// encrypting and writing.
pub fn echo(a: &Args) -> Result<bool, String> {
    let size: usize = a.num("--size", 16384)?;
    let duration = a.secs("--duration", 5.0)?;
    let warmup = a.secs("--warmup", 0.5)?;
    let server = server_config(a)?;
    let client = client_config(&a.str("--proto", "1.3"), false)?;
    let mut wire = Vec::with_capacity(64 * 1024);
    let mut clock = ServerClock::default();
    let mut c = ClientConnection::new(client, server_name()).map_err(|e| e.to_string())?;
    let mut s = ServerConnection::new(server).map_err(|e| e.to_string())?;
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        to_server(&mut c, &mut s, &mut wire, &mut clock)?;
        to_client(&mut s, &mut c, &mut wire, &mut clock)?;
    }
    let cipher = c
        .negotiated_cipher_suite()
        .and_then(|x| x.suite().as_str())
        .unwrap_or("?")
        .to_string();
    let data: Vec<u8> = (0..size).map(|k| (k % 251) as u8).collect();
    let mut sbuf = vec![0u8; 16 * 1024];
    let mut cbuf = vec![0u8; size];
    let mut round = |clock: &mut ServerClock, wire: &mut Vec<u8>| -> Result<(), String> {
        c.writer().write_all(&data).map_err(|e| e.to_string())?;
        to_server(&mut c, &mut s, wire, clock)?;
        clock.time(|| -> Result<(), String> {
            loop {
                match s.reader().read(&mut sbuf) {
                    Ok(0) => return Err("unexpected close".into()),
                    Ok(n) => {
                        s.writer()
                            .write_all(&sbuf[..n])
                            .map_err(|e| e.to_string())?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        })?;
        to_client(&mut s, &mut c, wire, clock)?;
        c.reader()
            .read_exact(&mut cbuf)
            .map_err(|e| e.to_string())?;
        if cbuf != data {
            return Err("echoed bytes differ".into());
        }
        Ok(())
    };
    let end_warmup = Instant::now() + warmup;
    while Instant::now() < end_warmup {
        round(&mut ServerClock::default(), &mut wire)?;
    }
    let overhead = clock_overhead();
    clock = ServerClock::default();
    let mut bytes = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < duration {
        round(&mut clock, &mut wire)?;
        bytes += size as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    Json::new()
        .s("mode", "floor-echo")
        .s("server", "rustls-in-memory")
        .i("size", size as u64)
        .n("secs", secs)
        .i("bytes", bytes)
        .n(
            "server_cpu_s_per_gb",
            clock.seconds(overhead) / (bytes as f64 / 1e9),
        )
        .n(
            "server_mb_per_cpu_s",
            bytes as f64 / 1e6 / clock.seconds(overhead),
        )
        .s("cipher", &cipher)
        .print();
    Ok(bytes > 0)
}

/// Resident memory of `--conns` server connections after their handshake
/// and one 64-byte echo, held in memory: what rustls itself keeps per idle
/// connection (the heap part of the floor).
pub fn memory(a: &Args) -> Result<bool, String> {
    let conns: usize = a.num("--conns", 1000)?;
    let server = server_config(a)?;
    let client = client_config(&a.str("--proto", "1.3"), false)?;
    let mut wire = Vec::with_capacity(64 * 1024);
    let mut clock = ServerClock::default();
    let open = |wire: &mut Vec<u8>, clock: &mut ServerClock| -> Result<ServerConnection, String> {
        let mut c =
            ClientConnection::new(client.clone(), server_name()).map_err(|e| e.to_string())?;
        let mut s = ServerConnection::new(server.clone()).map_err(|e| e.to_string())?;
        while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
            to_server(&mut c, &mut s, wire, clock)?;
            to_client(&mut s, &mut c, wire, clock)?;
        }
        c.writer()
            .write_all(&[7u8; 64])
            .map_err(|e| e.to_string())?;
        to_server(&mut c, &mut s, wire, clock)?;
        let mut buf = [0u8; 64];
        s.reader().read_exact(&mut buf).map_err(|e| e.to_string())?;
        s.writer().write_all(&buf).map_err(|e| e.to_string())?;
        to_client(&mut s, &mut c, wire, clock)?;
        Ok(s)
    };
    // Warm the allocator up first.
    let warm: Vec<_> = (0..16)
        .map(|_| open(&mut wire, &mut clock))
        .collect::<Result<_, _>>()?;
    drop(warm);
    let me = std::process::id();
    let rss0 = crate::util::rss_kib(me).unwrap_or(0);
    let held: Vec<_> = (0..conns)
        .map(|_| open(&mut wire, &mut clock))
        .collect::<Result<_, _>>()?;
    let rss1 = crate::util::rss_kib(me).unwrap_or(0);
    Json::new()
        .s("mode", "floor-memory")
        .s("server", "rustls-in-memory")
        .i("conns", held.len() as u64)
        .n("kib_per_conn", (rss1 as f64 - rss0 as f64) / conns as f64)
        .print();
    Ok(true)
}
