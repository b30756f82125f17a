#!/usr/bin/env bash
# The README demo: builds the library and c_examples/echo_server, then runs it
# on a freshly generated self-signed certificate.
#
#   scripts/demo.sh [echo_server options...]     e.g. scripts/demo.sh --http --port 8443
#
# Without --cert/--write-cert the generated certificate is written to
# build/demo/cert.pem, for clients' -CAfile / --cacert.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export SSLSERVER_REPO_DIR="$root"
# shellcheck source=scripts/ensure_cmake.sh
source "$root/scripts/ensure_cmake.sh"
ensure_cmake

mkdir -p build
echo '*' > build/.gitignore
cargo build --release >&2
cmake -S c_examples -B build/demo -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build/demo --target echo_server >&2

args=("$@")
case " $* " in
  *" --cert "*|*" --write-cert "*) ;;
  *)
    args+=(--write-cert "$root/build/demo/cert.pem")
    echo "certificate: $root/build/demo/cert.pem  (openssl s_client -CAfile ..., curl --cacert ...)" >&2
    ;;
esac
exec "$root/build/demo/echo_server" "${args[@]}"
