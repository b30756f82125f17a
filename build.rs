//! Generates `include/sslserver.h` from the Rust sources with cbindgen.
//!
//! cbindgen prefixes enum variants with their type's name; where the C
//! contract's prefix differs (SSLSERVER_EVENT_*, SSLSERVER_ALERT_*, ...), the
//! table below renames the prefix.

use std::path::Path;

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
    let path = Path::new(&crate_dir).join("include").join("sslserver.h");
    // Rewrite only on change, so the header's timestamp means something.
    if std::fs::read_to_string(&path).ok().as_deref() != Some(header.as_str()) {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create include/");
        std::fs::write(&path, header).expect("write include/sslserver.h");
    }
}
