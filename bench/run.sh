#!/usr/bin/env bash
# The benchmark runner: sslserver side by side with its peers, in one run.
#
#   bench/run.sh                 everything: install, build, measure, and write
#                                the table to docs/benchmarks.md (~20 min)
#   bench/run.sh --duration 1 --runs 1
#                                a quick full run (numbers are noisier)
#   bench/run.sh --smoke         a quick check of the load generator against
#                                the library's server only (< 30 s once built);
#                                exits non-zero on any failure
#
# Options:
#   --duration S    seconds per measurement (default 5)
#   --runs N        runs per figure; the table shows the median (default 3)
#   --output FILE   where the markdown goes (default docs/benchmarks.md)
#   --only LIST     comma-separated groups: handshake,scaling,echo,latency,memory,
#                   deadline,eventloop (eventloop alone rewrites only its own section
#                   of the output)
#   --no-install    do not apt-get anything (fail if something is missing)
#
# Servers, all on 127.0.0.1, each started by this script:
#   sslserver  bench/servers/sslserver_echo (the library's public Rust API);
#              in the handshake and scaling groups it serves each connection
#              from the PENDING_CONNECTION_AVAILABLE callback (--serve
#              callback), elsewhere from an application thread per connection
#   sslserver-queue  the same with an application thread per connection
#              (--serve queue), for the handshake group's comparison
#   sslserver-epoll  c_examples/epoll_echo_server (the C API, non-blocking
#              sockets, one thread with epoll; eventloop group)
#   openssl    bench/servers/openssl_echo (libssl, thread per connection)
#   qt         bench/servers/qt_echo (Qt 6 QSslServer, event-driven)
#   tcp        openssl_echo --plain (plain TCP, thread per connection: floor)
#   in-memory  loadgen floor-* (rustls with no sockets: floor)
#   rustls-sockets  loadgen floor-server (bare rustls over loopback, one
#              thread, one connection at a time: the socket floor; handshake
#              group)
# Raw results (JSON lines) and logs go to build/bench/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

duration=5
runs=3
smoke=0
install=1
only="handshake,scaling,echo,latency,memory,deadline,eventloop"
output="$root/docs/benchmarks.md"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --duration) duration="$2"; shift ;;
    --runs) runs="$2"; shift ;;
    --output) output="$2"; shift ;;
    --only) only="$2"; shift ;;
    --no-install) install=0 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

work="$root/build/bench"
mkdir -p "$work/logs" "$work/certs" "$work/bin"
[[ -f "$root/build/.gitignore" ]] || echo '*' > "$root/build/.gitignore"
# Shares compiled dependencies (aws-lc among them) with the library's build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
results="$work/results.jsonl"
t_start=$SECONDS

log() { printf '==> %s  [%ds]\n' "$*" $((SECONDS - t_start)) >&2; }
die() { echo "run.sh: $*" >&2; exit 1; }
want() { [[ ",$only," == *",$1,"* ]]; }

# ------------------------------------------------------------------ install
need_pkg() { # dpkg-package...
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $install == 1 ]] || die "missing packages: ${missing[*]} (run without --no-install)"
  log "apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if [[ $smoke == 0 ]]; then
  need_pkg openssl libssl-dev gcc g++ make qt6-base-dev util-linux procps
  if ! command -v cmake >/dev/null; then
    [[ $install == 1 ]] || die "cmake is missing"
    log "pip install cmake"
    python3 -m pip install --quiet cmake
  fi
else
  command -v openssl >/dev/null || need_pkg openssl
fi

