/*
 * echo_server -- a TLS echo server (or a minimal HTTPS server) on libsslserver.
 *
 *   echo_server [--address A] [--port P] [--cert CHAIN.pem --key KEY.pem [--key-passphrase S]]
 *               [--ca CA.pem] [--verify none|query|verify] [--handshake-timeout MS]
 *               [--max-pending N] [--alpn p1,p2] [--http [--request-timeout MS]]
 *               [--write-cert FILE] [--quiet]
 *               [--reuse-port] [--proxy-protocol] [--ticket-keys FILE[,FILE...]]
 *               [--sni NAME=CHAIN.pem:KEY.pem]... [--ocsp FILE.der]
 *               [--ciphers NAMES] [--groups NAMES] [--key-log FILE]
 *
 * The options and the configuration built from them are in
 * server_options.c (`echo_server --help` describes each).
 *
 * Design, as in Qt's threaded server examples:
 *   - the library accepts TCP connections and runs the TLS handshakes on its
 *     own threads, and only hands out connections that are encrypted;
 *   - an accept thread takes them (sslserver_wait_for_new_connection +
 *     sslserver_next_pending_connection) and starts one thread per connection
 *     that uses plain blocking reads and writes;
 *   - SIGINT and SIGTERM are blocked in every thread and received
 *     synchronously by the main thread with sigwait(), so no code runs in a
 *     signal handler and no library call is ever interrupted by EINTR.
 *   - --http answers one HTTP/1.0 request per connection instead of
 *     echoing; that mode is in echo_server_http.c.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "echo_server_http.h"
#include "server_options.h"
#include "sslserver.h"

static sslserver *server;
static atomic_bool stop_requested;
static atomic_bool accept_failed;
static pthread_t main_thread;

/* Connections handed to connection threads. The registry exists so that
   shutdown can abort them (their threads may be blocked in sslsocket_read)
   and then wait until every thread has freed its connection. */
struct connection {
    sslsocket *socket;
    char peer[160];
    struct connection *prev, *next;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t all_done;   /* signalled when count drops to 0 */
    struct connection *head;
    size_t count;              /* registered + threads still cleaning up */
} registry = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0 };

/* ------------------------------------------------------------------ helpers */

/* Logs why a connection ended early. Not an error of the server: peers
   often close TCP without close_notify, and at shutdown we abort them. */
static void report_end(const struct connection *c, sslserver_result r)
{
    if (atomic_load(&stop_requested) || opts.quiet)
        return;
    char detail[512];
    snprintf(detail, sizeof detail, "%s", sslserver_last_error_message());
    fprintf(stderr, "connection %s: %s (%s)\n", c->peer, detail, sslserver_result_string(r));
}

/* ------------------------------------------------------------------- events */

/* One line per event. Runs on the library's threads, possibly several at
   once: build the whole line first so that lines never interleave. */
static void log_event(const sslserver_event *ev, void *userdata)
{
    (void)userdata;
    char line[2048], peer[160] = "-";
    size_t off = 0;

    if (ev->socket)
        format_peer(ev->socket, peer, sizeof peer);
#define APPEND(...)                                                              \
    do {                                                                         \
        if (off < sizeof line) {                                                 \
            int w_ = snprintf(line + off, sizeof line - off, __VA_ARGS__);       \
            if (w_ > 0)                                                          \
                off += (size_t)w_;                                               \
        }                                                                        \
    } while (0)

    APPEND("[event] %s %s", sslserver_event_kind_name(ev->kind), peer);
    switch (ev->kind) {
    case SSLSERVER_EVENT_ERROR_OCCURRED:
    case SSLSERVER_EVENT_ACCEPT_ERROR:
        APPEND(" %s", sslserver_socket_error_name(ev->socket_error));
        break;
    case SSLSERVER_EVENT_ALERT_SENT:
    case SSLSERVER_EVENT_ALERT_RECEIVED:
        APPEND(" alert=%s/%d", ev->alert_level == SSLSERVER_ALERT_FATAL ? "fatal" : "warning",
               (int)ev->alert_type);
        break;
    default:
        break;
    }
    for (size_t i = 0; ev->ssl_errors && i < ev->ssl_error_count; i++)
        APPEND(" %s", sslserver_ssl_error_code_name(ev->ssl_errors[i].code));
    APPEND(": %s", ev->description ? ev->description : "");
#undef APPEND
    fprintf(stderr, "%s\n", line);
}

