"""Client mode: c_examples/client against echo_server and openssl s_server."""

import re
import subprocess

from harness import expect, Process, check_sanitizers, case, echo_server


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
