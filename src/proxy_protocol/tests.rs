//! The parser against every form of header the specification allows and
//! every way one can be wrong.

use super::*;

fn v1(line: &str) -> Result<Parsed, Malformed> {
    parse(line.as_bytes())
}

fn complete(parsed: Result<Parsed, Malformed>) -> (Option<SocketAddr>, usize) {
    match parsed {
        Ok(Parsed::Complete { header, len }) => (header.client, len),
        other => panic!("not a complete header: {other:?}"),
    }
}

fn refused(parsed: Result<Parsed, Malformed>) -> String {
    match parsed {
        Err(Malformed(text)) => text,
        other => panic!("accepted: {other:?}"),
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A version 2 header: command, family/transport byte, then `body`.
fn v2(version_command: u8, family_transport: u8, body: &[u8]) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.push(version_command);
    header.push(family_transport);
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    header.extend_from_slice(body);
    header
}

fn v2_tcp4_body(source: [u8; 4], source_port: u16) -> Vec<u8> {
    let mut body = source.to_vec();
    body.extend_from_slice(&[10, 0, 0, 1]);
    body.extend_from_slice(&source_port.to_be_bytes());
    body.extend_from_slice(&443u16.to_be_bytes());
    body
}

fn v2_tcp6_body(source: Ipv6Addr, source_port: u16) -> Vec<u8> {
    let mut body = source.octets().to_vec();
    body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&source_port.to_be_bytes());
    body.extend_from_slice(&443u16.to_be_bytes());
    body
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut record = vec![kind];
    record.extend_from_slice(&(value.len() as u16).to_be_bytes());
    record.extend_from_slice(value);
    record
}

#[test]
fn v1_tcp4_names_the_client_and_ends_at_the_crlf() {
    let line = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    let mut input = line.as_bytes().to_vec();
    input.extend_from_slice(&[0x16, 0x03, 0x01]);
    let (client, len) = complete(parse(&input));
    assert_eq!(client, Some(addr("192.168.0.1:56324")));
    assert_eq!(
        len,
        line.len(),
        "the bytes after the CRLF are not the header's"
    );
}

#[test]
fn v1_tcp6_names_the_client() {
    let line = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    let (client, len) = complete(v1(line));
    assert_eq!(client, Some(addr("[2001:db8::1]:65535")));
    assert_eq!(len, line.len());
    let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let (client, _) = complete(v1(&format!("PROXY TCP6 {full} {full} 1 2\r\n")));
    assert_eq!(client, Some(SocketAddr::new(full.parse().unwrap(), 1)));
}

/// HAProxy writes a TCP6 line when either side is IPv6, with an IPv4 side
/// (or an IPv4 client of a dual-stack `bind :::443 v4v6`) in the
/// IPv4-mapped form `inet_ntop` gives: "::ffff:203.0.113.7".
#[test]
fn v1_tcp6_accepts_the_ipv4_mapped_form_haproxy_sends() {
    let line = "PROXY TCP6 ::ffff:203.0.113.7 ::ffff:10.0.0.1 40000 443\r\n";
    let (client, len) = complete(v1(line));
    assert_eq!(client, Some(addr("[::ffff:203.0.113.7]:40000")));
    assert_eq!(len, line.len());
    let line = "PROXY TCP6 ::ffff:198.51.100.1 2001:db8::1 1 443\r\n";
    assert_eq!(complete(v1(line)).0, Some(addr("[::ffff:198.51.100.1]:1")));
    // The dotted part is as strict as a TCP4 address, and the whole still
    // 128 bits.
    for source in [
        "::ffff:01.2.3.4",
        "::ffff:1.2.3",
        "::ffff:256.2.3.4",
        "::ffff:1.2.3.4.5",
        "1:2:3:4:5:6:7:1.2.3.4",
    ] {
        let line = format!("PROXY TCP6 {source} ::1 1 2\r\n");
        assert!(refused(v1(&line)).contains("bad IPv6 address"), "{line:?}");
    }
}

