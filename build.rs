//! Build script: gives the shared library its SONAME, and renders the C
//! header into `OUT_DIR` (never into the source tree).
//!
//! `scripts/gen_header.sh` copies `$OUT_DIR/sslserver.h` to the checked-in
//! `include/sslserver.h`; `scripts/gen_header.sh --check` fails when the
//! checked-in copy is stale (CI runs it).
//!
//! cbindgen prefixes enum variants with their type's name; where the C
//! contract's prefix differs (SSLSERVER_EVENT_*, SSLSERVER_ALERT_*, ...), the
//! table below renames the prefix.

use std::path::Path;

/// The ABI generation in the SONAME (`libsslserver.so.0`). The C API only
/// grows within a generation (functions and enum values are added, never
/// renamed, removed or changed), so every 0.x release is a drop-in
/// replacement for an older one and keeps `.so.0`. A change that breaks
/// existing callers must raise this number; `scripts/install.sh` and the
/// CMake version check read it back from the built library.
const SOVERSION: &str = "0";

const PREFIX_RENAMES: &[(&str, &str)] = &[
    ("SSLSERVER_EVENT_KIND_", "SSLSERVER_EVENT_"),
    ("SSLSERVER_ALERT_TYPE_", "SSLSERVER_ALERT_"),
    ("SSLSERVER_ALERT_LEVEL_", "SSLSERVER_ALERT_"),
    ("SSLSERVER_SSL_ERROR_CODE_", "SSLSERVER_SSL_ERROR_"),
    ("SSLSERVER_PEER_VERIFY_MODE_", "SSLSERVER_"),
];

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    set_soname();
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let header = render_header();
    let path = Path::new(&out_dir).join("sslserver.h");
    std::fs::write(&path, header).expect("write $OUT_DIR/sslserver.h");
}

/// ELF platforms record the SONAME, not the file name, in the programs that
/// link the library; without one, a later incompatible library would be
/// loaded silently and no distribution could package it.
fn set_soname() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let elf = !matches!(os.as_str(), "macos" | "ios" | "windows");
    if elf {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libsslserver.so.{SOVERSION}");
    }
}

fn render_header() -> String {
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let mut config = cbindgen::Config::from_file(Path::new(&crate_dir).join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let mut parts = version.split('.');
    let mut part = || parts.next().unwrap_or("0").to_string();
    let (major, minor, patch) = (part(), part(), part());
    // cbindgen.toml's own text (the sslsocket_mode enum) follows.
    let from_toml = config.after_includes.take().unwrap_or_default();
    config.after_includes = Some(format!(
        "\n#define SSLSERVER_VERSION \"{version}\"\n\
         #define SSLSERVER_VERSION_MAJOR {major}\n\
         #define SSLSERVER_VERSION_MINOR {minor}\n\
         #define SSLSERVER_VERSION_PATCH {patch}\n{from_toml}"
    ));
    let bindings = match cbindgen::generate_with_config(&crate_dir, config) {
        Ok(bindings) => bindings,
        Err(e) => panic!("cbindgen failed: {e}"),
    };
    let mut header = Vec::new();
    bindings.write(&mut header);
    let mut header = String::from_utf8(header).expect("cbindgen writes UTF-8");
    for (from, to) in PREFIX_RENAMES {
        header = header.replace(from, to);
    }
    // "TlsV1_2OrLater" comes out as TLS_V1_2OR_LATER; the contract says TLS_V1_2_OR_LATER.
    for digit in '0'..='9' {
        header = header.replace(&format!("{digit}OR_LATER"), &format!("{digit}_OR_LATER"));
    }
    // The mode enum is written by hand (cbindgen.toml says why); cbindgen
    // does not know the name is an enum tag.
    header = header.replace(
        "\nsslsocket_mode sslsocket_mode(",
        "\nenum sslsocket_mode sslsocket_mode(",
    );
    header
}
