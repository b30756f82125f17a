#!/usr/bin/env python3
"""Drives the C examples (c_examples/) against real TLS clients.

One test case per invocation, so that ctest runs and reports them separately:

    run_case.py --bin-dir DIR CASE        (run_case.py --list shows the cases)

Every case starts its server on port 0, reads the port from the
`listening on ADDRESS:PORT` line, talks to it with openssl s_client, curl or
Python's ssl module, and finally stops the server with SIGTERM (or SIGINT) and
requires exit status 0 and no sanitizer report. Nothing sleeps to let things
happen: every wait is on an output line or a socket, with a generous timeout
(the suite also runs under ASan on a loaded 2-core machine).

Standard library only. The test PKI comes from make_certs.sh (openssl CLI),
generated into a fresh temporary directory per case.
"""
import argparse
import hashlib
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 20.0          # upper bound for anything that should happen "soon"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: ThreadSanitizer", "UndefinedBehaviorSanitizer")


class Failure(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise Failure(message)


ALL_PROCESSES = []    # killed, and dumped on failure, at the end of a case


class Process:
    """A child process whose stdout and stderr are collected line by line."""

    def __init__(self, argv, name=None, stdin=subprocess.DEVNULL):
        ALL_PROCESSES.append(self)
        self.name = name or os.path.basename(argv[0])
        self.argv = argv
        log(f"$ {' '.join(argv)}")
        self.proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.lines = []                      # (stream, text)
        self.raw = {"out": b"", "err": b""}  # everything read, including a partial last line
        self.cond = threading.Condition()
        self.closed = 0
        self.readers = [threading.Thread(target=self._pump, args=(s, n), daemon=True)
                        for s, n in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))]
        for t in self.readers:
            t.start()

    def _pump(self, stream, name):
        # read1, not readline: output without a trailing newline (such as a
        # reply s_client copies to its stdout) is visible to wait_for_text
        # as soon as it arrives.
        partial = b""
        while True:
            chunk = stream.read1(65536)
            with self.cond:
                if chunk:
                    self.raw[name] += chunk
                    *complete, partial = (partial + chunk).split(b"\n")
                else:
                    complete = [partial] if partial else []
                    self.closed += 1
                for raw in complete:
                    self.lines.append((name, raw.decode("utf-8", "replace")))
                self.cond.notify_all()
            if not chunk:
                return

    def wait_for(self, pattern, timeout=TIMEOUT, stream=None, what=None):
        """Waits for a line matching the regex; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            seen = 0
            while True:
                for s, text in self.lines[seen:]:
                    if stream in (None, s):
                        m = rx.search(text)
                        if m:
                            return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed == 2:
                    raise Failure(f"{self.name}: no line matching {what or pattern!r} "
                                  f"within {timeout:.0f}s (exit status {self.proc.poll()})")
                self.cond.wait(left)

    def wait_for_text(self, pattern, timeout=TIMEOUT, stream="out", what=None):
        """Waits until the regex matches the stream's output so far, read as
        one text (so across lines, and before a newline arrives); returns the
        match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = rx.search(self.raw[stream].decode("utf-8", "replace"))
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self.closed == 2:
                    raise Failure(f"{self.name}: no output matching {what or pattern!r} "
                                  f"within {timeout:.0f}s (exit status {self.proc.poll()})")
                self.cond.wait(left)

    def count(self, pattern, stream=None):
        rx = re.compile(pattern)
        with self.cond:
            return sum(1 for s, t in self.lines if stream in (None, s) and rx.search(t))

    def text(self, stream=None):
        with self.cond:
            return "\n".join(t for s, t in self.lines if stream in (None, s))

    def finish(self, timeout=TIMEOUT):
        """Waits for exit; returns the status (kills and fails on timeout)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure(f"{self.name} did not exit within {timeout:.0f}s")
        for t in self.readers:
            t.join(TIMEOUT)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def dump(self):
        with self.cond:
            for s, t in self.lines:
                print(f"  [{self.name} {s}] {t}")


class Server(Process):
    def __init__(self, argv, name=None):
        super().__init__(argv, name)
        m = self.wait_for(r"^listening on (\S+):(\d+)$", stream="out", what="listening on A:P")
        self.address = m.group(1).strip("[]")
        self.port = int(m.group(2))
        expect(self.port > 0, f"{self.name} reported port 0")

    def stop(self, sig=signal.SIGTERM):
        """Signals the server; requires a clean exit 0 without sanitizer reports."""
        self.proc.send_signal(sig)
        rc = self.finish()
        check_sanitizers(self)
        expect(rc == 0, f"{self.name} exited with {rc} after {signal.Signals(sig).name}, expected 0")


def check_sanitizers(proc):
    text = proc.text()
    for marker in SANITIZER_MARKERS:
        expect(marker not in text, f"{proc.name}: sanitizer report ({marker})")


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- clients

def tcp_connect(port, host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect((host, port))
    return s


def client_context(ctx, cert=None, ca="ca.pem"):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(os.path.join(ctx.certs, ca))
    if cert:
        c.load_cert_chain(os.path.join(ctx.certs, cert + ".pem"), os.path.join(ctx.certs, cert + ".key"))
    return c


def tls_connect(ctx, port, cert=None, host="127.0.0.1", ca="ca.pem"):
    c = client_context(ctx, cert, ca)
    return c.wrap_socket(tcp_connect(port, host), server_hostname="localhost")


def recv_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise Failure(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def echo_roundtrip(s, payload):
    s.sendall(payload)
    got = recv_exactly(s, len(payload))
    expect(got == payload, "echoed bytes differ from the bytes sent")


def wait_closed(s, timeout=TIMEOUT):
    """Reads until the peer closes; returns (seconds waited, bytes received).
    A TLS socket that gets a fatal alert raises ssl.SSLError: that counts as
    closed too."""
    start = time.monotonic()
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        pass
    except socket.timeout:
        raise Failure(f"the server did not close the connection within {timeout:.0f}s")
    return time.monotonic() - start, data


def s_client(ctx, port, *extra):
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
            "-CAfile", os.path.join(ctx.certs, "ca.pem"), "-nocommands", *extra]
    return Process(argv, name="s_client", stdin=subprocess.PIPE)


def s_client_echo(ctx, server, *extra):
    """Sends a line through s_client, waits for its echo, then ends the session
    with EOF on stdin (s_client then sends close_notify and exits)."""
    c = s_client(ctx, server.port, *extra)
    try:
        c.wait_for(r"^---$", stream="out")   # handshake done, session printed
        c.proc.stdin.write(b"hello through s_client\n")
        c.proc.stdin.flush()
        c.wait_for(r"^hello through s_client$", stream="out", what="the echoed line")
        c.proc.stdin.close()
        rc = c.finish()
        expect(rc == 0, f"s_client exited with {rc}")
        return c
    except Failure:
        c.kill()
        c.dump()
        raise


def peer_port_of(sock):
    return sock.getsockname()[1]


def events_for(srv, port, last, count=1):
    """The kinds of the events logged for the client at 127.0.0.1:port, in
    order, once `last` has been logged `count` times for it."""
    rx = rf"^\[event\] {last} 127\.0\.0\.1:{port}[ :]"
    deadline = time.monotonic() + TIMEOUT
    while srv.count(rx, stream="err") < count:
        srv.wait_for(rx, stream="err", timeout=max(0.1, deadline - time.monotonic()))
        if time.monotonic() > deadline:
            raise Failure(f"{last} was not logged {count} times for port {port}")
    kinds = []
    for line in srv.text("err").splitlines():
        m = re.match(rf"^\[event\] (\S+) 127\.0\.0\.1:{port}[ :]", line)
        if m:
            kinds.append(m.group(1))
    return kinds


def expect_events(srv, port, expected):
    got = events_for(srv, port, expected[-1], expected.count(expected[-1]))
    expect(got == expected, f"events for port {port}: {got}, expected {expected}")


# ------------------------------------------------------------------ cases

CASES = {}


def case(fn):
    CASES[fn.__name__.replace("case_", "")] = fn
    return fn


def echo_server(ctx, *args):
    return Server([ctx.exe("echo_server"), "--address", "127.0.0.1", "--port", "0",
                   "--cert", ctx.cert("server.pem"), "--key", ctx.cert("server.key"), *args],
                  name="echo_server")


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


@case
def case_client_cert_accepted(ctx):
    srv = ctx.track(echo_server(ctx, "--verify", "verify", "--ca", ctx.cert("ca.pem")))
    with tls_connect(ctx, srv.port, cert="client") as s:
        echo_roundtrip(s, b"with a certificate")
    # Python's OpenSSL sends the CA along with the client certificate (its
    # automatic chain building), hence 1 or 2.
    srv.wait_for(r"^connection 127\.0\.0\.1:\d+: .* client-certificates=[12]$", stream="err")
    srv.stop()


@case
def case_client_cert_query_mode(ctx):
    # QUERY_PEER: certificate problems are reported, and the client is let in.
    srv = ctx.track(echo_server(ctx, "--verify", "query", "--ca", ctx.cert("ca.pem")))
    with tls_connect(ctx, srv.port, cert="untrusted_client") as s:
        echo_roundtrip(s, b"let in despite the errors")
        port = peer_port_of(s)
    expect_events(srv, port, ["NEW_CONNECTION", "STARTED_ENCRYPTION_HANDSHAKE", "PEER_VERIFY_ERROR",
                              "SSL_ERRORS", "PENDING_CONNECTION_AVAILABLE"])
    srv.wait_for(rf"^\[event\] PEER_VERIFY_ERROR 127\.0\.0\.1:{port} SelfSignedCertificate", stream="err")
    with tls_connect(ctx, srv.port) as s:        # no certificate at all: fine too
        echo_roundtrip(s, b"no certificate")
        port = peer_port_of(s)
    expect_events(srv, port, ["NEW_CONNECTION", "STARTED_ENCRYPTION_HANDSHAKE",
                              "PENDING_CONNECTION_AVAILABLE"])
    srv.stop()


def expect_rejected(ctx, srv, cert, ca="ca.pem"):
    """TLS 1.3: the client finishes its side of the handshake before the server
    checks its certificate, so the rejection shows up as an alert (or EOF) on
    the first read, and nothing is ever echoed."""
    tcp = tcp_connect(srv.port)
    port = peer_port_of(tcp)
    try:
        s = client_context(ctx, cert, ca).wrap_socket(tcp, server_hostname="localhost")
    except (ssl.SSLError, OSError):
        tcp.close()    # rejected during the handshake (possible with TLS 1.2)
    else:
        try:
            try:
                s.sendall(b"must not be echoed")
            except (ssl.SSLError, OSError):
                pass
            _, data = wait_closed(s)
            expect(b"must not be echoed" not in data, "a rejected client got its data echoed")
        finally:
            s.close()
    srv.wait_for(rf"^\[event\] ERROR_OCCURRED 127\.0\.0\.1:{port} SslHandshakeFailedError", stream="err")
    return port


@case
def case_client_cert_missing_rejected(ctx):
    srv = ctx.track(echo_server(ctx, "--verify", "verify", "--ca", ctx.cert("ca.pem")))
    port = expect_rejected(ctx, srv, None)
    srv.wait_for(rf"^\[event\] PEER_VERIFY_ERROR 127\.0\.0\.1:{port} NoPeerCertificate", stream="err")
    expect_events(srv, port, ["NEW_CONNECTION", "STARTED_ENCRYPTION_HANDSHAKE", "PEER_VERIFY_ERROR",
                              "SSL_ERRORS", "ALERT_SENT", "ERROR_OCCURRED"])
    srv.wait_for(rf"^\[event\] ALERT_SENT 127\.0\.0\.1:{port} alert=fatal/", stream="err")
    srv.stop()


@case
def case_client_cert_untrusted_rejected(ctx):
    srv = ctx.track(echo_server(ctx, "--verify", "verify", "--ca", ctx.cert("ca.pem")))
    port = expect_rejected(ctx, srv, "untrusted_client")
    # Qt reports an untrusted issuer == subject certificate as SelfSignedCertificate.
    srv.wait_for(rf"^\[event\] PEER_VERIFY_ERROR 127\.0\.0\.1:{port} SelfSignedCertificate", stream="err")
    srv.wait_for(rf"^\[event\] SSL_ERRORS 127\.0\.0\.1:{port} .*SelfSignedCertificate", stream="err")
    # Issued by a CA the server does not trust.
    port = expect_rejected(ctx, srv, "other_client")
    srv.wait_for(rf"^\[event\] PEER_VERIFY_ERROR 127\.0\.0\.1:{port} "
                 r"(UnableToGetLocalIssuerCertificate|UnableToGetIssuerCertificate|CertificateUntrusted)",
                 stream="err")
    # A good client still gets through afterwards.
    with tls_connect(ctx, srv.port, cert="client") as s:
        echo_roundtrip(s, b"still serving")
    srv.stop()


@case
def case_client_cert_selfsigned_ca_rejected(ctx):
    # A self-signed client certificate with CA:TRUE, which is what
    # `openssl req -x509` makes by default. The contract: issuer == subject and
    # untrusted is SelfSignedCertificate, as Qt (OpenSSL checks that first).
    srv = ctx.track(echo_server(ctx, "--verify", "verify", "--ca", ctx.cert("ca.pem")))
    port = expect_rejected(ctx, srv, "selfsigned_ca_client")
    srv.wait_for(rf"^\[event\] PEER_VERIFY_ERROR 127\.0\.0\.1:{port} ", stream="err")
    srv.wait_for(rf"^\[event\] PEER_VERIFY_ERROR 127\.0\.0\.1:{port} SelfSignedCertificate",
                 stream="err", timeout=1)
    srv.stop()


@case
def case_mutual_tls_server(ctx):
    srv = ctx.track(Server([ctx.exe("mutual_tls_server"), "--address", "127.0.0.1", "--port", "0",
                            "--cert", ctx.cert("server.pem"), "--key", ctx.cert("server.key"),
                            "--ca", ctx.cert("ca.pem")], name="mutual_tls_server"))
    der = ssl.PEM_cert_to_DER_cert(open(ctx.cert("client.pem")).read())
    with tls_connect(ctx, srv.port, cert="client") as s:
        f = s.makefile("rb")
        greeting = f.readline().decode()
        # 1 or 2 certificates: Python's OpenSSL appends the CA it trusts.
        m = re.match(rf"^hello 127\.0\.0\.1:{peer_port_of(s)}, your certificate chain has ([12]) "
                     rf"certificate\(s\), leaf {len(der)} bytes DER$", greeting)
        expect(m, f"unexpected greeting {greeting!r}")
        chain = int(m.group(1))
        s.sendall(b"ping\n")
        expect(f.readline() == b"ping\n", "the message was not echoed")
        expect(f.read() == b"", "expected a clean close after the echo")
    srv.wait_for(rf"^client 127\.0\.0\.1:\d+: certificate chain length {chain}$", stream="out")
    srv.wait_for(rf"^  certificate 0: {len(der)} bytes DER$", stream="out")

    for cert in (None, "untrusted_client"):
        expect_rejected(ctx, srv, cert)
    srv.wait_for(r"^\[event\] PEER_VERIFY_ERROR .* SelfSignedCertificate", stream="err")
    expect(srv.count(r"^client ", stream="out") == 1, "a rejected client was served")
    srv.stop()


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


# ------------------------------------------------------------ client mode

def run_client(ctx, port, *args, stdin_text=b"hello from the client\n"):
    """Runs c_examples/client against 127.0.0.1:port; returns (status, process)."""
    p = Process([ctx.exe("client"), *args, "127.0.0.1", str(port)], name="client",
                stdin=subprocess.PIPE)
    p.proc.stdin.write(stdin_text)
    p.proc.stdin.close()
    rc = p.finish()
    check_sanitizers(p)
    return rc, p


@case
def case_client_against_echo_server(ctx):
    srv = ctx.track(echo_server(ctx, "--alpn", "echo/1"))
    rc, p = run_client(ctx, srv.port, "--cafile", ctx.cert("ca.pem"), "--verify-name", "localhost",
                       "--alpn", "echo/1")
    out = p.text("out")
    expect(rc == 0, f"client exited with {rc}")
    expect(re.search(r"^connected protocol=TLSv1\.3 cipher=TLS_\S+ alpn=echo/1 subject=CN=localhost$",
                     out, re.M), "client did not print its connected line")
    expect("hello from the client" in out, "the echo did not come back")
    srv.stop()


def s_server(ctx, *extra):
    p = Process(["openssl", "s_server", "-accept", "0", "-rev", "-cert", ctx.cert("server.pem"),
                 "-key", ctx.cert("server.key"), *extra], name="s_server")
    m = p.wait_for(r"^ACCEPT \S*:(\d+)$", stream="out", what="ACCEPT line")
    return p, int(m.group(1))


@case
def case_client_against_s_server_tls12(ctx):
    srv, port = s_server(ctx, "-tls1_2")
    rc, p = run_client(ctx, port, "--cafile", ctx.cert("ca.pem"), "--verify-name", "localhost",
                       stdin_text=b"abc\n")
    srv.kill()
    out = p.text("out")
    expect(re.search(r"^connected protocol=TLSv1\.2 cipher=TLS_ECDHE_\S+ ", out, re.M),
           f"client did not connect with TLS 1.2: {out}")
    expect("cba" in out, "s_server's reversed line did not come back")


@case
def case_client_host_name_mismatch(ctx):
    srv = ctx.track(echo_server(ctx))
    rc, p = run_client(ctx, srv.port, "--cafile", ctx.cert("ca.pem"), "--verify-name", "wrong.example")
    expect(rc == 1, f"client exited with {rc}, expected 1")
    expect(re.search(r"^certificate error 22 HostNameMismatch", p.text("out"), re.M),
           "client did not report HostNameMismatch (22)")
    expect("connected" not in p.text("out"), "client connected despite the wrong name")
    rc, p = run_client(ctx, srv.port, "--cafile", ctx.cert("ca.pem"), "--verify-name", "wrong.example",
                       "--ignore-errors", "22")
    expect(rc == 0, f"client with --ignore-errors 22 exited with {rc}")
    expect("hello from the client" in p.text("out"), "the echo did not come back")
    srv.stop()


# ------------------------------------------------------------------ DTLS

# The DTLS cases live in dtls_cases.py, which imports its helpers from this
# module: make it importable under its name when run as a script, so the
# cases register in this module's CASES.
sys.modules.setdefault("run_case", sys.modules[__name__])
import dtls_cases  # noqa: E402,F401


# ------------------------------------------------------------------ main

class Context:
    def __init__(self, bin_dir, tmp):
        self.bin_dir = bin_dir
        self.tmp = tmp
        self.certs = os.path.join(tmp, "certs")
        self.procs = []

    def exe(self, name):
        path = os.path.join(self.bin_dir, name)
        expect(os.access(path, os.X_OK), f"{path} is not built")
        return path

    def cert(self, name):
        return os.path.join(self.certs, name)

    def track(self, proc):
        self.procs.append(proc)
        return proc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", help="directory holding the built examples")
    ap.add_argument("--list", action="store_true", help="list the cases")
    ap.add_argument("case", nargs="?")
    args = ap.parse_args()
    if args.list:
        print("\n".join(CASES))
        return 0
    if not args.case or args.case not in CASES or not args.bin_dir:
        ap.error(f"need --bin-dir and one of: {', '.join(CASES)}")

    tmp = tempfile.mkdtemp(prefix="sslserver-c-")
    ctx = Context(os.path.abspath(args.bin_dir), tmp)
    ok = False
    try:
        subprocess.run(["bash", os.path.join(HERE, "make_certs.sh"), ctx.certs], check=True,
                       timeout=60)
        CASES[args.case](ctx)
        ok = True
    except (Failure, ssl.SSLError, OSError, subprocess.SubprocessError) as e:
        print(f"FAIL {args.case}: {type(e).__name__}: {e}", flush=True)
    finally:
        for p in ALL_PROCESSES:
            p.kill()
        if not ok:
            for p in ALL_PROCESSES:
                p.dump()
        shutil.rmtree(tmp, ignore_errors=True)
    if ok:
        print(f"PASS {args.case}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