#[test]
fn v1_unknown_keeps_the_transport_address_and_ignores_the_rest_of_the_line() {
    assert_eq!(complete(v1("PROXY UNKNOWN\r\n")), (None, 15));
    let worst = format!(
        "PROXY UNKNOWN {0} {0} 65535 65535\r\n",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    );
    assert_eq!(worst.len(), MAX_V1_LEN);
    assert_eq!(complete(v1(&worst)), (None, MAX_V1_LEN));
    assert_eq!(complete(v1("PROXY UNKNOWN whatever\r\n")).0, None);
}

#[test]
fn v1_longest_lines_are_accepted() {
    let tcp4 = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    assert_eq!(tcp4.len(), 56);
    assert_eq!(complete(v1(tcp4)).0, Some(addr("255.255.255.255:65535")));
}

#[test]
fn v1_is_incomplete_until_the_crlf() {
    let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    for end in 0..line.len() {
        assert_eq!(
            parse(&line[..end]),
            Ok(Parsed::Incomplete),
            "{end} bytes of a valid line"
        );
    }
}

#[test]
fn v1_without_crlf_within_107_bytes_is_refused() {
    let long = format!("PROXY UNKNOWN {}", "a".repeat(200));
    assert!(refused(v1(&long[..MAX_V1_LEN])).contains("no CRLF"));
    // 106 bytes then a CRLF: the line is 108 bytes long.
    let line = format!("{}\r\n", &long[..MAX_V1_LEN - 1]);
    assert!(refused(v1(&line)).contains("no CRLF"));
}

#[test]
fn v1_line_endings_other_than_crlf_are_refused() {
    assert!(refused(v1("PROXY UNKNOWN\n")).contains("LF without CR"));
    assert!(refused(v1("PROXY UNKNOWN\rX\n")).contains("CR without LF"));
    assert!(refused(v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r")).contains("LF without CR"));
}

#[test]
fn v1_syntax_errors_are_refused() {
    let bad = [
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",         // a field missing
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",     // one too many
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",      // two spaces
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",      // trailing space
        "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",      // two spaces after PROXY
        "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",       // lower case
        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",       // unknown protocol
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",       // not TCP
        "PROXY UNKNOWNX\r\n",                       // not UNKNOWN
        "PROXY \r\n",                               // nothing
        "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",      // a tab
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",   // port too large
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",   // port too large
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",      // leading zero
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",      // sign
        "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",      // sign
        "PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n",      // not a number
        "PROXY TCP4 1.2.3.4 5.6.7.8 000001 2\r\n",  // too many digits
        "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",     // octet too large
        "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",         // three octets
        "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",     // five octets
        "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",      // octal-looking octet
        "PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n",        // empty octet
        "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",           // IPv6 under TCP4
        "PROXY TCP4 1.2.3.4 ::1 1 2\r\n",           // destination of the wrong family
        "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",           // IPv4 under TCP6
        "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",      // a zone
        "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", // nine groups
        "PROXY TCP6 1::2::3 ::1 1 2\r\n",           // two double colons
        "PROXY TCP6 12345::1 ::1 1 2\r\n",          // a five-digit group
        "PROXY TCP6 [::1] ::1 1 2\r\n",             // brackets
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\0\r\n",     // a NUL
    ];
    for line in bad {
        let text = refused(v1(line));
        assert!(text.starts_with("PROXY v1"), "{line:?}: {text}");
    }
    let non_ascii = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xc3\xa9\r\n";
    assert!(refused(parse(non_ascii)).contains("byte 0xc3"));
}

#[test]
fn anything_but_a_header_is_refused_at_its_first_byte() {
    // A TLS ClientHello, HTTP, SSH: nothing is waited for.
    for start in [&[0x16u8, 0x03, 0x01][..], b"G", b"SSH-2.0", b"\0"] {
        assert!(refused(parse(start)).contains("no PROXY protocol header"));
    }
    assert!(refused(parse(b"PROXX")).contains("bad version 1 prefix"));
    assert!(refused(parse(b"proxy ")).contains("no PROXY protocol header"));
    assert_eq!(parse(b""), Ok(Parsed::Incomplete));
    assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete));
}

