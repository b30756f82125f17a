"""Client certificates: accepted, queried, rejected; the mutual-TLS example."""

import re
import ssl

from harness import (expect, Server, tcp_connect, client_context, tls_connect, echo_roundtrip,
    wait_closed, peer_port_of, expect_events, case, echo_server)


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
