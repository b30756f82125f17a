"""Deadlines, plaintext, signals, key and file errors, the event logger and the C++ header check."""

import re
import signal
import ssl

from harness import (expect, Process, Server, check_sanitizers, log, tcp_connect, tls_connect,
    echo_roundtrip, wait_closed, peer_port_of, expect_events, case, echo_server)


@case
def case_handshake_timeout(ctx):
    srv = ctx.track(echo_server(ctx, "--handshake-timeout", "300"))
    s = tcp_connect(srv.port)
    port = peer_port_of(s)
    elapsed, data = wait_closed(s, timeout=5.0)
    s.close()
    log(f"silent client closed after {elapsed:.3f}s")
    expect(data == b"", "the server sent data to a silent client")
    expect(elapsed >= 0.2, f"closed after {elapsed:.3f}s, before the 300 ms deadline")
    srv.wait_for(rf"^\[event\] ERROR_OCCURRED 127\.0\.0\.1:{port} SocketTimeoutError", stream="err")
    expect_events(srv, port, ["NEW_CONNECTION", "ERROR_OCCURRED"])
    # A client that sends half a ClientHello is cut off at the deadline too.
    s = tcp_connect(srv.port)
    port2 = peer_port_of(s)
    s.sendall(bytes.fromhex("160301020001"))
    elapsed, _ = wait_closed(s, timeout=5.0)
    s.close()
    srv.wait_for(rf"^\[event\] ERROR_OCCURRED 127\.0\.0\.1:{port2} SocketTimeoutError", stream="err")
    expect(elapsed < 5.0, "the half-handshake client was not cut off")
    expect_events(srv, port2, ["NEW_CONNECTION", "STARTED_ENCRYPTION_HANDSHAKE", "ERROR_OCCURRED"])
    # The server is still healthy, and the timeout fired once per connection.
    with tls_connect(ctx, srv.port) as t:
        echo_roundtrip(t, b"after timeouts")
    expect(srv.count(rf"^\[event\] ERROR_OCCURRED 127\.0\.0\.1:{port} ") == 1,
           "ERROR_OCCURRED fired more than once for the timed out connection")
    srv.stop()


@case
def case_plaintext_dropped(ctx):
    # A long handshake timeout, so that a prompt close can only come from the
    # plaintext detection.
    srv = ctx.track(echo_server(ctx, "--handshake-timeout", "60000"))
    s = tcp_connect(srv.port)
    port = peer_port_of(s)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    elapsed, data = wait_closed(s, timeout=10.0)
    s.close()
    expect(b"GET" not in data, "plaintext was echoed")
    srv.wait_for(rf"^\[event\] ERROR_OCCURRED 127\.0\.0\.1:{port} SslHandshakeFailedError", stream="err")
    expect_events(srv, port, ["NEW_CONNECTION", "ERROR_OCCURRED"])
    with tls_connect(ctx, srv.port) as t:
        echo_roundtrip(t, b"after plaintext")
    srv.stop()


def shutdown_with_clients(ctx, sig):
    srv = ctx.track(echo_server(ctx))
    tls = [tls_connect(ctx, srv.port) for _ in range(3)]
    for s in tls:
        echo_roundtrip(s, b"connected")     # taken by a connection thread
    silent = tcp_connect(srv.port)          # still in its handshake
    srv.wait_for(rf"^\[event\] NEW_CONNECTION 127\.0\.0\.1:{peer_port_of(silent)}", stream="err")
    srv.stop(sig)                           # exit 0, in time, no sanitizer report
    for s in tls + [silent]:
        _, data = wait_closed(s, timeout=5.0)
        s.close()
        expect(data == b"", "unexpected data at shutdown")


@case
def case_sigterm_with_clients(ctx):
    shutdown_with_clients(ctx, signal.SIGTERM)


@case
def case_sigint_with_clients(ctx):
    shutdown_with_clients(ctx, signal.SIGINT)