#[test]
fn v2_tcp4_names_the_client() {
    let mut input = v2(0x21, 0x11, &v2_tcp4_body([203, 0, 113, 7], 50000));
    assert_eq!(input.len(), 28);
    input.extend_from_slice(&[0x16, 0x03, 0x01]);
    assert_eq!(
        complete(parse(&input)),
        (Some(addr("203.0.113.7:50000")), 28)
    );
}

#[test]
fn v2_tcp6_names_the_client() {
    let source: Ipv6Addr = "2001:db8::42".parse().unwrap();
    let input = v2(0x21, 0x21, &v2_tcp6_body(source, 1234));
    assert_eq!(
        complete(parse(&input)),
        (Some(SocketAddr::new(source.into(), 1234)), 52)
    );
}

#[test]
fn v2_local_keeps_the_transport_address_whatever_the_block_holds() {
    assert_eq!(complete(parse(&v2(0x20, 0x00, &[]))), (None, 16));
    // A LOCAL command may still carry addresses (and TLVs): skipped.
    let mut body = v2_tcp4_body([1, 2, 3, 4], 5);
    body.extend(tlv(0x04, b"pad"));
    let input = v2(0x20, 0x11, &body);
    assert_eq!(complete(parse(&input)), (None, input.len()));
    // The family is ignored: a sender may name the real one and send no
    // address, or send anything.
    assert_eq!(complete(parse(&v2(0x20, 0x11, &[]))), (None, 16));
    assert_eq!(complete(parse(&v2(0x20, 0xFF, &[1, 2, 3]))), (None, 19));
}

#[test]
fn v2_families_the_server_does_not_use_keep_the_transport_address() {
    // AF_UNSPEC (with or without an address block of its own), AF_UNIX
    // stream and datagram, UDP over IPv4 and IPv6.
    let cases: [(u8, usize); 6] = [
        (0x00, 0),
        (0x31, 216),
        (0x32, 216),
        (0x12, 12),
        (0x22, 36),
        (0x00, 40),
    ];
    for (family_transport, len) in cases {
        let input = v2(0x21, family_transport, &vec![7u8; len]);
        assert_eq!(
            complete(parse(&input)),
            (None, 16 + len),
            "0x{family_transport:02x}"
        );
    }
}

#[test]
fn v2_tlvs_are_skipped() {
    let mut body = v2_tcp4_body([198, 51, 100, 1], 4433);
    body.extend(tlv(0x01, b"h2"));
    body.extend(tlv(0x02, b"example.com"));
    body.extend(tlv(0x04, b""));
    body.extend(tlv(0x20, &[0x01, 0, 0, 0, 0]));
    body.extend(tlv(0xE0, &[0xAB; 300]));
    let input = v2(0x21, 0x11, &body);
    assert_eq!(
        complete(parse(&input)),
        (Some(addr("198.51.100.1:4433")), input.len())
    );
}

#[test]
fn v2_badly_framed_tlvs_are_refused() {
    let mut body = v2_tcp4_body([1, 2, 3, 4], 5);
    body.extend_from_slice(&[0x01, 0x00]);
    assert!(refused(parse(&v2(0x21, 0x11, &body))).contains("stray bytes"));

    let mut body = v2_tcp4_body([1, 2, 3, 4], 5);
    body.extend_from_slice(&[0x02, 0x00, 0x05, b'a', b'b']);
    assert!(refused(parse(&v2(0x21, 0x11, &body))).contains("runs past the header"));
}

