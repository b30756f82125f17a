#!/usr/bin/env bash
# Regenerates the checked-in C header from the Rust sources.
#
#   scripts/gen_header.sh           update include/sslserver.h
#   scripts/gen_header.sh --check   fail (exit 1, with a diff) if it is stale
#
# build.rs renders the header into cargo's OUT_DIR on every build; this script
# builds the library, asks cargo where that OUT_DIR is, and copies the header
# into include/. Run it after changing anything exported and commit the result.
set -euo pipefail

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# The last build-script-executed message for this package names its OUT_DIR.
out_dir="$(cargo build --lib --message-format=json-render-diagnostics |
  python3 -c '
import json, sys
out = ""
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "build-script-executed" and "#sslserver@" in msg.get("package_id", ""):
        out = msg["out_dir"]
print(out)
')"
generated="$out_dir/sslserver.h"
[[ -n "$out_dir" && -f "$generated" ]] || { echo "gen_header.sh: cargo did not report the header" >&2; exit 1; }

checked_in="include/sslserver.h"
if cmp -s "$generated" "$checked_in"; then
  echo "$checked_in is up to date"
  exit 0
fi
if [[ $check == 1 ]]; then
  diff -u "$checked_in" "$generated" || true
  echo "$checked_in is stale: run scripts/gen_header.sh and commit it" >&2
  exit 1
fi
mkdir -p include
cp "$generated" "$checked_in"
echo "updated $checked_in"
