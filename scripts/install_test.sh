#!/usr/bin/env bash
# The install test: what a packager and a C user get from scripts/install.sh.
#
#   scripts/install_test.sh [--release|--debug] [--no-build]
#
# Installs into a temporary prefix and checks
#   - the file layout: libsslserver.so -> libsslserver.so.0 -> libsslserver.so.VERSION,
#     the SONAME recorded in the library (readelf -d), the header, the .a,
#     pkg-config and CMake files, none of which refer to this repository;
#   - a staged install (DESTDIR) refers to the final prefix, not the stage;
#   - tests/cmake_consumer, copied out of the repository and built with
#     find_package(SslServer) against the prefix (shared and static): CMake
#     picks the versioned file, the program records the SONAME, and it runs
#     with an empty environment, loading the library from the prefix;
#   - find_package(SslServer 99) is rejected;
#   - the same consumer built with pkg-config (shared), and statically with
#     the archive plus pkg-config's Libs.private.
# scripts/test.sh runs it with --debug --no-build on the library it built for
# the cargo tests. Exits non-zero on the first failure.
set -euo pipefail

profile=release
build_flag=""
for arg in "$@"; do
  case "$arg" in
    --release) profile=release ;;
    --debug) profile=debug ;;
    --no-build) build_flag=--no-build ;;
    *) echo "usage: $0 [--release|--debug] [--no-build]" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export SSLSERVER_REPO_DIR="$root"
# shellcheck source=scripts/ensure_cmake.sh
source "$root/scripts/ensure_cmake.sh"
ensure_cmake

fail() { echo "FAIL: $*" >&2; exit 1; }
section() { printf '\n--- %s\n' "$*"; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
version="$(sed -n 's/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)"
soname="libsslserver.so.${version%%.*}"
real="libsslserver.so.$version"

section "install ($profile) into a temporary prefix"
scripts/install.sh "$prefix" "--$profile" $build_flag
(cd "$prefix" && find . | sort)

section "layout and SONAME"
lib="$prefix/lib"
[[ -f "$lib/$real" && ! -L "$lib/$real" ]] || fail "$lib/$real is not a file"
[[ "$(readlink "$lib/$soname")" == "$real" ]] || fail "$soname does not link to $real"
[[ "$(readlink "$lib/libsslserver.so")" == "$soname" ]] || fail "libsslserver.so does not link to $soname"
recorded="$(readelf -d "$lib/$real" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')"
[[ "$recorded" == "$soname" ]] || fail "SONAME is '$recorded', expected $soname"
echo "SONAME $recorded; libsslserver.so -> $soname -> $real"
for f in include/sslserver.h lib/libsslserver.a lib/pkgconfig/sslserver.pc \
  lib/cmake/SslServer/SslServerConfig.cmake lib/cmake/SslServer/SslServerConfigVersion.cmake; do
  [[ -f "$prefix/$f" ]] || fail "$f was not installed"
done
grep -q "^#define SSLSERVER_VERSION \"$version\"" "$prefix/include/sslserver.h" ||
  fail "the installed header is not version $version"
if grep -rl "$root" "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake"; then
  fail "installed files refer to the build tree $root"
fi

section "staged install (DESTDIR)"
DESTDIR="$tmp/stage" scripts/install.sh /opt/sslserver "--$profile" --no-build >/dev/null
[[ -L "$tmp/stage/opt/sslserver/lib/$soname" ]] || fail "the stage has no $soname"
grep -qx "prefix=/opt/sslserver" "$tmp/stage/opt/sslserver/lib/pkgconfig/sslserver.pc" ||
  fail "the staged sslserver.pc does not name the final prefix"
echo "ok"

# The consumer is built from a copy, so nothing resolves into the repository.
cp -r tests/cmake_consumer "$tmp/src"

# Runs a consumer with an empty environment; checks what it prints and where
# it loads libsslserver from (yes: the prefix's SONAME link, no: not at all).
run_consumer() { # binary shared(yes/no)
  local out needed
  out="$(env -i PATH=/usr/bin:/bin "$1")" || fail "$1 exited with $?"
  echo "$out"
  [[ "$out" =~ ^sslserver\ $version\ listening\ on\ port\ [1-9][0-9]*$ ]] ||
    fail "$1 printed '$out'"
  needed="$(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(libsslserver[^]]*\)\].*/\1/p')"
  if [[ $2 == yes ]]; then
    [[ "$needed" == "$soname" ]] || fail "$1 needs '$needed', expected the SONAME $soname"
    # Captured first: `ldd | grep -q` under pipefail fails at random when
    # grep stops reading early and ldd dies of SIGPIPE.
    local loaded
    loaded="$(env -i PATH=/usr/bin:/bin ldd "$1")"
    [[ "$loaded" == *"$soname => $lib/$soname "* ]] ||
      { echo "$loaded"; fail "$1 does not load $lib/$soname"; }
  else
    [[ -z "$needed" ]] || fail "$1 links libsslserver dynamically"
  fi
}

for kind in shared static; do
  static=OFF
  [[ $kind == static ]] && static=ON
  section "find_package(SslServer) consumer, $kind library"
  cmake -S "$tmp/src" -B "$tmp/consumer-$kind" -DCMAKE_PREFIX_PATH="$prefix" \
    -DSslServer_USE_STATIC_LIBS=$static | tee "$tmp/configure-$kind.log"
  want="$lib/$real"
  [[ $kind == static ]] && want="$lib/libsslserver.a"
  grep -qF "found SslServer $version: $want" "$tmp/configure-$kind.log" ||
    fail "CMake did not pick $want"
  cmake --build "$tmp/consumer-$kind"
  run_consumer "$tmp/consumer-$kind/consumer" "$([[ $kind == shared ]] && echo yes || echo no)"
done

section "find_package(SslServer 99) must fail"
if cmake -S "$tmp/src" -B "$tmp/consumer-v99" -DCMAKE_PREFIX_PATH="$prefix" \
  -DSSLSERVER_MIN_VERSION=99 >"$tmp/v99.log" 2>&1; then
  cat "$tmp/v99.log"
  fail "a request for version 99 was accepted"
fi
grep -q "SslServer" "$tmp/v99.log" || { cat "$tmp/v99.log"; fail "no message about SslServer"; }
echo "rejected as expected"

section "pkg-config consumers"
if ! command -v pkg-config >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "pkg-config not found; installing it with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config; } >&2 || true
fi
command -v pkg-config >/dev/null 2>&1 || fail "pkg-config is not installed (apt-get install pkg-config)"
export PKG_CONFIG_PATH="$lib/pkgconfig"
[[ "$(pkg-config --modversion sslserver)" == "$version" ]] || fail "pkg-config reports another version"
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror -o "$tmp/consumer-pc" "$tmp/src/consumer.c" \
  $(pkg-config --cflags --libs sslserver) -Wl,-rpath,"$lib"
run_consumer "$tmp/consumer-pc" yes
# Static: the archive by name, plus what Libs.private says it needs.
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror -o "$tmp/consumer-pc-static" "$tmp/src/consumer.c" \
  $(pkg-config --cflags sslserver) "$lib/libsslserver.a" \
  $(pkg-config --static --libs-only-l sslserver | sed 's/-lsslserver//')
run_consumer "$tmp/consumer-pc-static" no

section "install test passed"