# -------------------------------------------------------------------- build
log "build loadgen and sslserver_echo (release) into $CARGO_TARGET_DIR"
cargo build --release --quiet --manifest-path bench/loadgen/Cargo.toml
cargo build --release --quiet --manifest-path bench/servers/sslserver_echo/Cargo.toml
LOADGEN="$CARGO_TARGET_DIR/release/loadgen"
SSLSERVER_ECHO="$CARGO_TARGET_DIR/release/sslserver_echo"
if [[ $smoke == 0 ]]; then
  log "build openssl_echo (gcc -O2) and qt_echo (cmake, Qt 6)"
  gcc -O2 -g -Wall -Wextra -o "$work/bin/openssl_echo" bench/servers/openssl_echo/openssl_echo.c \
    -lssl -lcrypto -lpthread
  cmake -S bench/servers/qt_echo -B "$work/qt_echo" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$work/logs/qt_cmake.log"
  cmake --build "$work/qt_echo" -j 2 >"$work/logs/qt_build.log"
  OPENSSL_ECHO="$work/bin/openssl_echo"
  QT_ECHO="$work/qt_echo/qt_echo"
  if want eventloop; then
    log "build the library (release) and epoll_echo_server (gcc -O2, static)"
    cargo build --release --quiet --lib
    gcc -O2 -g -Wall -Wextra -Werror -I include -o "$work/bin/epoll_echo_server" \
      c_examples/epoll_echo_server.c c_examples/server_options.c \
      "$CARGO_TARGET_DIR/release/libsslserver.a" -lpthread -ldl -lm
    EPOLL_ECHO="$work/bin/epoll_echo_server"
  fi
fi

# -------------------------------------------------------------------- certs
certs="$work/certs"
make_cert() { # name openssl-newkey-args...
  local name="$1"; shift
  [[ -s "$certs/$name.pem" && -s "$certs/$name.key" ]] && return 0
  openssl req -x509 "$@" -nodes -keyout "$certs/$name.key" -out "$certs/$name.pem" -days 3650 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
}
make_cert ecdsa -newkey ec -pkeyopt ec_paramgen_curve:P-256
make_cert rsa -newkey rsa:2048

# ------------------------------------------------------------------ servers
# Raise the open-file limit for 10,000 connections (the shell, the servers
# and the load generator all inherit it).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
# sslserver runs two threads per connection (its reader and the
# application's), each thread two memory mappings (stack and guard page):
# 10,000 connections need more than Linux's default 65,530 mappings.
if [[ $smoke == 0 && "$(cat /proc/sys/vm/max_map_count)" -lt 262144 ]]; then
  if sysctl -qw vm.max_map_count=262144 2>/dev/null; then
    log "raised vm.max_map_count to 262144 (was needed for 10,000 connections)"
  else
    log "warning: cannot raise vm.max_map_count ($(cat /proc/sys/vm/max_map_count)); 10,000 connections may fail"
  fi
fi

declare -A PID PORT
server_cmd() { # name cert [extra...]
  local name="$1" cert="$2"; shift 2
  local c="$certs/$cert.pem" k="$certs/$cert.key"
  case "$name" in
    sslserver) echo "$SSLSERVER_ECHO --cert $c --key $k $*" ;;
    sslserver-queue) echo "$SSLSERVER_ECHO --cert $c --key $k --serve queue $*" ;;
    sslserver-query) echo "$SSLSERVER_ECHO --cert $c --key $k --verify query --serve callback $*" ;;
    sslserver-epoll) echo "$EPOLL_ECHO --cert $c --key $k --verify none --quiet $*" ;;
    openssl) echo "$OPENSSL_ECHO --cert $c --key $k $*" ;;
    qt) echo "$QT_ECHO --cert $c --key $k $*" ;;
    tcp) echo "$OPENSSL_ECHO --plain $*" ;;
    rustls-sockets) echo "$LOADGEN floor-server --cert $c --key $k $*" ;;
  esac
}

start_server() { # name cert [extra...]
  local name="$1" cert="$2"; shift 2
  local logf="$work/logs/server-$name-$cert.log"
  PORT[$name]=""
  # shellcheck disable=SC2046
  $(server_cmd "$name" "$cert" "$@") >"$logf" 2>&1 &
  PID[$name]=$!
  local i
  local i port
  for i in $(seq 1 100); do
    port="$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$logf" | head -n1)"
    if [[ -n "$port" ]]; then
      PORT[$name]="$port"
      return 0
    fi
    kill -0 "${PID[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  cat "$logf" >&2
  die "server $name did not start"
}

