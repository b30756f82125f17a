"""echo_server --http: the HTTPS mode."""

import hashlib
import os
import re
import ssl
import subprocess
import time

from harness import (TIMEOUT, expect, Process, Server, check_sanitizers, log, tcp_connect,
    client_context, tls_connect, case, echo_server)


@case
def case_curl_http(ctx):
    cert = os.path.join(ctx.tmp, "generated.pem")
    srv = ctx.track(Server([ctx.exe("echo_server"), "--port", "0", "--http", "--write-cert", cert],
                           name="echo_server"))
    # The printed fingerprint is the SHA-256 of the certificate it wrote.
    m = srv.wait_for(r"^certificate SHA-256 fingerprint ([0-9A-F:]{95})", stream="out")
    der = ssl.PEM_cert_to_DER_cert(open(cert).read())
    digest = hashlib.sha256(der).hexdigest().upper()
    expect(m.group(1) == ":".join(digest[i:i + 2] for i in range(0, 64, 2)),
           "fingerprint does not match the written certificate")
    out = subprocess.run(["curl", "-sS", "-i", "--max-time", str(int(TIMEOUT)), "--cacert", cert,
                          f"https://localhost:{srv.port}/"], capture_output=True, timeout=TIMEOUT + 5)
    log(out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace"))
    expect(out.returncode == 0, f"curl exited with {out.returncode}")
    head, _, body = out.stdout.decode().partition("\r\n\r\n")
    expect(head.startswith("HTTP/1.0 200 OK"), "no HTTP/1.0 200 status line")
    expect(body.startswith("Hello from libsslserver"), f"unexpected body {body!r}")
    m = re.search(r"(?im)^content-length: (\d+)\r?$", head)
    expect(m and int(m.group(1)) == len(body.encode()), "Content-Length does not match the body")
    srv.stop()


@case
def case_http_bare_lf(ctx):
    srv = ctx.track(echo_server(ctx, "--http"))
    with tls_connect(ctx, srv.port) as s:
        # Request head in two pieces, ending in a bare-LF blank line.
        s.sendall(b"GET / HTTP/1.0\n")
        s.sendall(b"Host: localhost\n\n")
        data = b""
        while True:
            chunk = s.recv(4096)   # SSLEOFError here would mean no close_notify
            if not chunk:
                break
            data += chunk
    expect(data.startswith(b"HTTP/1.0 200 OK\r\n"), f"unexpected response {data[:40]!r}")
    expect(b"\r\n\r\nHello from libsslserver" in data, "no body")
    srv.stop()


def read_response(s):
    """Reads until the server closes; a close without close_notify raises
    ssl.SSLEOFError (the socket must not suppress ragged EOFs)."""
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk


def expect_http_status(data, status):
    head, sep, body = data.partition(b"\r\n\r\n")
    expect(sep and head.startswith(b"HTTP/1.0 " + status.encode() + b"\r\n"),
           f"expected HTTP/1.0 {status}, got {data[:60]!r}")
    m = re.search(rb"(?im)^content-length: (\d+)\r?$", head)
    expect(m and int(m.group(1)) == len(body), "Content-Length does not match the body")
    expect(0 < len(body) < 200, f"expected a short body, got {len(body)} bytes")
    return body


def strict_tls_connect(ctx, port):
    c = client_context(ctx)
    return c.wrap_socket(tcp_connect(port), server_hostname="localhost", suppress_ragged_eofs=False)


@case
def case_http_head_too_large(ctx):
    srv = ctx.track(echo_server(ctx, "--http"))
    # What tlsfuzzer's test-cve-2016-7054 sends: a 16 KiB request head.
    big = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 16384 + b"\r\n\r\n"
    with strict_tls_connect(ctx, srv.port) as s:
        s.sendall(big)
        data = read_response(s)
    expect_http_status(data, "431 Request Header Fields Too Large")
    srv.wait_for(r"^connection 127\.0\.0\.1:\d+: 431 Request Header Fields Too Large$", stream="err")
    # A head just under the limit is still served.
    fits = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n"
    expect(len(fits) < 8192, "the fitting head is too long")
    with strict_tls_connect(ctx, srv.port) as s:
        s.sendall(fits)
        body = expect_http_status(read_response(s), "200 OK")
    expect(body.startswith(b"Hello from libsslserver"), f"unexpected body {body!r}")
    srv.stop()


@case
def case_http_request_timeout(ctx):
    srv = ctx.track(echo_server(ctx, "--http", "--request-timeout", "500"))
    with strict_tls_connect(ctx, srv.port) as s:
        start = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: local")   # a head that never ends
        data = read_response(s)
        elapsed = time.monotonic() - start
    log(f"408 after {elapsed:.3f}s")
    expect_http_status(data, "408 Request Timeout")
    expect(elapsed >= 0.4, f"answered after {elapsed:.3f}s, before the 500 ms deadline")
    srv.wait_for(r"^connection 127\.0\.0\.1:\d+: 408 Request Timeout$", stream="err")
    # A client that sends nothing at all gets the same answer.
    with strict_tls_connect(ctx, srv.port) as s:
        expect_http_status(read_response(s), "408 Request Timeout")
    srv.stop()


@case
def case_http_bad_request_timeout(ctx):
    for bad in ("0", "-1", "x"):
        p = Process([ctx.exe("echo_server"), "--port", "0", "--http", "--request-timeout", bad],
                    name="echo_server")
        rc = p.finish()
        check_sanitizers(p)
        expect(rc == 2, f"--request-timeout {bad} exited with {rc}, expected 2")
        expect("--request-timeout" in p.text("err"), "stderr does not name --request-timeout")
