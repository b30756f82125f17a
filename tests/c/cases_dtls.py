"""DTLS: c_examples/dtls_server against openssl s_client -dtls1_2, with a
pre-shared key and with a certificate."""
import re
import signal
import socket
import subprocess

from harness import Process, Server, case, check_sanitizers, expect, log

#
# c_examples/dtls_server logs to stdout: `listening on ADDRESS:PORT`, then
# `KIND PEER: description` per event. openssl s_client -trace prints the
# records it sends and receives to stdout, and copies the server's replies
# there too; those have no trailing newline, hence wait_for_text.

DTLS_PSK = "1a2b3c4d"


def dtls_server(ctx, *args, address="127.0.0.1", psk=True):
    key = ["--psk", DTLS_PSK] if psk else []
    return Server([ctx.exe("dtls_server"), "--address", address, "--port", "0", *key, *args],
                  name="dtls_server")


def dtls_certificate_server(ctx, psk=False):
    """dtls_server with the test PKI's server certificate (ECDSA P-256)."""
    return dtls_server(ctx, "--cert", ctx.cert("server.pem"), "--key", ctx.cert("server.key"),
                       psk=psk)


def dtls_certificate_client(ctx, port, *extra):
    """s_client over DTLS 1.2 without a PSK, verifying the server against the test CA."""
    return Process(["openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}",
                    "-CAfile", ctx.cert("ca.pem"), "-verify_return_error", *extra],
                   name="s_client", stdin=subprocess.PIPE)