@case
def case_encrypted_key(ctx):
    srv = ctx.track(echo_server(ctx, "--quiet"))   # plain key, for comparison below
    srv.stop()
    argv = [ctx.exe("echo_server"), "--address", "127.0.0.1", "--port", "0", "--quiet",
            "--cert", ctx.cert("server.pem"), "--key", ctx.cert("server_encrypted.key")]
    srv = ctx.track(Server(argv + ["--key-passphrase", "secret"], name="echo_server"))
    with tls_connect(ctx, srv.port) as s:
        echo_roundtrip(s, b"encrypted key")
    srv.stop()
    for extra in ([], ["--key-passphrase", "wrong"]):
        p = Process(argv + extra, name="echo_server")
        rc = p.finish()
        check_sanitizers(p)
        expect(rc == 1, f"echo_server exited with {rc} for a bad passphrase, expected 1")
        expect(re.search(r"server_encrypted\.key: .+", p.text("err")), "no error message")
        expect("listening on" not in p.text("out"), "listened without a usable key")


@case
def case_missing_files(ctx):
    p = Process([ctx.exe("echo_server"), "--port", "0", "--cert", ctx.cert("nonexistent.pem"),
                 "--key", ctx.cert("server.key")], name="echo_server")
    rc = p.finish()
    check_sanitizers(p)
    expect(rc == 1, f"exit status {rc}, expected 1")
    expect(re.search(r"nonexistent\.pem: .*(No such file|not found)", p.text("err"), re.I),
           "the error message does not say the file is missing")
    p = Process([ctx.exe("echo_server"), "--port", "0", "--cert", ctx.cert("server.pem"),
                 "--key", ctx.cert("client.key")], name="echo_server")
    rc = p.finish()
    check_sanitizers(p)
    expect(rc == 1, f"exit status {rc} for a mismatched key, expected 1")
    expect(re.search(r"client\.key: .*(match|mismatch)", p.text("err"), re.I),
           "the error message does not mention the key mismatch")
    p = Process([ctx.exe("echo_server"), "--bogus"], name="echo_server")
    expect(p.finish() == 2, "an unknown option did not exit with 2")


@case
def case_event_logger(ctx):
    srv = ctx.track(Server([ctx.exe("event_logger"), "--address", "127.0.0.1", "--port", "0"],
                           name="event_logger"))
    with _insecure(srv.port) as s:
        port = peer_port_of(s)
        expect(s.recv(16) == b"bye\n", "no bye from event_logger")
    srv.wait_for(r"^taken: TLSv1\.3 TLS_", stream="out")
    for kind in ("NEW_CONNECTION", "STARTED_ENCRYPTION_HANDSHAKE", "PENDING_CONNECTION_AVAILABLE"):
        srv.wait_for(rf"^event \d+: {kind} \(\d+\)$", stream="out")
    srv.wait_for(rf"^  socket: peer 127\.0\.0\.1 port {port}, local port {srv.port}, ", stream="out")
    for field in ("socket_error", "ssl_error_count", "alert_level", "alert_type", "description"):
        srv.wait_for(rf"^  {field}: ", stream="out")
    t = tcp_connect(srv.port)
    t.sendall(b"plaintext\r\n\r\n")
    wait_closed(t)
    t.close()
    srv.wait_for(r"^event \d+: ERROR_OCCURRED \(\d+\)$", stream="out")
    srv.wait_for(r"^  socket_error: SslHandshakeFailedError \(13\)$", stream="out")
    srv.stop()


def _insecure(port):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c.wrap_socket(tcp_connect(port), server_hostname="localhost")


@case
def case_header_check(ctx):
    p = Process([ctx.exe("header_check")], name="header_check")
    rc = p.finish()
    check_sanitizers(p)
    expect(rc == 0, f"header_check exited with {rc}")
    m = re.search(r"listening on port (\d+)$", p.text("out"), re.M)
    expect(m and 0 < int(m.group(1)) < 65536, "header_check did not print a port")
    expect("closed" in p.text("out"), "header_check did not close")
