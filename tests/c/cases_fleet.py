"""A fleet: echo_server processes behind HAProxy (TCP mode, PROXY protocol
v2, round robin) sharing session ticket keys; two processes on one port
with --reuse-port; and echo_server's per-certificate TLS options (SNI,
OCSP, ciphers, groups, key log) seen by openssl s_client."""

import os
import re
import shutil
import socket
import subprocess
import time

from harness import (TIMEOUT, Failure, Process, case, client_context, echo_roundtrip, echo_server,
                     expect, s_client_echo, tcp_connect)

CONNECTION_LINE = r"^connection (\S+) via (\S+): TLSv1\.[23] "


def write_key(path, size):
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """Whether some socket listens on 127.0.0.1:port or *:port (from
    /proc/net/tcp, so that checking does not open a connection)."""
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            if fields[1].endswith(want) and fields[3] == "0A":
                return True
    return False


def start_haproxy(ctx, servers):
    expect(shutil.which("haproxy"), "haproxy is not installed (apt-get install haproxy; "
           "scripts/test.sh installs it)")
    port = free_port()
    config = os.path.join(ctx.tmp, "haproxy.cfg")
    backends = "".join(f"    server s{i} 127.0.0.1:{srv.port} send-proxy-v2\n"
                       for i, srv in enumerate(servers))
    with open(config, "w") as f:
        f.write("global\n    maxconn 256\n"
                "defaults\n    mode tcp\n    timeout connect 5s\n"
                "    timeout client 60s\n    timeout server 60s\n"
                f"frontend tls_in\n    bind 127.0.0.1:{port}\n    default_backend fleet\n"
                "backend fleet\n    balance roundrobin\n" + backends)
    proxy = ctx.track(Process(["haproxy", "-f", config, "-db"], name="haproxy"))
    deadline = time.monotonic() + TIMEOUT
    while not listening(port):
        if proxy.proc.poll() is not None:
            raise Failure(f"haproxy exited with {proxy.proc.returncode}")
        if time.monotonic() > deadline:
            raise Failure(f"haproxy does not listen on {port}")
        time.sleep(0.05)
    proxy.port = port
    return proxy


def fleet_server(ctx, keys, port=0):
    return ctx.track(echo_server(ctx, "--proxy-protocol", "--ticket-keys", ",".join(keys),
                                 "--port", str(port)))


