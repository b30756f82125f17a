"""Shared harness of the C example tests: processes whose output is collected
line by line, TLS clients, and the case registry (see run_case.py)."""

import os
import re
import signal
import socket
import ssl
import subprocess
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