stop_server() { # name
  local name="$1"
  if [[ -n "${PID[$name]:-}" ]]; then
    kill "${PID[$name]}" 2>/dev/null || true
    wait "${PID[$name]}" 2>/dev/null || true
    unset "PID[$name]"
  fi
}

stop_all() {
  local name
  for name in "${!PID[@]}"; do stop_server "$name"; done
}
trap stop_all EXIT

failures=0
PREFIX=()
# One measurement: loadgen MODE --tag TAG [args...] against server NAME
# (empty for in-memory modes); appends the JSON line to the results.
measure() { # server tag mode args...
  local server="$1" tag="$2" mode="$3"; shift 3
  local target=()
  if [[ -n "$server" ]]; then
    target=(--addr "127.0.0.1:${PORT[$server]}" --server-pid "${PID[$server]}" --label "$server")
  fi
  local line
  if line="$("${PREFIX[@]}" "$LOADGEN" "$mode" --tag "$tag" "${target[@]}" "$@" 2>>"$work/logs/loadgen.log")"; then
    :
  else
    failures=$((failures + 1))
    echo "run.sh: FAILED: $server $tag: $line" >&2
  fi
  [[ -n "$line" ]] && echo "$line" >>"$results"
  [[ $smoke == 1 ]] && echo "$line"
  return 0
}

# Context switches of server NAME per connection over one handshake run
# (perf stat, all of its threads), as a JSON line in the results; nothing
# if perf cannot count here.
count_switches() { # server tag loadgen-args...
  local server="$1" tag="$2"; shift 2
  command -v perf >/dev/null || return 0
  local out="$work/logs/perf-$tag-$server.txt" line
  perf stat -x, -e context-switches -p "${PID[$server]}" -o "$out" &
  local perf_pid=$!
  sleep 0.2
  line="$("$LOADGEN" handshake --tag "$tag" --addr "127.0.0.1:${PORT[$server]}" --label "$server" \
    --warmup 0 "$@" 2>>"$work/logs/loadgen.log")" || true
  kill -INT "$perf_pid" 2>/dev/null || true
  wait "$perf_pid" 2>/dev/null || true
  python3 - "$line" "$out" >>"$results" <<'EOF' || true
import json, sys
run = json.loads(sys.argv[1])
switches = [int(l.split(",")[0]) for l in open(sys.argv[2])
            if "context-switches" in l and l.split(",")[0].isdigit()]
# perf counts from before the first connection to after the last, so
# divide by every connection made, not only those in the window.
if switches and run.get("count"):
    print(json.dumps({"mode": "switches", "tag": run["tag"], "server": run["server"],
                      "connections": run["count"],
                      "switches_per_conn": switches[0] / run["count"]}))
EOF
}

# -------------------------------------------------------------------- smoke
if [[ $smoke == 1 ]]; then
  : >"$results"
  log "smoke: loadgen against sslserver_echo"
  start_server sslserver ecdsa --handshake-timeout 1000 --serve callback
  start_server sslserver-queue ecdsa --handshake-timeout 1000
  d=(--duration 0.5 --warmup 0.2)
  measure sslserver smoke-hs13 handshake "${d[@]}" --proto 1.3 --threads 2
  measure sslserver-queue smoke-hs13 handshake "${d[@]}" --proto 1.3 --threads 2
  measure sslserver-queue smoke-echo4 echo "${d[@]}" --conns 4 --verify-data
  measure sslserver smoke-hs13r handshake "${d[@]}" --proto 1.3 --threads 2 --resume
  measure sslserver smoke-hs12 handshake "${d[@]}" --proto 1.2 --threads 2
  measure sslserver smoke-hs12r handshake "${d[@]}" --proto 1.2 --threads 2 --resume
  measure sslserver smoke-echo1 echo "${d[@]}" --conns 1 --verify-data
  measure sslserver smoke-echo4 echo "${d[@]}" --conns 4 --verify-data
  measure sslserver smoke-lat latency "${d[@]}"
  measure sslserver smoke-idle idle --conns 50 --settle 0.3
  measure sslserver smoke-silent silent --conns 20 --timeout-ms 1000 --grace 3 --max-late-ms 1000
  measure "" smoke-floor floor-handshake --cert "$certs/ecdsa.pem" --key "$certs/ecdsa.key" "${d[@]}"
  start_server rustls-sockets ecdsa
  measure rustls-sockets smoke-socket-floor handshake "${d[@]}" --proto 1.3 --threads 2 --resume
  stop_all
  # Resumption must actually happen.
  if ! python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
