# Sourced by scripts/test.sh and scripts/demo.sh: `ensure_cmake` makes cmake
# and ctest (>= 3.16) available on PATH, installing them if needed:
#   1. python3 -m pip install cmake        (then --user)
#   2. apt-get install cmake               (as root)
#   3. a private venv under build/         (for externally-managed Pythons)

_cmake_ok() {
  command -v cmake >/dev/null 2>&1 && command -v ctest >/dev/null 2>&1 || return 1
  local v
  v="$(cmake --version 2>/dev/null | sed -n 's/^cmake version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
  [[ -n "$v" ]] || return 1
  set -- $v
  (( $1 > 3 || ($1 == 3 && $2 >= 16) ))
}

# Puts the pip cmake package's bin directory first on PATH. The package
# knows where its binaries are; console-script shims (pyenv, ~/.local/bin)
# may not be on PATH or may need a rehash.
_cmake_from_python() { # python
  local dir
  dir="$("$1" -c 'import cmake, sys; sys.stdout.write(cmake.CMAKE_BIN_DIR)' 2>/dev/null)" || return 1
  [[ -x "$dir/cmake" ]] || return 1
  export PATH="$dir:$PATH"
}

ensure_cmake() {
  _cmake_ok && return 0
  echo "cmake >= 3.16 not found; installing it" >&2
  if command -v python3 >/dev/null 2>&1; then
    if _cmake_from_python python3 && _cmake_ok; then return 0; fi
    if python3 -m pip install --quiet cmake >&2 && _cmake_from_python python3 && _cmake_ok; then
      return 0
    fi
    if python3 -m pip install --quiet --user cmake >&2 && _cmake_from_python python3 && _cmake_ok; then
      return 0
    fi
  fi
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >&2 || true
    hash -r
    _cmake_ok && return 0
  fi
  if command -v python3 >/dev/null 2>&1; then
    local venv="${SSLSERVER_REPO_DIR:-.}/build/cmake-venv"
    if python3 -m venv "$venv" >&2 && "$venv/bin/python" -m pip install --quiet cmake >&2 &&
       _cmake_from_python "$venv/bin/python" && _cmake_ok; then
      return 0
    fi
  fi
  echo "error: could not install cmake (tried pip, apt-get and a venv)" >&2
  return 1
}
