/*
 * mutual_tls_server -- a server that only talks to clients holding a
 * certificate issued by a CA it trusts (mutual TLS).
 *
 *   mutual_tls_server --cert CHAIN.pem --key KEY.pem [--key-passphrase S] --ca CA.pem
 *                     [--address A] [--port P] [--quiet]
 *
 * With SSLSERVER_VERIFY_PEER the library rejects a missing, untrusted or
 * self-signed client certificate during the handshake, so every connection
 * this program receives has a verified client certificate. For each one it
 * prints the certificate chain's size, sends a greeting line, echoes back the
 * first message the client sends, and closes.
 *
 * Connections are served one at a time to keep the example short; see
 * echo_server.c for one thread per connection. SIGINT/SIGTERM are blocked and
 * polled between short waits (sigtimedwait with a zero timeout), so no code
 * runs in a signal handler.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sslserver.h"

/* How long a verified client may take to send its message. */
#define CLIENT_MESSAGE_TIMEOUT_MS 10000
/* How often the accept loop looks for SIGINT/SIGTERM. */
#define SIGNAL_POLL_MS 200

static bool check(sslserver_result r, const char *what)
{
    if (r == SSLSERVER_OK)
        return true;
    char detail[512];
    /* Copy the detail before the next library call replaces it. */
    snprintf(detail, sizeof detail, "%s", sslserver_last_error_message());
    fprintf(stderr, "mutual_tls_server: %s: %s%s%s\n", what, sslserver_result_string(r),
            detail[0] ? ": " : "", detail);
    return false;
}

static void format_peer(const sslsocket *s, char *out, size_t outlen)
{
    char addr[64];
    size_t n = 0;
    if (sslsocket_peer_address(s, addr, sizeof addr, &n) != SSLSERVER_OK)
        snprintf(addr, sizeof addr, "?");
    snprintf(out, outlen, strchr(addr, ':') ? "[%s]:%u" : "%s:%u", addr,
             (unsigned)sslsocket_peer_port(s));
}

/* Rejected clients never reach the accept loop: these events are the only
   place to see why they were refused. */
static void log_rejection(const sslserver_event *ev, void *userdata)
{
    (void)userdata;
    char peer[80] = "-", codes[512] = "";
    size_t off = 0;
    if (ev->socket)
        format_peer(ev->socket, peer, sizeof peer);
    for (size_t i = 0; ev->ssl_errors && i < ev->ssl_error_count && off < sizeof codes; i++) {
        int w = snprintf(codes + off, sizeof codes - off, " %s",
                         sslserver_ssl_error_code_name(ev->ssl_errors[i].code));
        if (w > 0)
            off += (size_t)w;
    }
    fprintf(stderr, "[event] %s %s%s%s%s: %s\n", sslserver_event_kind_name(ev->kind), peer,
            ev->kind == SSLSERVER_EVENT_ERROR_OCCURRED ? " " : "",
            ev->kind == SSLSERVER_EVENT_ERROR_OCCURRED ? sslserver_socket_error_name(ev->socket_error) : "",
            codes, ev->description ? ev->description : "");
}

static void serve(sslsocket *s, bool quiet)
{
    char peer[80];
    format_peer(s, peer, sizeof peer);

    /* Index 0 is the client's own certificate, then its intermediates. */
    size_t chain = sslsocket_peer_certificate_chain_length(s);
    size_t leaf_len = 0;
    printf("client %s: certificate chain length %zu\n", peer, chain);
    for (size_t i = 0; i < chain; i++) {
        const uint8_t *der = NULL;
        size_t der_len = 0;
        if (!check(sslsocket_peer_certificate_der(s, i, &der, &der_len), "sslsocket_peer_certificate_der"))
            return;
        if (i == 0)
            leaf_len = der_len;
        printf("  certificate %zu: %zu bytes DER\n", i, der_len);
    }
    fflush(stdout);

    char greeting[256];
    int glen = snprintf(greeting, sizeof greeting,
                        "hello %s, your certificate chain has %zu certificate(s), leaf %zu bytes DER\n",
                        peer, chain, leaf_len);
    size_t n = 0;
    if (!check(sslsocket_write(s, (const uint8_t *)greeting, (size_t)glen, &n), peer))
        return;

    /* A bounded wait: serving one client at a time, a silent client must not
       hold the server forever. */
    if (!sslsocket_wait_for_ready_read(s, CLIENT_MESSAGE_TIMEOUT_MS)) {
        if (!quiet)
            fprintf(stderr, "client %s sent nothing, closing\n", peer);
        check(sslsocket_disconnect_from_host(s), peer);
        return;
    }
    uint8_t buf[4096];
    if (!check(sslsocket_read(s, buf, sizeof buf, &n), peer))
        return;
    if (n > 0 && !check(sslsocket_write(s, buf, n, &n), peer))
        return;
    check(sslsocket_disconnect_from_host(s), peer);
}

