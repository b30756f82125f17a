#!/usr/bin/env bash
# Install libsslserver for C/C++ consumers.
#
#   scripts/install.sh PREFIX [--release|--debug] [--no-build]
#
# Builds the crate with cargo (unless --no-build) and installs:
#   PREFIX/include/sslserver.h
#   PREFIX/lib/libsslserver.so.VERSION          the shared library (e.g. .so.0.2.0)
#   PREFIX/lib/libsslserver.so.0 -> .so.VERSION  its SONAME: what programs load
#   PREFIX/lib/libsslserver.so -> .so.0          what the linker finds for -lsslserver
#   PREFIX/lib/libsslserver.a
#   PREFIX/lib/pkgconfig/sslserver.pc
#   PREFIX/lib/cmake/SslServer/{SslServerConfig,SslServerConfigVersion,FindSslServer}.cmake
#
# Consumers then use `find_package(SslServer)` with -DCMAKE_PREFIX_PATH=PREFIX
# (config mode), or `pkg-config sslserver` with PKG_CONFIG_PATH=PREFIX/lib/pkgconfig.
# DESTDIR is honoured for staged installs (files go to $DESTDIR$PREFIX; the
# installed files still refer to PREFIX).
set -euo pipefail

usage() {
  echo "usage: $0 PREFIX [--release|--debug] [--no-build]" >&2
  exit 2
}

prefix=""
profile=release
build=1
for arg in "$@"; do
  case "$arg" in
    --release) profile=release ;;
    --debug) profile=debug ;;
    --no-build) build=0 ;;
    -h|--help) usage ;;
    -*) echo "unknown option: $arg" >&2; usage ;;
    *) [[ -z "$prefix" ]] || usage; prefix="$arg" ;;
  esac
done
[[ -n "$prefix" ]] || usage

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${DESTDIR:-}" ]]; then
  [[ "$prefix" == /* ]] || { echo "install.sh: PREFIX must be absolute when DESTDIR is set" >&2; exit 2; }
else
  mkdir -p "$prefix"
  prefix="$(cd "$prefix" && pwd)"
fi

if [[ $build == 1 ]]; then
  if [[ $profile == release ]]; then
    (cd "$root" && cargo build --release --lib)
  else
    (cd "$root" && cargo build --lib)
  fi
fi

target_dir="${CARGO_TARGET_DIR:-$root/target}/$profile"
header="$root/include/sslserver.h"
shared="$target_dir/libsslserver.so"
static="$target_dir/libsslserver.a"
for f in "$header" "$shared" "$static"; do
  [[ -f "$f" ]] || { echo "install.sh: missing $f (build the crate first)" >&2; exit 1; }
done

# Version: the header's define, else Cargo.toml's [package] version.
version="$(sed -n 's/^#[[:space:]]*define[[:space:]]\{1,\}SSLSERVER_VERSION\(_STRING\)\{0,1\}[[:space:]]\{1,\}"\([^"]*\)".*/\2/p' "$header" | head -n1)"
if [[ -z "$version" ]]; then
  version="$(sed -n 's/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -n1)"
fi
[[ -n "$version" ]] || { echo "install.sh: cannot determine the version" >&2; exit 1; }

dest="${DESTDIR:-}$prefix"
libdir="$dest/lib"
install -d "$dest/include" "$libdir" "$libdir/pkgconfig" "$libdir/cmake/SslServer"

install -m 644 "$header" "$dest/include/sslserver.h"
install -m 644 "$static" "$libdir/libsslserver.a"

# Shared library: the usual libfoo.so.X.Y.Z <- libfoo.so.X <- libfoo.so layout.
# The SONAME (set by build.rs) is read back from the library, so this script
# never disagrees with what programs linked against it will ask the loader for.
soname=""
if command -v readelf >/dev/null 2>&1; then
  soname="$(readelf -d "$shared" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')"
elif command -v objdump >/dev/null 2>&1; then
  soname="$(objdump -p "$shared" | awk '$1 == "SONAME" { print $2 }')"
else
  echo "install.sh: need readelf or objdump (binutils) to read the SONAME" >&2
  exit 1
fi
[[ "$soname" =~ ^libsslserver\.so\.([0-9]+)$ ]] ||
  { echo "install.sh: $shared has SONAME '$soname', expected libsslserver.so.N (rebuild it)" >&2; exit 1; }
soversion="${BASH_REMATCH[1]}"
real="libsslserver.so.$version"
rm -f "$libdir"/libsslserver.so "$libdir"/libsslserver.so.*
install -m 755 "$shared" "$libdir/$real"
ln -s "$real" "$libdir/$soname"
ln -s "$soname" "$libdir/libsslserver.so"

# pkg-config. -lsslserver finds the libsslserver.so link; a program linked
# with it records the SONAME (libsslserver.so.N) and loads the versioned file
# through that link. Libs.private lists what the static library needs from the
# system (`rustc --print native-static-libs`); `pkg-config --static` adds them.
cat > "$libdir/pkgconfig/sslserver.pc" <<EOF
prefix=$prefix
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include

Name: sslserver
Description: TLS server library with QSslServer semantics (C ABI of the sslserver crate)
Version: $version
Libs: -L\${libdir} -lsslserver
Libs.private: -lpthread -ldl -lm -lrt
Cflags: -I\${includedir}
EOF
chmod 644 "$libdir/pkgconfig/sslserver.pc"

install -m 644 "$root/cmake/FindSslServer.cmake" "$root/cmake/SslServerConfig.cmake" \
  "$libdir/cmake/SslServer/"
sizeof_void_p="$(getconf LONG_BIT 2>/dev/null || echo 64)"
sizeof_void_p=$((sizeof_void_p / 8))
sed -e "s/@SSLSERVER_VERSION@/$version/g" -e "s/@SSLSERVER_SIZEOF_VOID_P@/$sizeof_void_p/g" \
  -e "s/@SSLSERVER_SOVERSION@/$soversion/g" \
  "$root/cmake/SslServerConfigVersion.cmake.in" > "$libdir/cmake/SslServer/SslServerConfigVersion.cmake"
chmod 644 "$libdir/cmake/SslServer/SslServerConfigVersion.cmake"

echo "installed sslserver $version ($profile) into ${DESTDIR:-}$prefix"
if [[ -z "${DESTDIR:-}" ]]; then
  echo "programs load $soname from $prefix/lib: run ldconfig (as root) for a system directory," \
    "or link with -Wl,-rpath,$prefix/lib"
fi