#[test]
fn v2_is_incomplete_until_its_last_byte() {
    let mut body = v2_tcp4_body([1, 2, 3, 4], 5);
    body.extend(tlv(0x05, b"unique"));
    let input = v2(0x21, 0x11, &body);
    for end in 0..input.len() {
        assert_eq!(parse(&input[..end]), Ok(Parsed::Incomplete), "{end} bytes");
    }
    assert!(matches!(parse(&input), Ok(Parsed::Complete { .. })));
}

#[test]
fn v2_bad_signature_version_or_command_is_refused() {
    let good = v2(0x21, 0x11, &v2_tcp4_body([1, 2, 3, 4], 5));
    for position in 1..12 {
        let mut input = good.clone();
        input[position] ^= 0x40;
        assert!(
            refused(parse(&input)).contains("bad version 2 signature"),
            "signature byte {position}"
        );
        // Refused as soon as the wrong byte is there.
        assert!(refused(parse(&input[..=position])).contains("signature"));
    }
    for version_command in [0x11, 0x31, 0x01, 0xF1] {
        let mut input = good.clone();
        input[12] = version_command;
        assert!(refused(parse(&input)).contains("unsupported version"));
        assert!(refused(parse(&input[..13])).contains("unsupported version"));
    }
    for version_command in [0x22, 0x2F] {
        let mut input = good.clone();
        input[12] = version_command;
        assert!(refused(parse(&input)).contains("unknown command"));
    }
}

#[test]
fn v2_unknown_family_or_transport_is_refused() {
    for family_transport in [0x01, 0x02, 0x10, 0x13, 0x23, 0x30, 0x41, 0xFF] {
        let input = v2(0x21, family_transport, &[0u8; 216]);
        assert!(
            refused(parse(&input)).contains("unknown address family"),
            "0x{family_transport:02x}"
        );
    }
}

#[test]
fn v2_address_block_shorter_than_its_family_is_refused() {
    let body = v2_tcp4_body([1, 2, 3, 4], 5);
    assert!(refused(parse(&v2(0x21, 0x11, &body[..11]))).contains("needs 12"));
    assert!(refused(parse(&v2(0x21, 0x21, &[0u8; 35]))).contains("needs 36"));
    assert!(refused(parse(&v2(0x21, 0x31, &[0u8; 100]))).contains("needs 216"));
    // From its fixed part alone: the server does not wait for a body it
    // would refuse.
    let header = v2(0x21, 0x21, &[0u8; 5]);
    assert!(refused(parse(&header[..V2_FIXED_LEN])).contains("needs 36"));
}

#[test]
fn v2_longer_than_the_bound_is_refused_from_its_length_field() {
    let at_bound = v2(0x21, 0x00, &vec![0u8; MAX_HEADER_LEN - 16]);
    assert_eq!(complete(parse(&at_bound)), (None, MAX_HEADER_LEN));
    let over = v2(0x21, 0x00, &vec![0u8; MAX_HEADER_LEN - 15]);
    // Refused from the fixed part alone, before the body arrives.
    assert!(refused(parse(&over[..16])).contains("longer than"));
    let mut largest = V2_SIGNATURE.to_vec();
    largest.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
    assert!(refused(parse(&largest)).contains("65551-byte"));
}

#[test]
fn random_bytes_never_panic_and_a_valid_result_is_within_the_input() {
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let templates = [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
        v2(0x21, 0x11, &v2_tcp4_body([1, 2, 3, 4], 5)),
    ];
    for round in 0..20_000 {
        let mut input = templates[round % 2].clone();
        // Flip a few bytes and cut somewhere.
        for _ in 0..(next() % 4) {
            let i = (next() as usize) % input.len();
            input[i] = next() as u8;
        }
        input.truncate((next() as usize) % (input.len() + 1));
        if let Ok(Parsed::Complete { len, .. }) = parse(&input) {
            assert!(len <= input.len(), "{input:?}");
        }
    }
}