static bool stop_signal_pending(const sigset_t *set)
{
    static const struct timespec zero = { 0, 0 };
    return sigtimedwait(set, NULL, &zero) > 0;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: mutual_tls_server --cert CHAIN.pem --key KEY.pem [--key-passphrase S]\n"
                 "                         --ca CA.pem [--address A] [--port P] [--quiet]\n");
}

int main(int argc, char **argv)
{
    const char *cert = NULL, *key = NULL, *passphrase = NULL, *ca = NULL, *address = NULL;
    long port = 4433;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quiet")) {
            quiet = true;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--cert"))
            cert = v;
        else if (!strcmp(a, "--key"))
            key = v;
        else if (!strcmp(a, "--key-passphrase"))
            passphrase = v;
        else if (!strcmp(a, "--ca"))
            ca = v;
        else if (!strcmp(a, "--address"))
            address = v;
        else if (!strcmp(a, "--port")) {
            char *end;
            errno = 0;
            port = strtol(v, &end, 10);
            if (errno || *end || end == v || port < 0 || port > 65535) {
                fprintf(stderr, "mutual_tls_server: bad port '%s'\n", v);
                return 2;
            }
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!cert || !key || !ca) {
        usage(stderr);
        return 2;
    }

    /* Blocked before the library starts threads, which inherit the mask. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    sigprocmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    sslserver *server = NULL;
    sslconfig *cfg = sslconfig_new();
    if (!cfg) {
        fprintf(stderr, "mutual_tls_server: sslconfig_new failed: %s\n", sslserver_last_error_message());
        return 1;
    }
    if (!check(sslconfig_set_certificate_chain_file(cfg, cert), cert) ||
        !check(sslconfig_set_private_key_file(cfg, key, passphrase), key) ||
        !check(sslconfig_add_ca_certificates_file(cfg, ca), ca) ||
        /* VERIFY_PEER: a client without a trusted certificate fails the
           handshake (the server default, QUERY_PEER, would let it in). */
        !check(sslconfig_set_peer_verify_mode(cfg, SSLSERVER_VERIFY_PEER), "sslconfig_set_peer_verify_mode"))
        goto out;

    server = sslserver_new();
    if (!server) {
        fprintf(stderr, "mutual_tls_server: sslserver_new failed: %s\n", sslserver_last_error_message());
        goto out;
    }
    if (!check(sslserver_set_config(server, cfg), "sslserver_set_config"))
        goto out;
    if (!quiet &&
        (!check(sslserver_register_callback(server, SSLSERVER_EVENT_PEER_VERIFY_ERROR, log_rejection, NULL),
                "sslserver_register_callback") ||
         !check(sslserver_register_callback(server, SSLSERVER_EVENT_ERROR_OCCURRED, log_rejection, NULL),
                "sslserver_register_callback")))
        goto out;
    if (!check(sslserver_listen(server, address, (uint16_t)port), "listen"))
        goto out;

    char addr[64];
    size_t n = 0;
    if (!check(sslserver_server_address(server, addr, sizeof addr, &n), "sslserver_server_address"))
        goto out;
    printf(strchr(addr, ':') ? "listening on [%s]:%u\n" : "listening on %s:%u\n", addr,
           (unsigned)sslserver_server_port(server));
    fflush(stdout);

    while (!stop_signal_pending(&stop_signals)) {
        bool timed_out = false;
        if (!sslserver_wait_for_new_connection(server, SIGNAL_POLL_MS, &timed_out)) {
            if (timed_out)
                continue;
            fprintf(stderr, "mutual_tls_server: waiting for connections failed: %s\n",
                    sslserver_socket_error_name(sslserver_server_error(server)));
            goto out;
        }
        sslsocket *s;
        while ((s = sslserver_next_pending_connection(server)) != NULL) {
            serve(s, quiet);
            sslsocket_free(s);
        }
    }
    rc = 0;

out:
    sslserver_free(server);   /* closes the listener, aborts handshakes in flight */
    sslconfig_free(cfg);
    return rc;
}
