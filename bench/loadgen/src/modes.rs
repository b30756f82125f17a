//! The measurements against a running server.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::{ClientConfig, HandshakeKind};

use crate::tls::{client_config, Conn};
use crate::util::{opt_n, quantile, raise_nofile, rss_kib, thread_count, Args, CpuWindow, Json};

/// What every mode against a server takes.
struct Target {
    addr: SocketAddr,
    config: Option<Arc<ClientConfig>>,
    server_pid: Option<u32>,
    label: String,
    proto: String,
    timeout: Duration,
}

impl Target {
    fn from(a: &Args, resume: bool) -> Result<Target, String> {
        let addr: SocketAddr = a
            .str("--addr", "127.0.0.1:4433")
            .parse()
            .map_err(|_| "--addr must be IP:PORT".to_string())?;
        if !addr.ip().is_loopback() {
            return Err("--addr must be a loopback address (127.0.0.0/8 or ::1)".into());
        }
        let plain = a.flag("--plain");
        let proto = if plain {
            "tcp".to_string()
        } else {
            a.str("--proto", "1.3")
        };
        let config = if plain {
            None
        } else {
            Some(client_config(&proto, resume)?)
        };
        Ok(Target {
            addr,
            config,
            server_pid: a.opt("--server-pid").and_then(|p| p.parse().ok()),
            label: a.str("--label", "server"),
            proto,
            timeout: a.secs("--io-timeout", 10.0)?,
        })
    }

    fn open(&self) -> io::Result<Conn> {
        Conn::open(self.addr, self.config.as_ref(), self.timeout)
    }

    fn json(&self, mode: &str) -> Json {
        Json::new()
            .s("mode", mode)
            .s("server", &self.label)
            .s("proto", &self.proto)
    }
}

/// Shared counters of the worker threads.
#[derive(Default)]
struct Counters {
    done: AtomicU64,
    resumed: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    cipher: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, what: &str, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            *first = Some(format!("{what}: {e}"));
        }
    }

    fn note_cipher(&self, conn: &Conn) {
        let mut c = self.cipher.lock().unwrap();
        if c.is_none() {
            *c = Some(conn.cipher());
        }
    }

    fn finish(&self, j: Json) -> Json {
        let j = j.i("errors", self.errors.load(Ordering::Relaxed));
        let j = match self.first_error.lock().unwrap().as_deref() {
            Some(e) => j.s("first_error", e),
            None => j,
        };
        match self.cipher.lock().unwrap().as_deref() {
            Some(c) => j.s("cipher", c),
            None => j,
        }
    }
}

/// Runs `workers` threads until `stop`; measures the window between
/// `warmup` and `warmup + duration`. Returns (seconds, counters delta
/// (done, resumed, bytes), server CPU s, own CPU s).
fn measure(
    workers: Vec<JoinHandle<()>>,
    stop: &AtomicBool,
    counters: &Counters,
    server_pid: Option<u32>,
    warmup: Duration,
    duration: Duration,
) -> (f64, [u64; 3], Option<f64>, Option<f64>) {
    let snap = || {
        [
            counters.done.load(Ordering::Relaxed),
            counters.resumed.load(Ordering::Relaxed),
            counters.bytes.load(Ordering::Relaxed),
        ]
    };
    thread::sleep(warmup);
    let c0 = snap();
    let cpu = CpuWindow::start(server_pid);
    let t0 = Instant::now();
    thread::sleep(duration);
    let c1 = snap();
    let (server_cpu, own_cpu) = cpu.stop();
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    (
        secs,
        [c1[0] - c0[0], c1[1] - c0[1], c1[2] - c0[2]],
        server_cpu,
        own_cpu,
    )
}