static bool register_callbacks(void)
{
    static const sslserver_event_kind kinds[] = {
        SSLSERVER_EVENT_NEW_CONNECTION,
        SSLSERVER_EVENT_STARTED_ENCRYPTION_HANDSHAKE,
        SSLSERVER_EVENT_PEER_VERIFY_ERROR,
        SSLSERVER_EVENT_SSL_ERRORS,
        SSLSERVER_EVENT_HANDSHAKE_INTERRUPTED_ON_ERROR,
        SSLSERVER_EVENT_ALERT_SENT,
        SSLSERVER_EVENT_ALERT_RECEIVED,
        SSLSERVER_EVENT_ERROR_OCCURRED,
        SSLSERVER_EVENT_PENDING_CONNECTION_AVAILABLE,
        SSLSERVER_EVENT_ACCEPT_ERROR,
        /* PRE_SHARED_KEY_AUTHENTICATION_REQUIRED: no PSK with rustls. */
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (!check(sslserver_register_callback(server, kinds[i], log_event, NULL),
                   "sslserver_register_callback"))
            return false;
    }
    return true;
}

/* -------------------------------------------------------------- connections */

static void echo_loop(struct connection *c)
{
    uint8_t buf[16384];
    for (;;) {
        size_t n = 0, written = 0;
        sslserver_result r = sslsocket_read(c->socket, buf, sizeof buf, &n);
        if (r != SSLSERVER_OK) {
            report_end(c, r);
            return;
        }
        if (n == 0) {
            /* The peer sent close_notify: answer with ours, so that it
               knows nothing was lost in the other direction either. */
            r = sslsocket_disconnect_from_host(c->socket);
            if (r != SSLSERVER_OK)
                report_end(c, r);
            return;
        }
        r = sslsocket_write(c->socket, buf, n, &written);
        if (r != SSLSERVER_OK) {
            report_end(c, r);
            return;
        }
    }
}

static void unregister_connection(struct connection *c)
{
    pthread_mutex_lock(&registry.lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        registry.head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&registry.lock);
}

static void connection_done(void)
{
    pthread_mutex_lock(&registry.lock);
    if (--registry.count == 0)
        pthread_cond_broadcast(&registry.all_done);
    pthread_mutex_unlock(&registry.lock);
}

static void *connection_main(void *arg)
{
    struct connection *c = arg;
    if (opts.http) {
        struct http_client h = {
            .socket = c->socket,
            .peer = c->peer,
            .request_timeout_ms = opts.request_timeout,
            .quiet = opts.quiet,
            .stopping = &stop_requested,
        };
        http_serve_one(&h);
    } else
        echo_loop(c);
    if (!opts.quiet)
        fprintf(stderr, "connection %s closed\n", c->peer);
    /* Unregister before freeing so that shutdown never aborts a freed socket;
       count down only after freeing so that main never exits before. */
    unregister_connection(c);
    sslsocket_free(c->socket);
    free(c);
    connection_done();
    return NULL;
}

static void start_connection(sslsocket *s)
{
    struct connection *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "echo_server: out of memory, dropping a connection\n");
        sslsocket_abort(s);
        sslsocket_free(s);
        return;
    }
    c->socket = s;
    format_peer(s, c->peer, sizeof c->peer);

    if (!opts.quiet) {
        char cipher[96] = "?", alpn[64] = "";
        size_t n = 0;
        if (sslsocket_session_cipher(s, cipher, sizeof cipher, &n) != SSLSERVER_OK)
            snprintf(cipher, sizeof cipher, "?");
        if (sslsocket_alpn_protocol(s, alpn, sizeof alpn, &n) != SSLSERVER_OK || n == 0)
            snprintf(alpn, sizeof alpn, "-");
        fprintf(stderr, "connection %s: %s %s alpn=%s client-certificates=%zu%s\n", c->peer,
                sslserver_protocol_name(sslsocket_session_protocol(s)), cipher, alpn,
                sslsocket_peer_certificate_chain_length(s),
                sslsocket_session_resumed(s) ? " resumed" : "");
    }

    pthread_mutex_lock(&registry.lock);
    c->next = registry.head;
    if (registry.head)
        registry.head->prev = c;
    registry.head = c;
    registry.count++;
    pthread_mutex_unlock(&registry.lock);

    pthread_attr_t attr;
    pthread_t tid;
    int err = pthread_attr_init(&attr);
    if (err == 0) {
        /* Detached: nobody joins connection threads; shutdown waits for
           registry.count instead. */
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        err = pthread_create(&tid, &attr, connection_main, c);
        pthread_attr_destroy(&attr);
    }
    if (err != 0) {
        fprintf(stderr, "echo_server: cannot start a connection thread: %s\n", strerror(err));
        unregister_connection(c);
        sslsocket_abort(s);
        sslsocket_free(s);
        free(c);
        connection_done();
    }
}

