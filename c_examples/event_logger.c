/*
 * event_logger -- prints every event the server emits, with every field.
 *
 *   event_logger [--address A] [--port P] [--cert CHAIN.pem --key KEY.pem]
 *                [--ca CA.pem] [--verify none|query|verify]
 *                [--handshake-timeout MS] [--interrupt-on-error]
 *
 * A tool for seeing Qt's QSslServer signals as this library reports them:
 * connect any client (openssl s_client, curl -k, a plain `nc`) and watch.
 * Connections that complete the handshake get "bye\n" and are closed.
 * Without --cert a self-signed certificate for localhost is generated.
 * Runs until SIGINT or SIGTERM.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sslserver.h"

static atomic_ulong event_counter;

static bool check(sslserver_result r, const char *what)
{
    if (r == SSLSERVER_OK)
        return true;
    char detail[512];
    snprintf(detail, sizeof detail, "%s", sslserver_last_error_message());
    fprintf(stderr, "event_logger: %s: %s%s%s\n", what, sslserver_result_string(r),
            detail[0] ? ": " : "", detail);
    return false;
}

static const char *alert_level_name(sslserver_alert_level level)
{
    switch (level) {
    case SSLSERVER_ALERT_WARNING:
        return "warning";
    case SSLSERVER_ALERT_FATAL:
        return "fatal";
    default:
        return "unknown";
    }
}

/* Callbacks may run concurrently on several library threads: each event is
   formatted into one buffer and written with a single call so that events
   never interleave. */
struct text {
    char buf[8192];
    size_t len;
};

static void add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add(struct text *t, const char *fmt, ...)
{
    if (t->len >= sizeof t->buf)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(t->buf + t->len, sizeof t->buf - t->len, fmt, ap);
    va_end(ap);
    if (w > 0)
        t->len += (size_t)w;
    if (t->len >= sizeof t->buf)
        t->len = sizeof t->buf - 1;   /* truncated; keep the NUL */
}

static void on_event(const sslserver_event *ev, void *userdata)
{
    (void)userdata;
    struct text t = { .len = 0 };
    unsigned long n = atomic_fetch_add(&event_counter, 1) + 1;

    add(&t, "event %lu: %s (%d)\n", n, sslserver_event_kind_name(ev->kind), (int)ev->kind);
    if (ev->socket) {
        char addr[64];
        size_t len = 0;
        if (sslsocket_peer_address(ev->socket, addr, sizeof addr, &len) != SSLSERVER_OK)
            snprintf(addr, sizeof addr, "?");
        add(&t, "  socket: peer %s port %u, local port %u, state %d, encrypted %s\n", addr,
            (unsigned)sslsocket_peer_port(ev->socket), (unsigned)sslsocket_local_port(ev->socket),
            (int)sslsocket_state(ev->socket), sslsocket_is_encrypted(ev->socket) ? "yes" : "no");
    } else {
        add(&t, "  socket: (none)\n");
    }
    add(&t, "  socket_error: %s (%d)\n", sslserver_socket_error_name(ev->socket_error),
        (int)ev->socket_error);
    add(&t, "  ssl_error_count: %zu\n", ev->ssl_error_count);
    for (size_t i = 0; ev->ssl_errors && i < ev->ssl_error_count; i++) {
        const sslserver_ssl_error *e = &ev->ssl_errors[i];
        add(&t, "  ssl_errors[%zu]: %s (%d) \"%s\", certificate %zu bytes DER\n", i,
            sslserver_ssl_error_code_name(e->code), (int)e->code, e->message ? e->message : "",
            e->certificate_der ? e->certificate_der_len : (size_t)0);
    }
    add(&t, "  alert_level: %s (%d)\n", alert_level_name(ev->alert_level), (int)ev->alert_level);
    add(&t, "  alert_type: %d\n", (int)ev->alert_type);
    add(&t, "  description: %s\n", ev->description ? ev->description : "");
    fwrite(t.buf, 1, t.len, stdout);
    fflush(stdout);
}

static bool stop_signal_pending(const sigset_t *set)
{
    static const struct timespec zero = { 0, 0 };
    return sigtimedwait(set, NULL, &zero) > 0;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: event_logger [--address A] [--port P] [--cert CHAIN.pem --key KEY.pem]\n"
                 "                    [--ca CA.pem] [--verify none|query|verify]\n"
                 "                    [--handshake-timeout MS] [--interrupt-on-error]\n");
}

