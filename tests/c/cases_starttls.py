"""STARTTLS: c_examples/starttls_server (the program's own accept loop, each
descriptor wrapped and upgraded on request) against openssl s_client,
Python's smtplib and c_examples/client --starttls smtp."""

import smtplib
import subprocess

from harness import (TIMEOUT, Process, Server, case, check_sanitizers, client_context, expect,
                     tcp_connect, wait_closed)


def starttls_server(ctx, *args):
    return Server([ctx.exe("starttls_server"), "--address", "127.0.0.1", "--port", "0",
                   "--cert", ctx.cert("server.pem"), "--key", ctx.cert("server.key"), *args],
                  name="starttls_server")


@case
def case_starttls_openssl_s_client(ctx):
    srv = ctx.track(starttls_server(ctx))
    c = Process(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-starttls", "smtp",
                 "-CAfile", ctx.cert("ca.pem"), "-verify_return_error", "-verify_hostname",
                 "localhost", "-crlf", "-nocommands"], name="s_client", stdin=subprocess.PIPE)
    c.wait_for(r"Verify return code: 0 \(ok\)", stream="out", what="a verified certificate")
    c.proc.stdin.write(b"NOOP\n")
    c.proc.stdin.flush()
    c.wait_for(r"^250 OK\r?$", stream="out", what="the answer to NOOP, through TLS")
    c.proc.stdin.write(b"QUIT\n")
    c.proc.stdin.flush()
    c.wait_for(r"^221 Bye\r?$", stream="out", what="the answer to QUIT")
    c.proc.stdin.close()
    expect(c.finish() == 0, "s_client failed")
    srv.wait_for(r"^\[event\] ENCRYPTED ", stream="out", what="the ENCRYPTED event")
    srv.wait_for(r"^connection \S+: TLSv1\.3 ", stream="out", what="the upgraded connection")
    srv.stop()


@case
def case_starttls_python_smtplib(ctx):
    srv = ctx.track(starttls_server(ctx, "--quiet"))
    context = client_context(ctx)  # verifies the chain and the name
    with smtplib.SMTP("localhost", srv.port, timeout=TIMEOUT) as smtp:
        code, features = smtp.ehlo()
        expect(code == 250 and b"STARTTLS" in features, f"EHLO: {code} {features!r}")
        code, _ = smtp.starttls(context=context)
        expect(code == 220, f"STARTTLS: {code}")
        expect(smtp.sock.version() in ("TLSv1.3", "TLSv1.2"), "not encrypted after STARTTLS")
        code, features = smtp.ehlo()
        expect(code == 250 and b"STARTTLS" not in features,
               f"EHLO after TLS must not offer STARTTLS: {features!r}")
        expect(smtp.noop() == (250, b"OK"), "NOOP through TLS")
        code, _ = smtp.docmd("STARTTLS")
        expect(code == 503, f"STARTTLS under TLS: {code}")
        code, _ = smtp.quit()
        expect(code == 221, f"QUIT: {code}")
    srv.stop()


@case
def case_starttls_client_example(ctx):
    srv = ctx.track(starttls_server(ctx, "--quiet"))
    p = Process([ctx.exe("client"), "--cafile", ctx.cert("ca.pem"), "--verify-name", "localhost",
                 "--starttls", "smtp", "127.0.0.1", str(srv.port)], name="client",
                stdin=subprocess.PIPE)
    p.wait_for(r"^connected protocol=TLSv1\.3 cipher=TLS_\S+ alpn=- subject=CN=localhost$",
               stream="out", what="the connected line")
    p.proc.stdin.write(b"NOOP\r\n")
    p.proc.stdin.flush()
    p.wait_for(r"^250 OK", stream="out", what="the answer to NOOP")
    p.proc.stdin.write(b"QUIT\r\n")
    p.proc.stdin.close()
    p.wait_for(r"^221 Bye", stream="out", what="the answer to QUIT")
    expect(p.finish() == 0, "client failed")
    check_sanitizers(p)
    srv.stop()


@case
def case_starttls_injected_command_is_refused(ctx):
    """A man in the middle appends NOOP behind STARTTLS in one packet: it is
    the start of the TLS stream, so the handshake fails and NOOP is never
    answered (CVE-2011-0411 class)."""
    srv = ctx.track(starttls_server(ctx))
    s = tcp_connect(srv.port)
    greeting = s.recv(1024)
    expect(greeting.startswith(b"220 "), f"greeting: {greeting!r}")
    s.sendall(b"STARTTLS\r\nNOOP\r\n")
    _, received = wait_closed(s)
    s.close()
    expect(received.startswith(b"220 Ready to start TLS\r\n"), f"received {received!r}")
    expect(b"250" not in received, f"the injected NOOP was answered: {received!r}")
    srv.wait_for(r"TLS handshake failed", stream="out", what="the refused handshake")
    srv.wait_for(r"^\[event\] ERROR_OCCURRED ", stream="out", what="ERROR_OCCURRED")
    srv.stop()


@case
def case_starttls_sigterm_with_clients_connected(ctx):
    srv = ctx.track(starttls_server(ctx, "--quiet"))
    idle = [tcp_connect(srv.port) for _ in range(3)]
    for s in idle:
        expect(s.recv(1024).startswith(b"220 "), "no greeting")
    srv.stop()
    for s in idle:
        wait_closed(s)
        s.close()