bad = [r["tag"] for r in rows if r.get("resume") and r.get("resumed_fraction", 0) < 0.9]
if bad:
    print("run.sh: smoke: no session resumption in", ", ".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
  then failures=$((failures + 1)); fi
  log "smoke: $failures failure(s)"
  [[ $failures == 0 ]] && echo "smoke: 1 passed, 0 failed" || echo "smoke: 0 passed, 1 failed"
  exit $((failures > 0))
fi

# --------------------------------------------------------------------- full
: >"$results"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
d=(--duration "$duration" --warmup 0.5)
peers=(sslserver openssl qt)

if want handshake; then
  for cert in ecdsa rsa; do
    log "handshakes, $cert: starting servers"
    start_server sslserver "$cert" --serve callback
    for s in openssl qt tcp rustls-sockets; do start_server "$s" "$cert"; done
    if [[ $cert == ecdsa ]]; then
      start_server sslserver-query "$cert"
      start_server sslserver-queue "$cert"
    fi
    for proto in 1.3 1.2; do
      for resume in "" --resume; do
        tag="hs-$cert-$proto${resume:+-resumed}"
        log "$tag"
        for run in $(seq 1 "$runs"); do
          # Peers interleaved, so a change in machine load hits all of them.
          for s in "${peers[@]}"; do
            measure "$s" "$tag" handshake "${d[@]}" --proto "$proto" $resume
          done
          measure "" "$tag" floor-handshake --cert "$certs/$cert.pem" --key "$certs/$cert.key" \
            "${d[@]}" --proto "$proto" $resume
          measure rustls-sockets "$tag" handshake "${d[@]}" --proto "$proto" $resume
          if [[ $cert == ecdsa && $proto == 1.3 && -z $resume ]]; then
            measure sslserver-query "$tag-query" handshake "${d[@]}" --proto "$proto"
            measure sslserver-queue "$tag-queue" handshake "${d[@]}" --proto "$proto"
            measure tcp "hs-tcp" handshake "${d[@]}" --plain
          fi
        done
      done
    done
    if [[ $cert == ecdsa ]]; then
      log "context switches per connection (perf stat), ECDSA TLS 1.3 full"
      for s in sslserver sslserver-queue openssl; do
        count_switches "$s" cs-ecdsa-1.3 --duration "$duration" --proto 1.3
      done
    fi
    stop_all
  done
fi

if want scaling; then
  # Handshakes per second and server CPU per handshake as concurrent
  # clients grow (ECDSA, TLS 1.3, full).
  log "scaling: starting servers"
  start_server sslserver ecdsa --serve callback --backlog 1024
  start_server openssl ecdsa --backlog 1024
  for clients in 1 8 64 512; do
    log "scaling: $clients concurrent clients"
    for run in $(seq 1 "$runs"); do
      for s in sslserver openssl; do
        measure "$s" "scale-$clients" handshake "${d[@]}" --proto 1.3 --threads "$clients"
      done
    done
  done
  stop_all
fi

if want echo || want latency; then
  log "echo and latency: starting servers"
  for s in "${peers[@]}" tcp; do start_server "$s" ecdsa; done
  if want echo; then
    for conns in 1 8; do
      tag="echo-$conns"
      log "$tag"
      for run in $(seq 1 "$runs"); do
        for s in "${peers[@]}"; do measure "$s" "$tag" echo "${d[@]}" --conns "$conns"; done
        measure tcp "$tag" echo "${d[@]}" --conns "$conns" --plain
        [[ $conns == 1 ]] && measure "" "echo-floor" floor-echo --cert "$certs/ecdsa.pem" \
          --key "$certs/ecdsa.key" "${d[@]}"
      done
    done
  fi
  if want latency; then
    # Client and server share one core, so the figure is the path's cost,
    # not the scheduler's placement; the other core takes the rest.
    log "latency (pinned to CPU 1)"
    for run in $(seq 1 "$runs"); do
      for s in "${peers[@]}" tcp; do
        taskset -a -p -c 1 "${PID[$s]}" >/dev/null
        extra=(); [[ $s == tcp ]] && extra=(--plain)
        PREFIX=(taskset -c 1)
        measure "$s" lat-64 latency "${d[@]}" "${extra[@]}"
        PREFIX=()
        taskset -a -p -c 0-"$(($(nproc) - 1))" "${PID[$s]}" >/dev/null
      done
    done
  fi
  stop_all
fi

if want memory; then
  log "memory: rustls server connections alone, in memory"
  measure "" idle-floor floor-memory --cert "$certs/ecdsa.pem" --key "$certs/ecdsa.key" --conns 10000
  for n in 1000 10000; do
    for s in "${peers[@]}" tcp; do
      log "memory: $n idle connections, $s (fresh server)"
      start_server "$s" ecdsa
      extra=(); [[ $s == tcp ]] && extra=(--plain)
      # 3 s: longer than sslserver's 2 s idle timeout of its handshake
      # threads, so the figure is what idle connections hold, not the pool.
      measure "$s" "idle-$n" idle --conns "$n" --threads 4 --settle 3 --io-timeout 60 "${extra[@]}"
      stop_server "$s"
    done
  done
fi

if want deadline; then
  for s in "${peers[@]}"; do
    log "deadline: 1000 silent clients, $s (handshake timeout 2000 ms)"
    # Qt: maxPendingConnections also bounds handshakes in progress, and its
    # default (30) would keep most clients in the kernel's backlog. Every
    # server gets a 1024 listen backlog, and the clients connect 200 us
    # apart, so no SYN is dropped and the figure is the deadline's accuracy.
    extra=(); [[ $s == qt ]] && extra=(--max-pending 1100)
    start_server "$s" ecdsa --handshake-timeout 2000 --backlog 1024 "${extra[@]}"
    measure "$s" "silent-1000" silent --conns 1000 --timeout-ms 2000 --grace 10
    stop_server "$s"
  done
fi

if want eventloop; then
  # The same library two ways: a thread per connection with blocking calls
  # (sslserver_echo) and one thread with epoll and non-blocking sockets.
  evl=(sslserver sslserver-epoll)
  log "eventloop: echo and latency, threaded vs epoll"
  for s in "${evl[@]}"; do start_server "$s" ecdsa; done
  for run in $(seq 1 "$runs"); do
    for conns in 8 1000; do
      # 1,000 handshakes happen before the window: a longer warm-up.
      warm=0.5; [[ $conns -gt 8 ]] && warm=4
      for s in "${evl[@]}"; do
        measure "$s" "ev-echo-$conns" echo --duration "$duration" --warmup "$warm" --conns "$conns" \
          --io-timeout 60
      done
    done
    for s in "${evl[@]}"; do
      taskset -a -p -c 1 "${PID[$s]}" >/dev/null
      PREFIX=(taskset -c 1)
      measure "$s" ev-lat-64 latency "${d[@]}"
      PREFIX=()
      taskset -a -p -c 0-"$(($(nproc) - 1))" "${PID[$s]}" >/dev/null
    done
  done
  stop_all
  for s in "${evl[@]}"; do
    log "eventloop: 10000 idle connections, $s (fresh server)"
    start_server "$s" ecdsa
    measure "$s" ev-idle-10000 idle --conns 10000 --threads 4 --settle 3 --io-timeout 60
    stop_server "$s"
  done
fi

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
log "report"
sections=()
[[ $only == eventloop ]] && sections=(--sections eventloop)
python3 "$root/bench/report.py" --results "$results" --output "$output" \
  --duration "$duration" --runs "$runs" --load-before "$load_before" --load-after "$load_after" \
  --cargo-lock "$root/Cargo.lock" "${sections[@]}"
log "done: $failures failed measurement(s); raw results in $results"
exit $((failures > 0))