int main(int argc, char **argv)
{
    const char *address = NULL, *cert = NULL, *key = NULL, *ca = NULL, *verify = NULL;
    long port = 4433, handshake_timeout = -2;
    bool interrupt_on_error = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--interrupt-on-error")) {
            interrupt_on_error = true;
            continue;
        }
        if (!v) {
            usage(stderr);
            return 2;
        }
        i++;
        char *end = NULL;
        errno = 0;
        if (!strcmp(a, "--address"))
            address = v;
        else if (!strcmp(a, "--cert"))
            cert = v;
        else if (!strcmp(a, "--key"))
            key = v;
        else if (!strcmp(a, "--ca"))
            ca = v;
        else if (!strcmp(a, "--verify"))
            verify = v;
        else if (!strcmp(a, "--port")) {
            port = strtol(v, &end, 10);
            if (errno || *end || end == v || port < 0 || port > 65535) {
                fprintf(stderr, "event_logger: bad port '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--handshake-timeout")) {
            handshake_timeout = strtol(v, &end, 10);
            if (errno || *end || end == v || handshake_timeout < -1 || handshake_timeout > 86400000) {
                fprintf(stderr, "event_logger: bad timeout '%s'\n", v);
                return 2;
            }
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!cert != !key || (verify && strcmp(verify, "none") && strcmp(verify, "query") &&
                          strcmp(verify, "verify"))) {
        usage(stderr);
        return 2;
    }

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
        fprintf(stderr, "event_logger: sslconfig_new failed: %s\n", sslserver_last_error_message());
        return 1;
    }
    if (cert) {
        if (!check(sslconfig_set_certificate_chain_file(cfg, cert), cert) ||
            !check(sslconfig_set_private_key_file(cfg, key, NULL), key))
            goto out;
    } else if (!check(sslconfig_generate_self_signed(cfg, NULL, 0), "sslconfig_generate_self_signed")) {
        goto out;
    }
    if (ca && !check(sslconfig_add_ca_certificates_file(cfg, ca), ca))
        goto out;
    if (verify) {
        sslserver_peer_verify_mode mode = !strcmp(verify, "none")    ? SSLSERVER_VERIFY_NONE
                                          : !strcmp(verify, "query") ? SSLSERVER_QUERY_PEER
                                                                     : SSLSERVER_VERIFY_PEER;
        if (!check(sslconfig_set_peer_verify_mode(cfg, mode), "sslconfig_set_peer_verify_mode"))
            goto out;
    }
    if (interrupt_on_error &&
        !check(sslconfig_set_handshake_must_interrupt_on_error(cfg, true),
               "sslconfig_set_handshake_must_interrupt_on_error"))
        goto out;

    server = sslserver_new();
    if (!server) {
        fprintf(stderr, "event_logger: sslserver_new failed: %s\n", sslserver_last_error_message());
        goto out;
    }
    if (!check(sslserver_set_config(server, cfg), "sslserver_set_config"))
        goto out;
    if (handshake_timeout != -2 &&
        !check(sslserver_set_handshake_timeout(server, (int)handshake_timeout), "--handshake-timeout"))
        goto out;

    /* Every kind, in declaration order. PSK is reported as unsupported by the
       rustls engine: say so and carry on. */
    for (int k = SSLSERVER_EVENT_NEW_CONNECTION; k <= SSLSERVER_EVENT_ACCEPT_ERROR; k++) {
        sslserver_result r = sslserver_register_callback(server, (sslserver_event_kind)k, on_event, NULL);
        if (r == SSLSERVER_ERROR_UNSUPPORTED) {
            printf("note: %s events are not supported by this build\n",
                   sslserver_event_kind_name((sslserver_event_kind)k));
            continue;
        }
        if (!check(r, sslserver_event_kind_name((sslserver_event_kind)k)))
            goto out;
    }
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
        if (!sslserver_wait_for_new_connection(server, 200, &timed_out)) {
            if (timed_out)
                continue;
            fprintf(stderr, "event_logger: waiting for connections failed: %s\n",
                    sslserver_socket_error_name(sslserver_server_error(server)));
            goto out;
        }
        sslsocket *s;
        while ((s = sslserver_next_pending_connection(server)) != NULL) {
            char proto_cipher[128] = "?";
            if (sslsocket_session_cipher(s, proto_cipher, sizeof proto_cipher, &n) != SSLSERVER_OK)
                snprintf(proto_cipher, sizeof proto_cipher, "?");
            printf("taken: %s %s, %zu client certificate(s), %zu handshake error(s)\n",
                   sslserver_protocol_name(sslsocket_session_protocol(s)), proto_cipher,
                   sslsocket_peer_certificate_chain_length(s), sslsocket_ssl_handshake_error_count(s));
            fflush(stdout);
            check(sslsocket_write(s, (const uint8_t *)"bye\n", 4, &n), "sslsocket_write");
            check(sslsocket_disconnect_from_host(s), "sslsocket_disconnect_from_host");
            sslsocket_free(s);
        }
    }
    rc = 0;

out:
    sslserver_free(server);
    sslconfig_free(cfg);
    return rc;
}