/// Full or resumed handshakes (or plain TCP connections) per second, and the
/// server's CPU time per connection.
pub fn handshake(a: &Args) -> Result<bool, String> {
    let resume = a.flag("--resume");
    let target = Arc::new(Target::from(a, resume)?);
    let threads: usize = a.num("--threads", 4)?;
    let warmup = a.secs("--warmup", 0.5)?;
    let duration = a.secs("--duration", 5.0)?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let workers = (0..threads)
        .map(|_| {
            let (target, stop, counters) = (target.clone(), stop.clone(), counters.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match target.open() {
                        Ok(conn) => {
                            counters.note_cipher(&conn);
                            let kind = conn.handshake_kind();
                            // The connection counts once the server has
                            // closed it: its whole cost is then spent.
                            match conn.close_and_drain() {
                                Ok(()) => {
                                    counters.done.fetch_add(1, Ordering::Relaxed);
                                    if kind == Some(HandshakeKind::Resumed) {
                                        counters.resumed.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Err(e) => counters.error("close", e),
                            }
                        }
                        Err(e) => {
                            counters.error("connect/handshake", e);
                            thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            })
        })
        .collect();
    let (secs, [done, resumed, _], server_cpu, own_cpu) = measure(
        workers,
        &stop,
        &counters,
        target.server_pid,
        warmup,
        duration,
    );
    let per_conn_us = server_cpu.map(|c| c * 1e6 / done.max(1) as f64);
    let j = target
        .json("handshake")
        .b("resume", resume)
        .i("threads", threads as u64)
        .n("secs", secs)
        .i("count", done)
        .n("per_s", done as f64 / secs)
        .n("resumed_fraction", resumed as f64 / done.max(1) as f64);
    let j = opt_n(j, "server_cpu_s", server_cpu);
    let j = opt_n(j, "server_cpu_us_per_conn", per_conn_us);
    let j = opt_n(j, "client_cpu_s", own_cpu);
    counters.finish(j).print();
    Ok(done > 0 && counters.errors.load(Ordering::Relaxed) == 0)
}

/// Echo throughput: each connection keeps up to `--window` writes of
/// `--size` bytes in flight and reads the echo back, with a non-blocking
/// socket so that sending and receiving overlap.
pub fn echo(a: &Args) -> Result<bool, String> {
    let target = Arc::new(Target::from(a, false)?);
    let conns: usize = a.num("--conns", 1)?;
    let size: usize = a.num("--size", 16384)?;
    let window: usize = a.num("--window", 16)?;
    let warmup = a.secs("--warmup", 0.5)?;
    let duration = a.secs("--duration", 5.0)?;
    let verify = a.flag("--verify-data");
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let workers = (0..conns)
        .map(|i| {
            let (target, stop, counters) = (target.clone(), stop.clone(), counters.clone());
            thread::spawn(move || {
                let conn = match target.open() {
                    Ok(c) => c,
                    Err(e) => return counters.error("connect/handshake", e),
                };
                counters.note_cipher(&conn);
                if let Err(e) = pump(conn, i, size, window, verify, &stop, &counters) {
                    counters.error("echo", e);
                }
            })
        })
        .collect();
    let (secs, [_, _, bytes], server_cpu, own_cpu) = measure(
        workers,
        &stop,
        &counters,
        target.server_pid,
        warmup,
        duration,
    );
    let gb = bytes as f64 / 1e9;
    let j = target
        .json("echo")
        .i("conns", conns as u64)
        .i("size", size as u64)
        .i("window", window as u64)
        .n("secs", secs)
        .i("bytes", bytes)
        .n("mb_per_s", bytes as f64 / 1e6 / secs);
    let j = opt_n(j, "server_cpu_s", server_cpu);
    let j = opt_n(
        j,
        "server_cpu_s_per_gb",
        server_cpu.map(|c| c / gb.max(1e-12)),
    );
    let j = opt_n(j, "client_cpu_s", own_cpu);
    counters.finish(j).print();
    Ok(bytes > 0 && counters.errors.load(Ordering::Relaxed) == 0)
}

/// One echo connection until `stop`: writes `size`-byte messages while fewer
/// than `window` of them are unanswered, counts the bytes echoed back.
fn pump(
    mut conn: Conn,
    seed: usize,
    size: usize,
    window: usize,
    verify: bool,
    stop: &AtomicBool,
    counters: &Counters,
) -> io::Result<()> {
    conn.feed_buffered()?;
    conn.tcp.set_nonblocking(true)?;
    if let Some(tls) = conn.tls.as_mut() {
        // The window bounds what is buffered.
        tls.set_buffer_limit(None);
    }
    // A byte pattern that does not repeat at record boundaries.
    let data: Vec<u8> = (0..size).map(|k| ((k + seed) % 251) as u8).collect();
    let limit = (window * size) as u64;
    let mut inbuf = vec![0u8; 256 * 1024];
    let mut plain = vec![0u8; 64 * 1024];
    // Bytes queued for sending, bytes the socket took (plain TCP), bytes back.
    let (mut queued, mut written, mut received) = (0u64, 0u64, 0u64);
    let check = |bytes: &[u8], at: u64| -> io::Result<()> {
        if verify {
            for (k, &b) in bytes.iter().enumerate() {
                if b as usize != (((at as usize + k) % size) + seed) % 251 {
                    return Err(io::Error::other("echoed bytes differ"));
                }
            }
        }
        Ok(())
    };
    let fd = conn.tcp.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut progress = false;
        while queued - received < limit {
            if let Some(tls) = conn.tls.as_mut() {
                tls.writer().write_all(&data)?;
            }
            queued += size as u64;
        }
        // Send what we can.
        let want_write = match conn.tls.as_mut() {
            Some(tls) => {
                while tls.wants_write() {
                    match tls.write_tls(&mut &conn.tcp) {
                        Ok(_) => progress = true,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                tls.wants_write()
            }
            None => {
                while written < queued {
                    let off = (written % size as u64) as usize;
                    let end = (size as u64).min(off as u64 + queued - written) as usize;
                    match (&conn.tcp).write(&data[off..end]) {
                        Ok(n) => {
                            written += n as u64;
                            progress = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                written < queued
            }
        };
        // Receive what there is.
        match (&conn.tcp).read(&mut inbuf) {
            Ok(0) => return Err(io::Error::other("the server closed the connection")),
            Ok(n) => {
                progress = true;
                match conn.tls.as_mut() {
                    None => {
                        check(&inbuf[..n], received)?;
                        received += n as u64;
                        counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Some(tls) => {
                        let mut rest = &inbuf[..n];
                        while !rest.is_empty() {
                            tls.read_tls(&mut rest)?;
                            tls.process_new_packets()
                                .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
                            loop {
                                match tls.reader().read(&mut plain) {
                                    Ok(0) => return Err(io::Error::other("the server closed")),
                                    Ok(m) => {
                                        check(&plain[..m], received)?;
                                        received += m as u64;
                                        counters.bytes.fetch_add(m as u64, Ordering::Relaxed);
                                    }
                                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                    Err(e) => return Err(e),
                                }
                            }
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if !progress {
            let mut events = libc::POLLIN;
            if want_write {
                events |= libc::POLLOUT;
            }
            let mut pfd = libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 100) };
        }
    }
    Ok(())
}

/// Round-trip latency of `--size`-byte messages on established connections.
pub fn latency(a: &Args) -> Result<bool, String> {
    let target = Arc::new(Target::from(a, false)?);
    let conns: usize = a.num("--conns", 1)?;
    let size: usize = a.num("--size", 64)?;
    let warmup = a.secs("--warmup", 0.5)?;
    let duration = a.secs("--duration", 5.0)?;
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let samples = Arc::new(Mutex::new(Vec::<u32>::new()));
    let workers = (0..conns)
        .map(|i| {
            let (target, stop, counters) = (target.clone(), stop.clone(), counters.clone());
            let (measuring, samples) = (measuring.clone(), samples.clone());
            thread::spawn(move || {
                let mut conn = match target.open() {
                    Ok(c) => c,
                    Err(e) => return counters.error("connect/handshake", e),
                };
                counters.note_cipher(&conn);
                let mut msg = vec![0u8; size];
                let mut back = vec![0u8; size];
                let mut mine = Vec::with_capacity(1 << 20);
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    for (k, b) in msg.iter_mut().enumerate() {
                        *b = (seq as usize + k + i) as u8;
                    }
                    let t = Instant::now();
                    if let Err(e) = conn.write_all(&msg) {
                        return counters.error("write", e);
                    }
                    if let Err(e) = conn.read_exact(&mut back) {
                        return counters.error("read", e);
                    }
                    let rtt = t.elapsed();
                    if back != msg {
                        return counters.error("verify", "echoed bytes differ");
                    }
                    if measuring.load(Ordering::Relaxed) {
                        mine.push(rtt.as_nanos().min(u32::MAX as u128) as u32);
                        counters.done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                samples.lock().unwrap().extend(mine);
                if let Err(e) = conn.close_and_drain() {
                    counters.error("close", e);
                }
            })
        })
        .collect();
    thread::sleep(warmup);
    measuring.store(true, Ordering::Relaxed);
    let (secs, [count, _, _], server_cpu, _) = measure(
        workers,
        &stop,
        &counters,
        target.server_pid,
        Duration::ZERO,
        duration,
    );
    let mut all = std::mem::take(&mut *samples.lock().unwrap());
    all.sort_unstable();
    let us = |q: f64| quantile(&all, q).map(|ns| ns as f64 / 1e3);
    let j = target
        .json("latency")
        .i("conns", conns as u64)
        .i("size", size as u64)
        .n("secs", secs)
        .i("count", all.len() as u64)
        .n("per_s", count as f64 / secs);
    let j = opt_n(j, "p50_us", us(0.50));
    let j = opt_n(j, "p90_us", us(0.90));
    let j = opt_n(j, "p99_us", us(0.99));
    let j = opt_n(j, "max_us", us(1.0));
    let j = opt_n(
        j,
        "server_cpu_us_per_rtt",
        server_cpu.map(|c| c * 1e6 / count.max(1) as f64),
    );
    counters.finish(j).print();
    Ok(!all.is_empty() && counters.errors.load(Ordering::Relaxed) == 0)
}

/// Opens `--conns` connections (handshake and one 64-byte echo each), holds
/// them idle, and reads the server's resident memory before and after.
pub fn idle(a: &Args) -> Result<bool, String> {
    let target = Arc::new(Target::from(a, false)?);
    let conns: usize = a.num("--conns", 1000)?;
    let threads: usize = a.num::<usize>("--threads", 4)?.max(1);
    let settle = a.secs("--settle", 2.0)?;
    let pid = target
        .server_pid
        .ok_or("idle needs --server-pid (its RSS is the measurement)")?;
    let limit = raise_nofile(conns as u64 + 256);
    if limit < conns as u64 + 64 {
        return Err(format!(
            "the open-file limit is {limit}; {conns} connections need more (ulimit -n)"
        ));
    }
    let counters = Arc::new(Counters::default());
    let one = |target: &Target, counters: &Counters| -> Option<Conn> {
        let mut conn = match target.open() {
            Ok(c) => c,
            Err(e) => {
                counters.error("connect/handshake", e);
                return None;
            }
        };
        let msg = [7u8; 64];
        let mut back = [0u8; 64];
        if let Err(e) = conn
            .write_all(&msg)
            .and_then(|()| conn.read_exact(&mut back))
        {
            counters.error("echo", e);
            return None;
        }
        conn.shrink();
        Some(conn)
    };
    // Warm the server up (thread pools, allocator arenas, lazy statics), so
    // the baseline is a server that has served connections.
    for _ in 0..threads * 2 {
        if let Some(c) = one(&target, &counters) {
            let _ = c.close_and_drain();
        }
    }
    thread::sleep(settle);
    let rss0 = rss_kib(pid).ok_or("cannot read the server's RSS")?;
    let threads0 = thread_count(pid).unwrap_or(0);
    let t0 = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (target, counters) = (target.clone(), counters.clone());
            let n = conns / threads + usize::from(t < conns % threads);
            thread::spawn(move || {
                let mut held = Vec::with_capacity(n);
                for _ in 0..n {
                    if let Some(c) = one(&target, &counters) {
                        held.push(c);
                    }
                }
                held
            })
        })
        .collect();
    let mut held = Vec::with_capacity(conns);
    for w in workers {
        held.extend(w.join().unwrap_or_default());
    }
    let open_secs = t0.elapsed().as_secs_f64();
    thread::sleep(settle);
    let rss1 = rss_kib(pid).ok_or("cannot read the server's RSS")?;
    let threads1 = thread_count(pid).unwrap_or(0);
    let established = held.len();
    drop(held);
    thread::sleep(settle);
    let rss2 = rss_kib(pid).unwrap_or(0);
    let per_conn = (rss1 as f64 - rss0 as f64) / established.max(1) as f64;
    let j = target
        .json("idle")
        .i("conns", conns as u64)
        .i("established", established as u64)
        .n("open_secs", open_secs)
        .i("rss_base_kib", rss0)
        .i("rss_kib", rss1)
        .i("rss_after_close_kib", rss2)
        .n("kib_per_conn", per_conn)
        .i("threads_base", threads0)
        .i("threads", threads1);
    counters.finish(j).print();
    Ok(established == conns && counters.errors.load(Ordering::Relaxed) == 0)
}

/// Silent clients: TCP connections that never send a byte. Each one's close
/// by the server is timed against connect time + `--timeout-ms`.
pub fn silent(a: &Args) -> Result<bool, String> {
    let target = Target::from(a, false)?;
    let conns: usize = a.num("--conns", 1000)?;
    let timeout_ms: f64 = a.num("--timeout-ms", 2000.0)?;
    let max_wait = Duration::from_secs_f64(timeout_ms / 1e3) + a.secs("--grace", 10.0)?;
    let max_late_ms: Option<f64> = match a.opt("--max-late-ms") {
        Some(v) => Some(v.parse().map_err(|_| "--max-late-ms: not a number")?),
        None => None,
    };
    raise_nofile(conns as u64 + 256);
    let counters = Counters::default();
    let t0 = Instant::now();
    let mut open: Vec<(TcpStream, Instant)> = Vec::with_capacity(conns);
    let pace = Duration::from_micros(a.num("--pace-us", 200u64)?);
    for k in 0..conns {
        // Paced, so the measurement is the deadline, not a listen backlog
        // overflowing (whose SYN-ACK retransmits delay the server's accept
        // by seconds while the client already counts itself connected).
        let due = t0 + pace * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        match TcpStream::connect_timeout(&target.addr, target.timeout) {
            Ok(s) => {
                let at = Instant::now();
                let _ = s.set_nonblocking(true);
                open.push((s, at));
            }
            Err(e) => counters.error("connect", e),
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let connected = open.len();
    // Wait for the last one's deadline plus the grace period.
    let waited_from = Instant::now();
    // Close time minus deadline, ms (negative = closed early).
    let mut late: Vec<f64> = Vec::with_capacity(connected);
    let mut buf = [0u8; 64];
    while !open.is_empty() && waited_from.elapsed() < max_wait {
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .map(|(s, _)| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            })
            .collect();
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        let now = Instant::now();
        if n <= 0 {
            continue;
        }
        let mut k = 0;
        open.retain(|(s, at)| {
            let ready = fds[k].revents != 0;
            k += 1;
            if !ready {
                return true;
            }
            let closed = match (&mut &*s).read(&mut buf) {
                Ok(0) => true,
                Ok(_) => {
                    // A server that answers a silent client: count it, but
                    // keep waiting for the close.
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(_) => true, // reset: closed too
            };
            if closed {
                let deadline = *at + Duration::from_secs_f64(timeout_ms / 1e3);
                let ms = if now >= deadline {
                    (now - deadline).as_secs_f64() * 1e3
                } else {
                    -(deadline - now).as_secs_f64() * 1e3
                };
                late.push(ms);
            }
            !closed
        });
    }
    let not_closed = open.len();
    drop(open);
    late.sort_by(|x, y| x.total_cmp(y));
    let q = |p: f64| quantile(&late, p);
    let j = target
        .json("silent")
        .i("conns", conns as u64)
        .i("connected", connected as u64)
        .n("connect_secs", connect_secs)
        .n("timeout_ms", timeout_ms)
        .i("closed", late.len() as u64)
        .i("not_closed", not_closed as u64);
    let j = opt_n(j, "late_min_ms", q(0.0));
    let j = opt_n(j, "late_p50_ms", q(0.5));
    let j = opt_n(j, "late_p90_ms", q(0.9));
    let j = opt_n(j, "late_p99_ms", q(0.99));
    let j = opt_n(j, "late_max_ms", q(1.0));
    counters.finish(j).print();
    let within = match (max_late_ms, q(1.0), q(0.0)) {
        (Some(limit), Some(max), Some(min)) => max <= limit && min >= -limit,
        (Some(_), _, _) => false,
        (None, _, _) => true,
    };
    Ok(not_closed == 0 && connected == conns && within)
}
