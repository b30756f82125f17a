"""TLS echo: protocol versions, ALPN, concurrency, addresses."""

import os
import re
import signal
import socket
import ssl

from harness import (Failure, expect, Server, tcp_connect, client_context, tls_connect,
    echo_roundtrip, s_client, s_client_echo, peer_port_of, expect_events, case, echo_server)


@case
def case_tls13_echo(ctx):
    srv = ctx.track(echo_server(ctx))
    c = s_client_echo(ctx, srv, "-tls1_3")
    out = c.text("out")
    expect("New, TLSv1.3, Cipher is TLS_" in out, "s_client did not negotiate TLS 1.3")
    expect("Verify return code: 0 (ok)" in out, "s_client did not verify the server certificate")
    srv.wait_for(r"^connection 127\.0\.0\.1:\d+: TLSv1\.3 TLS_", stream="err")
    srv.wait_for(r"^connection 127\.0\.0\.1:\d+ closed$", stream="err")
    srv.stop()


@case
def case_tls12_echo(ctx):
    srv = ctx.track(echo_server(ctx))
    c = s_client_echo(ctx, srv, "-tls1_2")
    out = c.text("out")
    expect(re.search(r"^\s*Protocol\s*: TLSv1\.2$", out, re.M), "s_client did not negotiate TLS 1.2")
    expect("Verify return code: 0 (ok)" in out, "s_client did not verify the server certificate")
    srv.wait_for(r"^connection 127\.0\.0\.1:\d+: TLSv1\.2 TLS_ECDHE_", stream="err")
    srv.stop()


@case
def case_tls11_refused(ctx):
    srv = ctx.track(echo_server(ctx))
    # SECLEVEL=0: Debian's OpenSSL would otherwise refuse TLS 1.1 on the
    # client side; we want the ClientHello to reach the server.
    c = s_client(ctx, srv.port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    try:
        c.proc.stdin.write(b"must not be echoed\n")
        c.proc.stdin.close()
    except BrokenPipeError:
        pass     # s_client may already have given up
    rc = c.finish()
    expect(rc != 0, "s_client -tls1_1 succeeded")
    expect("must not be echoed" not in c.text("out"), "data was echoed over TLS 1.1")
    expect("New, (NONE), Cipher is (NONE)" in c.text("out"), "s_client established a session")
    # rustls answers a TLS 1.1 ClientHello with handshake_failure (it lacks
    # the signature_algorithms extension) where OpenSSL would say
    # protocol_version: either is a refusal.
    expect(re.search(r"alert (protocol version|handshake failure)", c.text("err")),
           "s_client did not report a fatal alert from the server")
    srv.wait_for(r"^\[event\] ALERT_SENT 127\.0\.0\.1:\d+ alert=fatal/(70|40)", stream="err")
    # The server saw the connection and failed its handshake.
    srv.wait_for(r"^\[event\] NEW_CONNECTION 127\.0\.0\.1:\d+", stream="err")
    srv.wait_for(r"^\[event\] ERROR_OCCURRED 127\.0\.0\.1:\d+ SslHandshakeFailedError", stream="err")
    expect(srv.count(r"^connection 127\.0\.0\.1:\d+: ", stream="err") == 0,
           "a TLS 1.1 connection was handed out")
    srv.stop()


@case
def case_alpn(ctx):
    srv = ctx.track(echo_server(ctx, "--alpn", "http/1.1"))
    c = s_client_echo(ctx, srv, "-alpn", "h2,http/1.1")
    expect(re.search(r"^ALPN protocol: http/1\.1$", c.text("out"), re.M),
           "ALPN did not select http/1.1")
    srv.wait_for(r"^connection 127\.0\.0\.1:\d+: .* alpn=http/1\.1 ", stream="err")
    # Python's client agrees.
    cc = client_context(ctx)
    cc.set_alpn_protocols(["h2", "http/1.1"])
    with cc.wrap_socket(tcp_connect(srv.port), server_hostname="localhost") as s:
        expect(s.selected_alpn_protocol() == "http/1.1",
               f"python client negotiated {s.selected_alpn_protocol()!r}")
        echo_roundtrip(s, b"alpn")
    srv.stop()


@case
def case_python_echo(ctx):
    srv = ctx.track(echo_server(ctx))
    with tls_connect(ctx, srv.port) as s:
        expect_events(srv, peer_port_of(s), ["NEW_CONNECTION", "STARTED_ENCRYPTION_HANDSHAKE",
                                             "PENDING_CONNECTION_AVAILABLE"])
        expect(s.version() == "TLSv1.3", f"negotiated {s.version()}")
        echo_roundtrip(s, b"x")
        # Larger than any single TLS record or read buffer.
        echo_roundtrip(s, os.urandom(300_000))
        s.unwrap()   # close_notify
    srv.wait_for(r"^connection 127\.0\.0\.1:\d+ closed$", stream="err")
    srv.stop()


def send_with_finished(ctx, port, payload):
    """Completes a TLS 1.3 handshake such that the client's Finished and its
    first application data leave in ONE TCP segment (as curl and browsers
    often do), then returns the reply's first bytes. A server that handles the
    data decrypted together with the handshake only when more bytes arrive
    would hang here."""
    sock = tcp_connect(port)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(ctx).wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                chunk = sock.recv(65536)
                expect(chunk, "the server closed during the handshake")
                incoming.write(chunk)
        tls.write(payload)                  # queued behind the Finished message
        sock.sendall(outgoing.read())       # both in one write
        sock.settimeout(5.0)
        while True:
            try:
                return tls.read(65536)
            except ssl.SSLWantReadError:
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    raise Failure("no reply within 5s to data sent along with the client's Finished")
                expect(chunk, "the server closed without replying")
                incoming.write(chunk)
    finally:
        sock.close()


@case
def case_data_with_finished(ctx):
    srv = ctx.track(echo_server(ctx, "--quiet"))
    for i in range(3):
        expect(send_with_finished(ctx, srv.port, b"ping %d" % i) == b"ping %d" % i, "wrong echo")
    srv.stop()
    srv = ctx.track(echo_server(ctx, "--quiet", "--http"))
    reply = send_with_finished(ctx, srv.port, b"GET / HTTP/1.0\r\n\r\n")
    expect(reply.startswith(b"HTTP/1.0 200 OK"), f"unexpected reply {reply[:30]!r}")
    srv.stop()


@case
def case_concurrent_clients(ctx):
    # One thread per connection: every client gets its echo while all the
    # others are still connected and idle.
    srv = ctx.track(echo_server(ctx))
    socks = [tls_connect(ctx, srv.port) for _ in range(8)]
    try:
        for rnd in range(2):
            for i, s in enumerate(reversed(socks)):
                echo_roundtrip(s, f"client {i} round {rnd}\n".encode())
    finally:
        for s in socks:
            s.close()
    srv.stop()


@case
def case_dual_stack_default_address(ctx):
    srv = ctx.track(Server([ctx.exe("echo_server"), "--port", "0", "--cert", ctx.cert("server.pem"),
                            "--key", ctx.cert("server.key"), "--quiet"], name="echo_server"))
    hosts = ["127.0.0.1"]
    if ":" in srv.address:    # listening on "::": IPv6 too
        hosts.append("::1")
    for h in hosts:
        with tls_connect(ctx, srv.port, host=h) as s:
            echo_roundtrip(s, f"via {h}".encode())
    srv.stop(signal.SIGINT)