def landed_on(servers, before, what):
    """The one server whose count of connection lines grew since `before`."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        grown = [i for i, srv in enumerate(servers)
                 if srv.count(CONNECTION_LINE, stream="err") > before[i]]
        if grown:
            expect(len(grown) == 1, f"{what}: both servers logged a connection")
            return grown[0]
        time.sleep(0.05)
    raise Failure(f"{what}: no server logged the connection")


def through_haproxy(ctx, servers, proxy, what, *extra):
    """One s_client session through HAProxy; returns (server index,
    whether s_client says the session was reused)."""
    before = [srv.count(CONNECTION_LINE, stream="err") for srv in servers]
    c = s_client_echo(ctx, proxy, *extra)
    reused = re.search(r"^Reused, TLSv1\.3", c.text("out"), re.M) is not None
    expect(reused or re.search(r"^New, TLSv1\.3", c.text("out"), re.M),
           f"{what}: s_client printed neither New nor Reused")
    index = landed_on(servers, before, what)
    lines = re.findall(CONNECTION_LINE + r".*$", servers[index].text("err"), re.M)
    expect(lines, f"{what}: no connection line")
    return index, reused


def restart(ctx, servers, keys):
    ports = [srv.port for srv in servers]
    for srv in servers:
        srv.stop()
    return [fleet_server(ctx, keys, port) for port in ports]


@case
def case_fleet_haproxy_shared_tickets(ctx):
    key_a = write_key(os.path.join(ctx.tmp, "a.key"), 80)
    key_b = write_key(os.path.join(ctx.tmp, "b.key"), 48)
    servers = [fleet_server(ctx, [key_a]) for _ in range(2)]
    proxy = start_haproxy(ctx, servers)
    sess_a = os.path.join(ctx.tmp, "a.sess")
    sess_b = os.path.join(ctx.tmp, "b.sess")

    first, reused = through_haproxy(ctx, servers, proxy, "first session", "-sess_out", sess_a)
    expect(not reused, "the first session cannot be a resumption")
    second, reused = through_haproxy(ctx, servers, proxy, "resumption", "-sess_in", sess_a)
    expect(second != first, "round robin sent the resumption to the same process")
    expect(reused, "a ticket of one process did not resume on the other")
    expect(re.search(CONNECTION_LINE + r".* resumed$", servers[second].text("err"), re.M),
           "the other process did not log the resumed session")

    # The client's own address and port, not HAProxy's, in the server's log:
    # the client connects from 127.0.0.2, HAProxy from 127.0.0.1.
    raw = socket.socket()
    raw.settimeout(TIMEOUT)
    raw.bind(("127.0.0.2", 0))
    raw.connect(("127.0.0.1", proxy.port))
    client_port = raw.getsockname()[1]
    with client_context(ctx).wrap_socket(raw, server_hostname="localhost") as tls:
        echo_roundtrip(tls, b"which address?\n")
    rx = rf"^connection 127\.0\.0\.2:{client_port} via 127\.0\.0\.1: TLSv1\.3 "
    deadline = time.monotonic() + TIMEOUT
    while not any(srv.count(rx, stream="err") for srv in servers):
        expect(time.monotonic() < deadline, "no server logged the client's own address")
        time.sleep(0.05)

    # Rotation: a new key first, the old one still decrypts.
    servers = restart(ctx, servers, [key_b, key_a])
    for attempt in range(2):  # once on each process
        _, reused = through_haproxy(ctx, servers, proxy, f"old ticket after rotation #{attempt}",
                                    "-sess_in", sess_a)
        expect(reused, "a ticket of the old key did not resume after the rotation")
    _, reused = through_haproxy(ctx, servers, proxy, "a session after rotation", "-sess_out", sess_b)
    expect(not reused, "a session without -sess_in cannot be a resumption")

    # With the old key gone: the new ticket resumes, the old one does not,
    # so the new ticket was encrypted with the new key.
    servers = restart(ctx, servers, [key_b])
    _, reused = through_haproxy(ctx, servers, proxy, "new ticket, old key retired", "-sess_in", sess_b)
    expect(reused, "a ticket issued after the rotation was not under the new key")
    _, reused = through_haproxy(ctx, servers, proxy, "old ticket, old key retired", "-sess_in", sess_a)
    expect(not reused, "a ticket of a retired key still resumed")

    proxy.kill()
    for srv in servers:
        srv.stop()


@case
def case_fleet_reuse_port(ctx):
    first = ctx.track(echo_server(ctx, "--reuse-port"))
    second = ctx.track(echo_server(ctx, "--reuse-port", "--port", str(first.port)))
    expect(second.port == first.port, "the second process listens on another port")
    # The kernel spreads connections over the two listeners by a hash of the
    # client's address and port: 64 connections all landing on one of them
    # has a probability of 2^-63.
    rx = r"^connection 127\.0\.0\.1:\d+: TLSv1\.3 "
    for n in range(64):
        with client_context(ctx).wrap_socket(tcp_connect(first.port),
                                             server_hostname="localhost") as tls:
            echo_roundtrip(tls, b"ping\n")
        if first.count(rx, stream="err") and second.count(rx, stream="err"):
            break
    expect(first.count(rx, stream="err") > 0 and second.count(rx, stream="err") > 0,
           f"after {n + 1} connections one process took none")
    # Without the option, the port is taken.
    third = ctx.track(Process([ctx.exe("echo_server"), "--address", "127.0.0.1", "--port",
                               str(first.port), "--cert", ctx.cert("server.pem"), "--key",
                               ctx.cert("server.key")], name="echo_server without --reuse-port"))
    rc = third.finish()
    expect(rc != 0 and "listening on" not in third.text("out"),
           "a third process listened on the port without --reuse-port")
    expect(re.search(r"listen: .*in use", third.text("err")),
           "the refused listen does not say the address is in use")
    first.stop()
    second.stop()


def make_wildcard_certificate(ctx):
    """A certificate for *.example.test signed by the test CA."""
    d = ctx.certs
    ext = os.path.join(d, "wildcard.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:*.example.test\n")
    run = lambda *argv: subprocess.run(argv, check=True, timeout=60, capture_output=True)  # noqa: E731
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", os.path.join(d, "wildcard.key"), "-out", os.path.join(d, "wildcard.csr"),
        "-subj", "/CN=wildcard example.test")
    run("openssl", "x509", "-req", "-in", os.path.join(d, "wildcard.csr"), "-CA",
        os.path.join(d, "ca.pem"), "-CAkey", os.path.join(d, "ca.key"), "-set_serial", "0x1234",
        "-days", "2", "-out", os.path.join(d, "wildcard.pem"), "-extfile", ext)
    return os.path.join(d, "wildcard.pem"), os.path.join(d, "wildcard.key")


def handshake(ctx, port, *extra):
    """s_client's output for one handshake (stdin closed at once)."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
            ctx.cert("ca.pem"), "-nocommands", *extra]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
    return done.returncode, done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")


