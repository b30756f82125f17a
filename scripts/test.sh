#!/usr/bin/env bash
# The project's test command (the README's):
#
#   bash scripts/test.sh            everything a contributor needs (< 8 min on
#                                   a fresh 2-core machine)
#   bash scripts/test.sh --full     the same, then scripts/smoke.sh (the
#                                   fuzz and benchmark smoke runs that CI,
#                                   .ci/run, adds after this command)
#
#   1. build once, in the dev profile: `cargo build --lib` (libsslserver.so
#      and .a, which test builds do not produce), then
#      `cargo test --all-targets --no-run` (every test binary);
#   2. then, side by side (each mostly waits on sockets and child processes):
#        a. cargo test --all-targets, cargo test --doc (nothing rebuilt)
#        b. c_examples built plain (build/c) and with ASan+UBSan
#           (build/c-asan) against that same library, the ctest suite in
#           each, then scripts/install_test.sh on it;
#   3. --full: scripts/smoke.sh (fuzz targets 5 s each, installing
#      cargo-fuzz when missing; the benchmark smoke run).
# Installs cmake and haproxy first if they are missing. Prints how long each
# step took and exits non-zero if any step failed (the others still run).
# SSLSERVER_SKIP_CARGO_TEST=1 skips step 2a (for iterating on the C side).
set -euo pipefail

full=0
case "${1:-}" in
  "") ;;
  --full) full=1 ;;
  *) echo "usage: $0 [--full]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export SSLSERVER_REPO_DIR="$root"
# shellcheck source=scripts/ensure_cmake.sh
source "$root/scripts/ensure_cmake.sh"

jobs="$(nproc 2>/dev/null || echo 2)"
t0=$SECONDS
mkdir -p build/test-logs
echo '*' > build/.gitignore    # keep build products out of git
failed=()
timings=()

# Runs a named step, recording its duration and (without stopping) failure.
step() { # name command...
  local name="$1" start=$SECONDS rc=0
  shift
  printf '\n==> %s  [at %ds]\n' "$name" $((SECONDS - t0))
  "$@" || rc=$?
  timings+=("$(printf '%5ds  %s%s' $((SECONDS - start)) "$name" "$([[ $rc == 0 ]] || echo '  FAILED')")")
  ((rc == 0)) || failed+=("$name")
  return 0
}

summary() {
  printf '\n==> timings (total %ds)\n' $((SECONDS - t0))
  printf '%s\n' "${timings[@]}"
  if ((${#failed[@]})); then
    printf '\n==> FAILED: %s\n' "$(IFS=,; echo "${failed[*]}")"
    exit 1
  fi
  printf '\n==> all tests passed\n'
}

# The fleet ctest cases put HAProxy (Debian's package) in front of
# echo_server; like cmake, it is installed when missing.
ensure_haproxy() {
  export PATH="$PATH:/usr/sbin"
  command -v haproxy >/dev/null 2>&1 && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "haproxy not found; installing it with apt-get" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; } >&2 || true
  fi
  command -v haproxy >/dev/null 2>&1 && return 0
  echo "haproxy is missing and cannot be installed here: apt-get install haproxy (as root)" >&2
  return 1
}

step "ensure cmake" ensure_cmake
step "ensure haproxy" ensure_haproxy

# The C side needs the shared and static libraries, which only a library
# build makes; the test build links the rlib, and (with the dev-dependencies'
# features) compiles the crate once more anyway.
step "build: cargo build --lib" cargo build --lib
step "build: cargo test --all-targets --no-run" cargo test --all-targets --no-run
lib_dir="${CARGO_TARGET_DIR:-$root/target}/debug"
if [[ ! -f "$lib_dir/libsslserver.so" || ! -f "$lib_dir/libsslserver.a" ]]; then
  failed+=("cargo did not build $lib_dir/libsslserver.{so,a}")
fi
# Nothing below is worth running against a stale or missing library.
((${#failed[@]} == 0)) || summary

# The C side uses the debug library cargo just built: no second (release)
# build of the library and aws-lc. The examples are small; ASan finds the same
# misuse either way.
c_suite() { # build-dir cmake-args...
  local dir="$1"
  shift
  cmake -S c_examples -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSslServer_CARGO_PROFILE=debug "$@" &&
    cmake --build "$dir" -j "$jobs" &&
    (cd "$dir" && ctest --output-on-failure -j "$jobs")
}
c_side() {
  step "C examples + ctest, plain (build/c)" c_suite build/c -DSSLSERVER_SANITIZE=OFF
  step "C examples + ctest, ASan+UBSan (build/c-asan)" c_suite build/c-asan -DSSLSERVER_SANITIZE=ON
  step "install test (scripts/install_test.sh)" scripts/install_test.sh --debug --no-build
  # Hand the results to the parent shell.
  printf '%s\n' "${timings[@]}" > build/test-logs/c-side.timings
  printf '%s\n' "${failed[@]}" > build/test-logs/c-side.failed
}

# The C side runs in the background with its output in a log (printed when it
# is done), the cargo tests in the foreground.
timings_before=("${timings[@]}")
failed_before=("${failed[@]}")
timings=()
failed=()
c_log=build/test-logs/c-side.log
rm -f build/test-logs/c-side.*
printf '\n==> C examples, ctest and install test in the background (log: %s)\n' "$c_log"
c_side > "$c_log" 2>&1 &
c_pid=$!

if [[ "${SSLSERVER_SKIP_CARGO_TEST:-0}" == 1 ]]; then
  echo "cargo tests skipped (SSLSERVER_SKIP_CARGO_TEST=1)"
else
  step "cargo test --all-targets" cargo test --all-targets
  step "cargo test --doc" cargo test --doc
fi

wait "$c_pid" || true
printf '\n==> output of the C side (%s)\n' "$c_log"
cat "$c_log"
mapfile -t c_timings < build/test-logs/c-side.timings 2>/dev/null || c_timings=("    ?  C side did not report")
mapfile -t c_failed < build/test-logs/c-side.failed 2>/dev/null || c_failed=("C side")
timings=("${timings_before[@]}" "${c_timings[@]}" "${timings[@]}")
failed=("${failed_before[@]}" "${failed[@]}")
for f in "${c_failed[@]}"; do
  [[ -z "$f" ]] || failed+=("$f")
done

if ((full)); then
  step "fuzz and benchmark smoke (scripts/smoke.sh)" scripts/smoke.sh
fi

summary
