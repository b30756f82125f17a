#!/usr/bin/env bash
# The smoke runs CI adds after the README's test command (scripts/test.sh):
#   1. scripts/fuzz.sh --quick: every fuzz target FUZZ_QUICK_SECONDS (default
#      5) seconds under AddressSanitizer; installs cargo-fuzz when missing
#      (first build ~10 min);
#   2. bench/run.sh --smoke: the load generator against the library's server
#      (installs openssl with apt-get if it is missing).
# Both run; exits non-zero if either failed. `bash scripts/test.sh --full`
# runs the tests and then this.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

failed=()
echo "==> fuzz smoke (scripts/fuzz.sh --quick)"
FUZZ_QUICK_SECONDS="${FUZZ_QUICK_SECONDS:-5}" scripts/fuzz.sh --quick || failed+=("fuzz smoke")
echo "==> benchmark smoke (bench/run.sh --smoke)"
bench/run.sh --smoke || failed+=("benchmark smoke")

if ((${#failed[@]})); then
  echo "==> FAILED: $(IFS=,; echo "${failed[*]}")"
  exit 1
fi
echo "==> smoke runs passed"