static void *accept_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_requested)) {
        bool timed_out = false;
        /* -1: block until a connection is queued or the server is closed
           (sslserver_close from the main thread wakes us up). */
        if (!sslserver_wait_for_new_connection(server, -1, &timed_out)) {
            if (atomic_load(&stop_requested))
                break;
            if (timed_out)
                continue;
            if (!sslserver_is_listening(server)) {
                char msg[256];
                size_t n = 0;
                if (sslserver_error_string(server, msg, sizeof msg, &n) != SSLSERVER_OK)
                    snprintf(msg, sizeof msg, "%s", "?");
                fprintf(stderr, "echo_server: the server stopped listening: %s (%s)\n",
                        sslserver_socket_error_name(sslserver_server_error(server)), msg);
                /* Wake the main thread's sigwait() to shut down with an error. */
                atomic_store(&accept_failed, true);
                pthread_kill(main_thread, SIGTERM);
                break;
            }
            continue;
        }
        sslsocket *s;
        while ((s = sslserver_next_pending_connection(server)) != NULL)
            start_connection(s);
    }
    return NULL;
}

/* -------------------------------------------------------------------- setup */

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv, true);
    if (rc >= 0) {
        free_options();
        return rc;
    }
    rc = 1;

    /* Block the shutdown signals before any thread exists (the library's
       threads inherit this mask), so that they are only ever received by the
       sigwait() below. A peer that resets a connection must not kill us
       with SIGPIPE. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, NULL);
    main_thread = pthread_self();

    sslconfig *cfg = make_config();
    char *fingerprint = NULL;
    bool accepting = false;
    pthread_t acceptor;
    if (!cfg)
        goto out;

    fingerprint = config_string(sslconfig_certificate_fingerprint_sha256, cfg, "fingerprint");
    if (!fingerprint)
        goto out;
    if (opts.write_cert) {
        char *pem = config_string(sslconfig_certificate_chain_pem, cfg, "certificate chain");
        bool ok = pem && write_file(opts.write_cert, pem);
        free(pem);
        if (!ok)
            goto out;
    }

    server = sslserver_new();
    if (!server) {
        fprintf(stderr, "echo_server: sslserver_new failed: %s\n", sslserver_last_error_message());
        goto out;
    }
    if (!check(sslserver_set_config(server, cfg), "sslserver_set_config"))
        goto out;
    if (!apply_server_options(server))
        goto out;
    if (!opts.quiet && !register_callbacks())
        goto out;
    if (!check(sslserver_listen(server, opts.address, opts.port), "listen"))
        goto out;

    char addr[64];
    size_t n = 0;
    if (!check(sslserver_server_address(server, addr, sizeof addr, &n), "sslserver_server_address"))
        goto out;
    printf("certificate SHA-256 fingerprint %s%s\n", fingerprint,
           opts.cert ? "" : " (generated, self-signed)");
    printf(strchr(addr, ':') ? "listening on [%s]:%u\n" : "listening on %s:%u\n", addr,
           (unsigned)sslserver_server_port(server));
    fflush(stdout);

    int err = pthread_create(&acceptor, NULL, accept_main, NULL);
    if (err != 0) {
        fprintf(stderr, "echo_server: pthread_create: %s\n", strerror(err));
        goto out;
    }
    accepting = true;

    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    if (!atomic_load(&accept_failed)) {
        if (!opts.quiet)
            fprintf(stderr, "received %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        rc = 0;
    }

out:
    /* Shutdown order: stop accepting (this also aborts handshakes in flight
       and wakes the accept thread), then abort the connections handed out
       (echo clients never finish on their own) and wait for their threads. */
    atomic_store(&stop_requested, true);
    if (server)
        sslserver_close(server);
    if (accepting)
        pthread_join(acceptor, NULL);
    pthread_mutex_lock(&registry.lock);
    for (struct connection *c = registry.head; c; c = c->next)
        sslsocket_abort(c->socket);
    while (registry.count > 0)
        pthread_cond_wait(&registry.all_done, &registry.lock);
    pthread_mutex_unlock(&registry.lock);

    sslserver_free(server);
    sslconfig_free(cfg);
    free(fingerprint);
    free_options();
    return rc;
}