@case
def case_fleet_tls_options(ctx):
    chain, key = make_wildcard_certificate(ctx)
    ocsp = os.path.join(ctx.tmp, "ocsp.der")
    index = os.path.join(ctx.tmp, "index.txt")
    open(index, "w").close()
    subprocess.run(["openssl", "ocsp", "-index", index, "-rsigner", ctx.cert("ca.pem"), "-rkey",
                    ctx.cert("ca.key"), "-CA", ctx.cert("ca.pem"), "-issuer", ctx.cert("ca.pem"),
                    "-cert", ctx.cert("server.pem"), "-respout", ocsp, "-ndays", "1"],
                   check=True, timeout=60, capture_output=True)
    key_log = os.path.join(ctx.tmp, "server.keys")
    client_log = os.path.join(ctx.tmp, "client.keys")
    srv = ctx.track(echo_server(ctx, "--sni", f"*.example.test={chain}:{key}", "--ocsp", ocsp,
                                "--ciphers", "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384",
                                "--groups", "X25519", "--key-log", key_log))

    rc, out = handshake(ctx, srv.port, "-servername", "www.example.test", "-status",
                        "-keylogfile", client_log)
    expect(rc == 0, f"s_client failed: {out}")
    expect(re.search(r"subject=.*CN ?= ?wildcard example\.test", out), "SNI: not the wildcard certificate")
    expect("Cipher is TLS_CHACHA20_POLY1305_SHA256" in out, "the first configured suite was not chosen")
    expect("Server Temp Key: X25519" in out, "the configured group was not used")
    expect("OCSP Response Status: successful" not in out,
           "the OCSP response was stapled with an SNI certificate (it belongs to the default)")

    rc, out = handshake(ctx, srv.port, "-servername", "localhost", "-status")
    expect(rc == 0, f"s_client failed: {out}")
    expect(re.search(r"subject=.*CN ?= ?localhost", out), "the default certificate was not served")
    expect("OCSP Response Status: successful" in out, "no stapled OCSP response")

    rc, out = handshake(ctx, srv.port, "-servername", "localhost", "-groups", "P-256")
    expect(rc != 0, "a client with only P-256 connected though only X25519 is configured")
    rc, out = handshake(ctx, srv.port, "-servername", "localhost", "-ciphersuites",
                        "TLS_AES_128_GCM_SHA256")
    expect(rc != 0, "a client with only TLS_AES_128_GCM_SHA256 connected")

    # The key log: the client's and the server's secrets of the first session agree.
    def secrets(path):
        with open(path) as f:
            return {tuple(line.split()[1:]) for line in f if line.startswith("CLIENT_TRAFFIC_SECRET_0 ")}
    deadline = time.monotonic() + TIMEOUT
    while not (os.path.exists(key_log) and secrets(key_log)):
        expect(time.monotonic() < deadline, "the server wrote no CLIENT_TRAFFIC_SECRET_0")
        time.sleep(0.05)
    expect(secrets(client_log) and secrets(client_log) <= secrets(key_log),
           "the client's CLIENT_TRAFFIC_SECRET_0 is not in the server's key log")
    srv.stop()

    # Bad options fail at start, naming what is wrong.
    for args, pattern in ((["--ciphers", "TLS_NOT_A_SUITE"], r"TLS_NOT_A_SUITE"),
                          (["--groups", "X25519:nosuchgroup"], r"nosuchgroup"),
                          (["--ticket-keys", os.path.join(ctx.tmp, "missing.key")], r"missing\.key"),
                          (["--ocsp", index], r"index\.txt: empty file"),
                          (["--ocsp", ctx.cert("server.pem")], r"server\.pem: .*OCSP")):
        p = ctx.track(Process([ctx.exe("echo_server"), "--address", "127.0.0.1", "--port", "0",
                               *args], name="echo_server " + args[0]))
        rc = p.finish()
        expect(rc != 0 and "listening on" not in p.text("out"), f"{args[0]}: started anyway")
        expect(re.search(pattern, p.text("err")), f"{args[0]}: the error does not name the problem: "
               f"{p.text('err')!r}")