def dtls_client(port, host="127.0.0.1", psk=DTLS_PSK):
    """s_client over DTLS 1.2 with a PSK; stdin stays open until closed."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return Process(["openssl", "s_client", "-dtls1_2", "-connect", target, "-psk", psk,
                    "-psk_identity", "ctest", "-trace"], name="s_client", stdin=subprocess.PIPE)


def dtls_peer(host):
    """A regex for a peer address in the server's event lines (the library's
    descriptions write IPv6 peers in brackets, [::1]:PORT)."""
    return rf"\[?{re.escape(host)}\]?" if ":" in host else re.escape(host)


def dtls_peer_port(srv, host="127.0.0.1"):
    """The client's port, from the server's HANDSHAKE_STARTED line (one client per case)."""
    m = srv.wait_for(rf"^HANDSHAKE_STARTED {dtls_peer(host)}:(\d+): ", stream="out")
    return int(m.group(1))


def dtls_send(c, data):
    c.proc.stdin.write(data)
    c.proc.stdin.flush()


def dtls_end_client(c):
    """EOF on stdin: s_client sends close_notify and exits 0."""
    c.proc.stdin.close()
    rc = c.finish()
    expect(rc == 0, f"s_client exited with {rc}")


def received_records(c):
    """The records s_client -trace reported as received, as text blocks."""
    with c.cond:
        out = c.raw["out"].decode("utf-8", "replace")
    # Not anchored: a reply without a newline can run into the next header.
    parts = re.split(r"(Sent|Received) Record\n", out)
    return [body for kind, body in zip(parts[1::2], parts[2::2]) if kind == "Received"]


@case
def case_dtls_handshake_ack(ctx):
    srv = ctx.track(dtls_server(ctx))
    c = dtls_client(srv.port)
    c.wait_for(r"Cipher is PSK-", stream="out", what="the negotiated PSK cipher")
    port = dtls_peer_port(srv)
    srv.wait_for(rf'^HANDSHAKE_COMPLETE 127\.0\.0\.1:{port}: .*\(identity "ctest", ', stream="out")
    dtls_send(c, b"hello\n")
    c.wait_for_text(rf"to 127\.0\.0\.1:{port}: ACK", what="the server's ACK")
    srv.wait_for(rf'^DATAGRAM_RECEIVED 127\.0\.0\.1:{port}: received a datagram of 6 bytes: '
                 rf'hex 68656c6c6f0a text "hello\\n"$', stream="out")
    out = c.text("out")
    expect("HelloVerifyRequest" in out, "the server sent no HelloVerifyRequest (cookie exchange)")
    expect("PSK identity hint: libsslserver DTLS example" in out, "no default identity hint")
    dtls_end_client(c)
    srv.wait_for(rf"^PEER_CLOSED 127\.0\.0\.1:{port}: ", stream="out")
    expect(srv.count(r"^ERROR ", stream="out") == 0, "the server logged an error")
    srv.stop()


@case
def case_dtls_wrong_key(ctx):
    srv = ctx.track(dtls_server(ctx))
    c = dtls_client(srv.port, psk="00112233")
    # The Finished that does not decrypt is dropped like a forged record; at
    # the handshake deadline (5 s) the server sends unknown_psk_identity.
    rc = c.finish()
    expect(rc != 0, "s_client succeeded with the wrong key")
    expect(re.search(r"alert", c.text("err"), re.I), "s_client did not report an alert")
    port = dtls_peer_port(srv)
    srv.wait_for(rf"^ERROR 127\.0\.0\.1:{port}: handshake failed: .*wrong pre-shared key.*"
                 r"\(SslHandshakeFailedError\)$", stream="out")
    expect(srv.count(r"^(HANDSHAKE_COMPLETE|DATAGRAM_RECEIVED) ", stream="out") == 0,
           "the handshake with the wrong key completed")
    srv.stop()
    expect(srv.count(r"^signal 15: sending close_notify to 0 peer\(s\) and exiting$", stream="out") == 1,
           "the failed peer was still counted at shutdown")


@case
def case_dtls_identity_hint(ctx):
    srv = ctx.track(dtls_server(ctx, "--identity-hint", "ctest hint"))
    c = dtls_client(srv.port)
    c.wait_for(r"Cipher is PSK-", stream="out", what="the negotiated PSK cipher")
    expect(re.search(r"^\s*PSK identity hint: ctest hint$", c.text("out"), re.M),
           "s_client did not see the identity hint")
    dtls_end_client(c)
    srv.stop()


def dtls_signal(ctx, sig):
    srv = ctx.track(dtls_server(ctx))
    c = dtls_client(srv.port)
    c.wait_for(r"Cipher is ", stream="out", what="the end of the handshake")
    srv.stop(sig)                   # exit 0, no sanitizer report
    srv.wait_for(rf"^signal {int(sig)}: sending close_notify to 1 peer\(s\) and exiting$",
                 stream="out")
    rc = c.finish()                 # stdin still open: only the close_notify ends it
    expect(rc == 0, f"s_client exited with {rc}")
    expect(any("close notify" in r for r in received_records(c)),
           "s_client did not receive a close_notify alert")


@case
def case_dtls_sigint(ctx):
    dtls_signal(ctx, signal.SIGINT)


@case
def case_dtls_sigterm(ctx):
    dtls_signal(ctx, signal.SIGTERM)


@case
def case_dtls_quiet(ctx):
    srv = ctx.track(dtls_server(ctx, "--quiet"))
    c = dtls_client(srv.port)
    c.wait_for(r"Cipher is PSK-", stream="out", what="the negotiated PSK cipher")
    dtls_send(c, b"quiet please\n")
    c.wait_for_text(r"to 127\.0\.0\.1:\d+: ACK", what="the server's ACK")
    dtls_end_client(c)
    srv.stop()
    lines = [t for _, t in srv.lines]
    expect(lines == [f"listening on 127.0.0.1:{srv.port}"],
           f"--quiet printed more than the listening line: {lines}")


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@case
def case_dtls_ipv6(ctx):
    if not have_ipv6_loopback():
        log("SKIP: no IPv6 loopback (cannot bind a UDP socket to ::1)")
        return
    srv = ctx.track(dtls_server(ctx, address="::1"))
    expect(srv.wait_for(r"^listening on ", stream="out").string == f"listening on [::1]:{srv.port}",
           "the IPv6 listening line is not `listening on [::1]:PORT`")
    c = dtls_client(srv.port, host="::1")
    c.wait_for(r"Cipher is PSK-", stream="out", what="the negotiated PSK cipher")
    port = dtls_peer_port(srv, host="::1")
    dtls_send(c, b"over ipv6\n")
    c.wait_for_text(rf"to ::1:{port}: ACK", what="the server's ACK")
    dtls_end_client(c)
    srv.wait_for(rf"^PEER_CLOSED {dtls_peer('::1')}:{port}: ", stream="out")
    srv.stop()


@case
def case_dtls_bad_args(ctx):
    for args, message in (([], r"--psk HEX or --cert PEM --key PEM is required"),
                          (["--cert", "server.pem"], r"--cert and --key go together"),
                          (["--psk", "123"], r"--psk"),
                          (["--psk", "zz"], r"--psk")):
        p = Process([ctx.exe("dtls_server"), "--address", "127.0.0.1", "--port", "0", *args],
                    name="dtls_server")
        rc = p.finish()
        check_sanitizers(p)
        expect(rc == 2, f"dtls_server {' '.join(args)} exited with {rc}, expected 2")
        expect(re.search(message, p.text("err")), f"stderr does not match {message!r}")
        expect("listening on" not in p.text("out"), "listened despite bad arguments")


@case
def case_dtls_certificate(ctx):
    srv = ctx.track(dtls_certificate_server(ctx))
    c = dtls_certificate_client(ctx, srv.port)
    c.wait_for(r"Cipher is ECDHE-ECDSA-", stream="out", what="an ECDHE-ECDSA cipher")
    c.wait_for(r"Verify return code: 0 \(ok\)", stream="out", what="a verified certificate")
    port = dtls_peer_port(srv)
    srv.wait_for(rf"^HANDSHAKE_COMPLETE 127\.0\.0\.1:{port}: .*\(certificate, TLS_ECDHE_ECDSA_",
                 stream="out")
    dtls_send(c, b"over a certificate\n")
    c.wait_for_text(rf"to 127\.0\.0\.1:{port}: ACK", what="the server's ACK")
    dtls_end_client(c)
    srv.stop()


@case
def case_dtls_certificate_and_psk(ctx):
    srv = ctx.track(dtls_certificate_server(ctx, psk=True))
    cert = dtls_certificate_client(ctx, srv.port)
    cert.wait_for(r"Cipher is ECDHE-ECDSA-", stream="out", what="an ECDHE-ECDSA cipher")
    dtls_end_client(cert)
    psk = dtls_client(srv.port)     # OpenSSL's default list puts ECDHE first
    psk.proc.stdin.close()
    psk.finish()
    expect(re.search(r"Cipher is ECDHE-", psk.text("out")),
           "a client offering both families did not get its first choice")
    srv.stop()


@case
def case_dtls_bad_certificate_file(ctx):
    p = Process([ctx.exe("dtls_server"), "--address", "127.0.0.1", "--port", "0",
                 "--cert", ctx.cert("missing.pem"), "--key", ctx.cert("server.key")],
                name="dtls_server")
    rc = p.finish()
    check_sanitizers(p)
    expect(rc == 1, f"dtls_server with a missing certificate exited with {rc}, expected 1")
    expect(re.search(r"--cert: .*missing\.pem", p.text("err")), "stderr does not name the file")
    expect("listening on" not in p.text("out"), "listened without its certificate")
