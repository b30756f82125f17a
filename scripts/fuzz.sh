#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer + AddressSanitizer); see docs/hostile.md.
#
#   scripts/fuzz.sh --quick [TARGET...]        each target for FUZZ_QUICK_SECONDS (default 10) s, seed 1
#   scripts/fuzz.sh --long SECONDS [TARGET...] each target for SECONDS, by hand
#   scripts/fuzz.sh --list                     the targets
#
# Targets (fuzz/fuzz_targets, oracles in fuzz/src/harness.rs): the PEM and
# configuration loaders (certificate chain, private key with and without a
# passphrase, CA certificates, a whole config handed to a server), the
# server side of the handshake fed arbitrary client bytes over loopback
# (without and with client authentication), an established connection
# fed application data and forged records, the two parsers of peer bytes
# that run before any TLS (the PROXY protocol header, DTLS record framing),
# and a DTLS server fed datagrams after a valid cookie exchange.
#
# cargo-fuzz needs nightly features; on a stable toolchain this script sets
# RUSTC_BOOTSTRAP=1. It installs cargo-fuzz with `cargo install` if missing.
# Each run starts from the committed seeds (fuzz/corpus/TARGET) and crash
# inputs (fuzz/regressions/TARGET) and grows a working corpus under
# $CARGO_TARGET_DIR/corpus/TARGET (not committed). A crash stops the run
# with its input in fuzz/artifacts/TARGET/; copy the input to
# fuzz/regressions/TARGET/ so `cargo test --test fuzz_inputs` replays it.
# Exits non-zero if any target crashed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/fuzz/target}"
export RUSTC_BOOTSTRAP=1

# The [[bin]] targets of fuzz/Cargo.toml (not the package or the library).
all_targets() { awk '/^\[\[bin\]\]/ { bin = 1; next } /^\[/ { bin = 0 } bin && /^name = / { gsub(/"/, "", $3); print $3 }' Cargo.toml; }

mode="${1:---quick}"
extra=()
shift || true
case "$mode" in
  --list) all_targets; exit 0 ;;
  # A fixed seed, so the quick run in the test command is repeatable.
  --quick) seconds="${FUZZ_QUICK_SECONDS:-10}"; extra=(-seed=1) ;;
  --long)
    seconds="${1:?usage: scripts/fuzz.sh --long SECONDS [TARGET...]}"
    shift
    ;;
  *) echo "usage: scripts/fuzz.sh --quick|--long SECONDS|--list [TARGET...]" >&2; exit 2 ;;
esac
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(all_targets)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

echo "==> building the fuzz targets (release, AddressSanitizer)"
cargo fuzz build -O

failed=()
for target in "${targets[@]}"; do
  work="$CARGO_TARGET_DIR/corpus/$target"
  mkdir -p "$work" "corpus/$target" "regressions/$target" "artifacts/$target"
  echo "==> $target for ${seconds}s"
  log="$CARGO_TARGET_DIR/fuzz-$target.log"
  # Targets that start connection threads: a thread may still be ending
  # when libFuzzer checks an input for leaks, a false positive. Leaks over
  # time are the flood test's and the soak run's business.
  leaks=1
  [[ $target == handshake* || $target == post_handshake || $target == dtls_server ]] && leaks=0
  # The first corpus directory receives new inputs; the committed ones are read only.
  if cargo fuzz run -O "$target" "$work" "corpus/$target" "regressions/$target" -- \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -max_len=8192 \
    -detect_leaks="$leaks" -print_final_stats=1 "${extra[@]}" -artifact_prefix="artifacts/$target/" >"$log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|cov: ' "$log" |
      tail -n 4 | sed 's/^/    /'
  else
    echo "    CRASH in $target; last lines of $log:"
    grep -v '^#' "$log" | tail -n 40 | sed 's/^/    /'
    ls "artifacts/$target" | sed 's/^/    artifact: /'
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "==> fuzzing found crashes in: ${failed[*]}"
  exit 1
fi
echo "==> fuzzing: no crash in ${#targets[@]} targets (${seconds}s each)"
