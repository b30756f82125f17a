#!/usr/bin/env bash
# Soak run (not part of the tests; see docs/hostile.md):
#
#   scripts/soak.sh [SECONDS]        default 180
#
# Builds bench/soak (release), starts its soak-server (the library on
# 127.0.0.1, echo thread per connection, handshake timeout 2 s) and runs
# soak-client against it for SECONDS: mixed good clients (handshake, echo
# check, close_notify) and bad ones (resets, silent, partial and drip-fed
# ClientHellos, garbage, plaintext, TLS 1.0 hellos). Samples the server's
# RSS, thread count and open descriptors every SOAK_INTERVAL seconds
# (default 5), prints the samples, and fails if
#   - any good client failed,
#   - RSS grows: the mean of the last half of the loaded samples (after a
#     20% warm-up) exceeds the first half's by more than 10% + 2 MiB,
#   - threads or descriptors do not return to their idle baseline within
#     20 s after the clients stop,
#   - the server does not exit cleanly when told to.
# Environment: SOAK_INTERVAL, SOAK_WORKERS (client threads, default 16),
# SOAK_HANDSHAKE_TIMEOUT_MS (default 2000: on a starved 2-core machine a good
# TLS 1.3 client can take over 1 s, and is then cut after it thinks it is
# done), CARGO_TARGET_DIR (default bench/soak/target).
# At the end the server prints how it saw connections end (events and the
# echo threads' reasons), to diagnose a failure.
# Traffic goes to 127.0.0.1 only, and stops after SECONDS.
set -euo pipefail

seconds="${1:-180}"
interval="${SOAK_INTERVAL:-5}"
workers="${SOAK_WORKERS:-16}"
handshake_timeout="${SOAK_HANDSHAKE_TIMEOUT_MS:-2000}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/bench/soak/target}"

echo "==> building bench/soak"
cargo build --release --quiet --manifest-path "$root/bench/soak/Cargo.toml"
bin="$CARGO_TARGET_DIR/release"

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  exec 3>&- 2>/dev/null || true
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# The server runs until its standard input (this fifo) closes.
mkfifo "$tmp/stdin"
exec 3<>"$tmp/stdin"
# (fd 3, the writer, stays with this script only.)
"$bin/soak-server" "$handshake_timeout" <"$tmp/stdin" >"$tmp/server.out" 2>"$tmp/server.err" 3>&- &
server_pid=$!
for _ in $(seq 100); do
  grep -q "CERTIFICATE ENDS" "$tmp/server.out" 2>/dev/null && break
  sleep 0.1
done
addr="$(sed -n 's/^listening on //p' "$tmp/server.out")"
[[ -n "$addr" ]] || { echo "the server did not start" >&2; cat "$tmp/server.err" >&2; exit 1; }
sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$tmp/server.out" >"$tmp/ca.pem"
echo "==> server pid $server_pid on $addr; clients for ${seconds}s with $workers workers"

sample() { # phase elapsed
  local rss threads fds
  rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status")"
  threads="$(awk '/^Threads:/ {print $2}' "/proc/$server_pid/status")"
  fds="$(find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
  printf '%-6s %7s %9s %8s %5s\n' "$1" "$2" "$rss" "$threads" "$fds" | tee -a "$tmp/samples"
}

printf '%-6s %7s %9s %8s %5s\n' phase t_s rss_kib threads fds
sleep 1
sample idle 0
read -r _ _ base_rss base_threads base_fds < <(tail -n1 "$tmp/samples")

start=$SECONDS
"$bin/soak-client" "$addr" "$tmp/ca.pem" "$seconds" "$workers" >"$tmp/client.out" 2>&1 3>&- &
client_pid=$!
while kill -0 "$client_pid" 2>/dev/null; do
  sleep "$interval"
  kill -0 "$client_pid" 2>/dev/null && sample load $((SECONDS - start))
done
client_rc=0
wait "$client_pid" || client_rc=$?

# After the load: threads and descriptors back to the idle baseline.
settled=no
for _ in $(seq 40); do
  sleep 0.5
  read -r threads fds < <(awk '/^Threads:/ {print $2}' "/proc/$server_pid/status" | tr '\n' ' '; find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
  if ((threads <= base_threads && fds <= base_fds)); then
    settled=yes
    break
  fi
done
sample after $((SECONDS - start))

exec 3>&-
server_rc=0
if timeout 20 tail --pid="$server_pid" -f /dev/null; then
  wait "$server_pid" || server_rc=$?
else
  echo "the server did not exit within 20 s after its input closed" >&2
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_rc=1
fi
server_pid=""

echo
echo "==> clients"
cat "$tmp/client.out"
echo
echo "==> how the server saw them end"
cat "$tmp/server.err"
echo
echo "==> verdict"
fail=0
awk -v base="$base_rss" '
  $1 == "load" { n++; t[n] = $2; r[n] = $3; th[n] = $4; fd[n] = $5 }
  END {
    if (n < 4) { print "too few samples for a trend (" n "); run longer"; exit 2 }
    w = int(n / 5); m = n - w; h = int(m / 2)
    for (i = w + 1; i <= w + h; i++) { a += r[i] } a /= h
    for (i = w + h + 1; i <= n; i++) { b += r[i] } b /= (n - w - h)
    # least-squares slope over the loaded samples after the warm-up
    for (i = w + 1; i <= n; i++) { sx += t[i]; sy += r[i]; k++ }
    mx = sx / k; my = sy / k
    for (i = w + 1; i <= n; i++) { num += (t[i] - mx) * (r[i] - my); den += (t[i] - mx) ^ 2 }
    slope = den > 0 ? num / den * 60 : 0
    for (i = 1; i <= n; i++) { if (r[i] > maxr) maxr = r[i]; if (th[i] > maxt) maxt = th[i]; if (fd[i] > maxf) maxf = fd[i] }
    printf "RSS idle %d KiB; loaded: first half mean %.0f KiB, second half mean %.0f KiB (%+.1f%%), slope %+.0f KiB/min, max %d KiB\n", base, a, b, (b - a) * 100 / a, slope, maxr
    printf "peak threads %d, peak descriptors %d\n", maxt, maxf
    if (b > a * 1.10 + 2048) { print "FAIL: RSS grows"; exit 1 }
    print "RSS: no growth trend"
  }' "$tmp/samples" || fail=1
echo "threads/descriptors back to idle ($base_threads threads, $base_fds fds) after the load: $settled"
[[ $settled == yes ]] || fail=1
echo "client exit status: $client_rc; server exit status: $server_rc"
((client_rc == 0 && server_rc == 0)) || fail=1
if ((fail)); then
  echo "SOAK FAILED"
  exit 1
fi
echo "SOAK PASSED"
