"""epoll_echo_server: one application thread serving every connection with
non-blocking sockets, the server's notification descriptor and epoll."""

import os
import re
import select
import ssl

from harness import (Server, client_context, expect, tcp_connect, tls_connect, echo_roundtrip,
    recv_exactly, s_client_echo, peer_port_of, wait_closed, case)


def epoll_echo_server(ctx, *args):
    return Server([ctx.exe("epoll_echo_server"), "--address", "127.0.0.1", "--port", "0",
                   "--cert", ctx.cert("server.pem"), "--key", ctx.cert("server.key"), *args],
                  name="epoll_echo_server")


@case
def case_epoll_echo(ctx):
    srv = ctx.track(epoll_echo_server(ctx))
    # The same output as echo_server: the session line, then the close.
    c = s_client_echo(ctx, srv, "-tls1_3")
    expect("Verify return code: 0 (ok)" in c.text("out"), "s_client did not verify the server")
    srv.wait_for(r"^connection 127\.0\.0\.1:\d+: TLSv1\.3 TLS_\S+ alpn=- client-certificates=0$",
                 stream="err")
    srv.wait_for(r"^connection 127\.0\.0\.1:\d+ closed$", stream="err")

    # More than the library queues per socket (256 KiB) while the client
    # sends it all before reading: partial writes, nothing lost or reordered.
    payload = os.urandom(3 * 1024 * 1024)
    with tls_connect(ctx, srv.port) as s:
        port = peer_port_of(s)
        sent, got = 0, bytearray()
        s.setblocking(False)
        while len(got) < len(payload):
            progressed = False
            if sent < len(payload):
                try:
                    sent += s.send(payload[sent:sent + 65536])
                    progressed = True
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
            try:
                chunk = s.recv(65536)
                expect(chunk, f"the server closed after {len(got)} echoed bytes")
                got += chunk
                progressed = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                pass
            if not progressed:
                writing = [s] if sent < len(payload) else []
                r, w, _ = select.select([s], writing, [], 20.0)
                expect(r or w, "the echo stalled")
        expect(bytes(got) == payload, "echoed bytes differ from the bytes sent")
        s.setblocking(True)
        s.settimeout(20.0)
        # Our close_notify is answered with the server's.
        s.unwrap()
    srv.wait_for(rf"^connection 127\.0\.0\.1:{port} closed$", stream="err")
    srv.stop()


@case
def case_epoll_200_concurrent_clients(ctx):
    # One thread for all: every client gets its echo while the 199 others
    # are connected and idle.
    srv = ctx.track(epoll_echo_server(ctx, "--quiet"))
    socks = []
    try:
        for _ in range(200):
            socks.append(tls_connect(ctx, srv.port))
        for rnd in range(2):
            for i, s in enumerate(reversed(socks)):
                echo_roundtrip(s, f"client {i} round {rnd}\n".encode())
        # All of them at once: every client sends before any reads.
        for i, s in enumerate(socks):
            s.sendall(f"burst {i}\n".encode())
        for i, s in enumerate(socks):
            msg = f"burst {i}\n".encode()
            expect(recv_exactly(s, len(msg)) == msg, f"client {i} got another's echo")
    finally:
        for s in socks:
            s.close()
    srv.stop()


@case
def case_epoll_sigterm_with_clients(ctx):
    srv = ctx.track(epoll_echo_server(ctx))
    tls = [tls_connect(ctx, srv.port) for _ in range(3)]
    for s in tls:
        echo_roundtrip(s, b"connected")     # served by the event loop
    # One client with output queued in the server: it sends without reading.
    busy = tls_connect(ctx, srv.port)
    busy.setblocking(False)
    try:
        for _ in range(200):
            busy.send(b"x" * 65536)
    except (ssl.SSLWantWriteError, BlockingIOError):
        pass
    busy.setblocking(True)
    silent = tcp_connect(srv.port)          # still in its handshake
    srv.wait_for(rf"^\[event\] NEW_CONNECTION 127\.0\.0\.1:{peer_port_of(silent)}", stream="err")
    srv.stop()                              # exit 0, in time, no sanitizer report
    for s in tls + [silent]:
        _, data = wait_closed(s, timeout=5.0)
        s.close()
        expect(data == b"", "unexpected data at shutdown")
    busy.close()
    expect(re.search(r"^received SIGTERM, shutting down$", srv.text("err"), re.M),
           "the shutdown was not logged")


def echo_then_close_notify(ctx, port, payload):
    """Sends `payload` and, right behind it, close_notify; returns the bytes
    echoed before the server's close_notify, and whether one came."""
    c = client_context(ctx)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = c.wrap_bio(incoming, outgoing, server_hostname="localhost")
    sock = tcp_connect(port)

    def flush():
        data = outgoing.read()
        if data:
            sock.sendall(data)

    def receive():
        data = sock.recv(65536)
        expect(data, "the server closed TCP before its close_notify")
        incoming.write(data)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            flush()
            receive()
    tls.write(payload)
    try:
        tls.unwrap()            # queues our close_notify behind the data
    except ssl.SSLWantReadError:
        pass
    flush()
    echoed = bytearray()
    while True:
        try:
            echoed += tls.read(65536)
            continue
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            break
        receive()
    sock.close()
    return bytes(echoed)


@case
def case_epoll_data_then_close_notify(ctx):
    # The server gathers what is readable before echoing it; close_notify
    # right behind the data must still come after the whole echo, also when
    # the echo takes several partial writes (3 MiB > the 256 KiB queue).
    srv = ctx.track(epoll_echo_server(ctx, "--quiet"))
    for size in (1000, 3 * 1024 * 1024):
        payload = os.urandom(size)
        expect(echo_then_close_notify(ctx, srv.port, payload) == payload,
               f"{size} bytes followed by close_notify were not all echoed before the close")
    srv.stop()
