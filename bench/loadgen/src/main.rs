//! loadgen: the load generator of the sslserver benchmarks.
//!
//! A rustls 0.23 client (aws-lc-rs provider, X25519), blocking sockets,
//! several threads. Every measurement prints one JSON object on one line.
//! The exit status is 0 when the measurement ran without errors.
//!
//! Modes (see `--help`):
//!   handshake   full or resumed TLS 1.3 / 1.2 handshakes (or plain TCP
//!               connections with --plain) per second, server CPU per one
//!   echo        echo throughput with N connections and S-byte writes
//!   latency     round-trip time of small messages on established connections
//!   idle        N established idle connections: the server's RSS per one
//!   silent      N clients that connect and send nothing: when the server
//!               closes each, against its handshake deadline
//!   floor-handshake, floor-echo
//!               rustls client and server in memory, no sockets: the TLS
//!               engine's own cost on the server side
//!   floor-server
//!               a bare rustls server over loopback sockets, one connection
//!               at a time: the socket floor, measured with `handshake`

mod floor;
mod modes;
mod socket_floor;
mod tls;
mod util;

use std::process::ExitCode;

const HELP: &str = "\
usage: loadgen MODE [options]

against a server (--addr 127.0.0.1:PORT; loopback only):
  handshake  [--proto 1.3|1.2] [--resume] [--plain] [--threads 4]
  echo       [--conns 1] [--size 16384] [--window 4] [--verify-data] [--plain]
  latency    [--conns 1] [--size 64] [--plain]
  idle       --server-pid PID [--conns 1000] [--threads 4] [--settle 2] [--plain]
  silent     [--conns 1000] [--timeout-ms 2000] [--grace 10] [--max-late-ms MS]
             [--pace-us 200 (between connects)]
common:      [--duration 5] [--warmup 0.5] [--server-pid PID] [--label NAME]
             [--io-timeout 10] [--tag TEXT (copied into the JSON line)]
in memory (no server):
  floor-handshake --cert C --key K [--proto 1.3|1.2] [--resume] [--duration 5]
  floor-echo      --cert C --key K [--size 16384] [--duration 5]
  floor-memory    --cert C --key K [--conns 1000] (RSS per idle server connection)
a server to measure (prints \"listening on ADDR:PORT\", serves until killed):
  floor-server    --cert C --key K [--port 0] (bare rustls, one thread, one
                  connection at a time: the socket floor)

--server-pid makes the figures include the server's CPU time (utime+stime
from /proc/PID/stat) over the measured window. Output: one JSON line.
";

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = raw.first().cloned() else {
        eprint!("{HELP}");
        return ExitCode::from(2);
    };
    if mode == "--help" || mode == "-h" || mode == "help" {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let args = match util::Args::parse(&raw[1..]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(tag) = args.opt("--tag") {
        let _ = util::TAG.set(tag);
    }
    let result = match mode.as_str() {
        "handshake" => modes::handshake(&args),
        "echo" => modes::echo(&args),
        "latency" => modes::latency(&args),
        "idle" => modes::idle(&args),
        "silent" => modes::silent(&args),
        "floor-handshake" => floor::handshake(&args),
        "floor-echo" => floor::echo(&args),
        "floor-memory" => floor::memory(&args),
        "floor-server" => socket_floor::server(&args),
        other => Err(format!("unknown mode '{other}' (try --help)")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loadgen: {mode}: the measurement saw errors (see the JSON line)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("loadgen: {mode}: {e}");
            ExitCode::from(2)
        }
    }
}
