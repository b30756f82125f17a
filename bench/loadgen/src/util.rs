//! Small helpers: command-line options, JSON lines, /proc readings, statistics.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

/// `--name value` options and `--flag` switches.
pub struct Args {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

/// Options that take no value.
const FLAGS: &[&str] = &["--resume", "--plain", "--verify-data"];

impl Args {
    pub fn parse(raw: &[String]) -> Result<Args, String> {
        let mut values = HashMap::new();
        let mut flags = Vec::new();
        let mut it = raw.iter();
        while let Some(arg) = it.next() {
            if !arg.starts_with("--") {
                return Err(format!("unexpected argument '{arg}'"));
            }
            if FLAGS.contains(&arg.as_str()) {
                flags.push(arg.clone());
                continue;
            }
            let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
            values.insert(arg.clone(), value.clone());
        }
        Ok(Args { values, flags })
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    pub fn str(&self, name: &str, default: &str) -> String {
        self.values
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    pub fn opt(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name}: '{v}' is not a valid number")),
        }
    }

    pub fn secs(&self, name: &str, default: f64) -> Result<Duration, String> {
        let s: f64 = self.num(name, default)?;
        if !(0.0..=3600.0).contains(&s) {
            return Err(format!("{name}: {s} is out of range (0..3600 s)"));
        }
        Ok(Duration::from_secs_f64(s))
    }
}

/// `--tag`: added to every JSON line (the runner's name for the figure).
pub static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// One JSON object, written as one line.
#[derive(Default)]
pub struct Json(String);

impl Json {
    pub fn new() -> Json {
        Json(String::from("{"))
    }

    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "\"{k}\":");
    }

    pub fn s(mut self, k: &str, v: &str) -> Json {
        self.key(k);
        self.0.push('"');
        for c in v.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.0, "\\u{:04x}", c as u32);
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
        self
    }

    pub fn n(mut self, k: &str, v: f64) -> Json {
        self.key(k);
        if v.is_finite() {
            // Enough digits for microseconds and MB/s, no noise.
            let _ = write!(self.0, "{}", (v * 1e6).round() / 1e6);
        } else {
            self.0.push_str("null");
        }
        self
    }

    pub fn i(mut self, k: &str, v: u64) -> Json {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }

    pub fn b(mut self, k: &str, v: bool) -> Json {
        self.key(k);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }

    pub fn print(mut self) {
        if let Some(tag) = TAG.get() {
            self = self.s("tag", tag);
        }
        self.0.push('}');
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.0);
        let _ = out.flush();
    }
}

/// Clock ticks per second for /proc/PID/stat.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a whole process (its live and exited threads), seconds.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Threads of a process.
pub fn thread_count(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Threads:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The `q` quantile (0..=1) of sorted values (nearest rank).
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Raises the soft open-file limit to the hard limit (or `want`).
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit to fill in and read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let target = want.min(lim.rlim_max);
        if lim.rlim_cur < target {
            lim.rlim_cur = target;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Server CPU over a measured window: reads at start and end.
pub struct CpuWindow {
    pid: Option<u32>,
    server_start: Option<f64>,
    self_start: Option<f64>,
}

impl CpuWindow {
    pub fn start(pid: Option<u32>) -> CpuWindow {
        CpuWindow {
            pid,
            server_start: pid.and_then(process_cpu_seconds),
            self_start: process_cpu_seconds(std::process::id()),
        }
    }

    /// (server CPU s, load generator CPU s) since `start`.
    pub fn stop(&self) -> (Option<f64>, Option<f64>) {
        let server = match (self.pid, self.server_start) {
            (Some(pid), Some(s0)) => process_cpu_seconds(pid).map(|s1| s1 - s0),
            _ => None,
        };
        let own = match (self.self_start, process_cpu_seconds(std::process::id())) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        (server, own)
    }
}

pub fn opt_n(j: Json, k: &str, v: Option<f64>) -> Json {
    match v {
        Some(v) => j.n(k, v),
        None => j.n(k, f64::NAN),
    }
}
