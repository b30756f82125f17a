/*
 * echo_server -- a TLS echo server (or a minimal HTTPS server) on libsslserver.
 *
 *   echo_server [--address A] [--port P] [--cert CHAIN.pem --key KEY.pem [--key-passphrase S]]
 *               [--ca CA.pem] [--verify none|query|verify] [--handshake-timeout MS]
 *               [--max-pending N] [--alpn p1,p2] [--http [--request-timeout MS]]
 *               [--write-cert FILE] [--quiet]
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
#include "sslserver.h"

#define MAX_ALPN 16

struct options {
    const char *address;       /* NULL = any address */
    uint16_t port;
    const char *cert;
    const char *key;
    const char *key_passphrase;
    const char *ca;
    const char *verify;        /* NULL = the library default (AUTO_VERIFY_PEER) */
    int handshake_timeout;     /* INT_MIN = library default */
    int max_pending;           /* INT_MIN = library default */
    char *alpn_storage;        /* strdup of the --alpn argument, split in place */
    const char *alpn[MAX_ALPN];
    size_t alpn_count;
    const char *write_cert;
    bool http;
    int request_timeout;       /* --http: ms for the whole request head */
    bool quiet;
};

static struct options opts = {
    .port = 4433,
    .handshake_timeout = INT_MIN,
    .max_pending = INT_MIN,
    .request_timeout = HTTP_REQUEST_TIMEOUT_MS,
};

static sslserver *server;
static atomic_bool stop_requested;
static atomic_bool accept_failed;
static pthread_t main_thread;

/* Connections handed to connection threads. The registry exists so that
   shutdown can abort them (their threads may be blocked in sslsocket_read)
   and then wait until every thread has freed its connection. */
struct connection {
    sslsocket *socket;
    char peer[80];
    struct connection *prev, *next;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t all_done;   /* signalled when count drops to 0 */
    struct connection *head;
    size_t count;              /* registered + threads still cleaning up */
} registry = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0 };

/* ------------------------------------------------------------------ helpers */

/* Reports a failed call. The thread-local detail message is copied first:
   it is only valid until the next library call on this thread, and
   sslserver_result_string() is such a call. */
static bool check(sslserver_result r, const char *what)
{
    if (r == SSLSERVER_OK)
        return true;
    char detail[512];
    snprintf(detail, sizeof detail, "%s", sslserver_last_error_message());
    fprintf(stderr, "echo_server: %s: %s%s%s\n", what, sslserver_result_string(r),
            detail[0] ? ": " : "", detail);
    return false;
}

/* "1.2.3.4:5" or "[::1]:5" for a connection; never fails. */
static void format_peer(const sslsocket *s, char *out, size_t outlen)
{
    char addr[64];
    size_t n = 0;
    if (sslsocket_peer_address(s, addr, sizeof addr, &n) != SSLSERVER_OK)
        snprintf(addr, sizeof addr, "?");
    const char *fmt = strchr(addr, ':') ? "[%s]:%u" : "%s:%u";
    snprintf(out, outlen, fmt, addr, (unsigned)sslsocket_peer_port(s));
}

/* Fetches a string from a config getter, growing the buffer as the library
   asks (BUFFER_TOO_SMALL reports the size needed, without the NUL). */
static char *config_string(sslserver_result (*get)(const sslconfig *, char *, size_t, size_t *),
                           const sslconfig *cfg, const char *what)
{
    size_t len = 256, needed = 0;
    for (;;) {
        char *buf = malloc(len);
        if (!buf) {
            fprintf(stderr, "echo_server: out of memory\n");
            return NULL;
        }
        sslserver_result r = get(cfg, buf, len, &needed);
        if (r == SSLSERVER_OK)
            return buf;
        free(buf);
        if (r != SSLSERVER_ERROR_BUFFER_TOO_SMALL || needed < len) {
            check(r, what);
            return NULL;
        }
        len = needed + 1;
    }
}

static bool write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "echo_server: %s: %s\n", path, strerror(errno));
        return false;
    }
    bool ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok)
        fprintf(stderr, "echo_server: writing %s failed\n", path);
    return ok;
}

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
    char line[2048], peer[80] = "-";
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
        fprintf(stderr, "connection %s: %s %s alpn=%s client-certificates=%zu\n", c->peer,
                sslserver_protocol_name(sslsocket_session_protocol(s)), cipher, alpn,
                sslsocket_peer_certificate_chain_length(s));
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

static void usage(FILE *out)
{
    fprintf(out,
            "usage: echo_server [--address A] [--port P]\n"
            "                   [--cert CHAIN.pem --key KEY.pem [--key-passphrase S]]\n"
            "                   [--ca CA.pem] [--verify none|query|verify]\n"
            "                   [--handshake-timeout MS] [--max-pending N] [--alpn p1,p2]\n"
            "                   [--http [--request-timeout MS]] [--write-cert FILE] [--quiet]\n"
            "\n"
            "  --address A            address to listen on (default: any, IPv4 and IPv6)\n"
            "  --port P               port (default 4433; 0 picks a free one)\n"
            "  --cert/--key           certificate chain and private key (PEM); without them\n"
            "                         a self-signed certificate for localhost, 127.0.0.1\n"
            "                         and ::1 is generated\n"
            "  --key-passphrase S     passphrase of an encrypted private key\n"
            "  --ca CA.pem            CA certificates trusted for client certificates\n"
            "  --verify MODE          client certificates: none, query (ask, do not\n"
            "                         require) or verify (require a trusted one)\n"
            "  --handshake-timeout MS deadline from TCP accept to handshake done (-1: none)\n"
            "  --max-pending N        handshaken connections queued before accepting pauses\n"
            "  --alpn p1,p2           ALPN protocols offered, in preference order\n"
            "  --http                 answer one HTTP request per connection instead of echoing;\n"
            "                         a request head over 8 KiB gets 431, one that does not\n"
            "                         arrive within --request-timeout gets 408\n"
            "  --request-timeout MS   --http: time for the whole request head (default 30000)\n"
            "  --write-cert FILE      write the server certificate chain (PEM) to FILE, e.g.\n"
            "                         for a client's -CAfile / --cacert\n"
            "  --quiet                do not log events and connections\n");
}

static bool parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Returns -1 to continue, otherwise an exit code. */
static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
#define NEED_VALUE()                                                              \
    do {                                                                          \
        if (!v) {                                                                 \
            fprintf(stderr, "echo_server: %s needs a value\n", a);                \
            return 2;                                                             \
        }                                                                         \
        i++;                                                                      \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--http")) {
            opts.http = true;
        } else if (!strcmp(a, "--quiet")) {
            opts.quiet = true;
        } else if (!strcmp(a, "--address")) {
            NEED_VALUE();
            opts.address = v;
        } else if (!strcmp(a, "--port")) {
            NEED_VALUE();
            if (!parse_int(v, 0, 65535, &n)) {
                fprintf(stderr, "echo_server: bad port '%s'\n", v);
                return 2;
            }
            opts.port = (uint16_t)n;
        } else if (!strcmp(a, "--cert")) {
            NEED_VALUE();
            opts.cert = v;
        } else if (!strcmp(a, "--key")) {
            NEED_VALUE();
            opts.key = v;
        } else if (!strcmp(a, "--key-passphrase")) {
            NEED_VALUE();
            opts.key_passphrase = v;
        } else if (!strcmp(a, "--ca")) {
            NEED_VALUE();
            opts.ca = v;
        } else if (!strcmp(a, "--verify")) {
            NEED_VALUE();
            if (strcmp(v, "none") && strcmp(v, "query") && strcmp(v, "verify")) {
                fprintf(stderr, "echo_server: --verify takes none, query or verify\n");
                return 2;
            }
            opts.verify = v;
        } else if (!strcmp(a, "--request-timeout")) {
            NEED_VALUE();
            if (!parse_int(v, 1, INT_MAX, &n)) {
                fprintf(stderr, "echo_server: bad --request-timeout '%s' (1 or more ms)\n", v);
                return 2;
            }
            opts.request_timeout = (int)n;
        } else if (!strcmp(a, "--handshake-timeout")) {
            NEED_VALUE();
            if (!parse_int(v, -1, INT_MAX, &n)) {
                fprintf(stderr, "echo_server: bad timeout '%s'\n", v);
                return 2;
            }
            opts.handshake_timeout = (int)n;
        } else if (!strcmp(a, "--max-pending")) {
            NEED_VALUE();
            if (!parse_int(v, 1, INT_MAX, &n)) {
                fprintf(stderr, "echo_server: bad --max-pending '%s'\n", v);
                return 2;
            }
            opts.max_pending = (int)n;
        } else if (!strcmp(a, "--alpn")) {
            NEED_VALUE();
            free(opts.alpn_storage);
            opts.alpn_storage = strdup(v);
            if (!opts.alpn_storage)
                return 1;
            opts.alpn_count = 0;
            for (char *save = NULL, *p = strtok_r(opts.alpn_storage, ",", &save); p;
                 p = strtok_r(NULL, ",", &save)) {
                if (opts.alpn_count == MAX_ALPN) {
                    fprintf(stderr, "echo_server: at most %d ALPN protocols\n", MAX_ALPN);
                    return 2;
                }
                opts.alpn[opts.alpn_count++] = p;
            }
        } else if (!strcmp(a, "--write-cert")) {
            NEED_VALUE();
            opts.write_cert = v;
        } else {
            fprintf(stderr, "echo_server: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
#undef NEED_VALUE
    }
    if (!opts.cert != !opts.key) {
        fprintf(stderr, "echo_server: --cert and --key go together\n");
        return 2;
    }
    return -1;
}

static sslconfig *make_config(void)
{
    sslconfig *cfg = sslconfig_new();
    if (!cfg) {
        fprintf(stderr, "echo_server: sslconfig_new failed: %s\n", sslserver_last_error_message());
        return NULL;
    }
    if (opts.cert) {
        if (!check(sslconfig_set_certificate_chain_file(cfg, opts.cert), opts.cert) ||
            !check(sslconfig_set_private_key_file(cfg, opts.key, opts.key_passphrase), opts.key))
            goto fail;
    } else {
        static const char *const names[] = { "localhost", "127.0.0.1", "::1" };
        if (!check(sslconfig_generate_self_signed(cfg, names, 3), "sslconfig_generate_self_signed"))
            goto fail;
    }
    if (opts.ca && !check(sslconfig_add_ca_certificates_file(cfg, opts.ca), opts.ca))
        goto fail;
    if (opts.verify) {
        sslserver_peer_verify_mode mode = !strcmp(opts.verify, "none")    ? SSLSERVER_VERIFY_NONE
                                          : !strcmp(opts.verify, "query") ? SSLSERVER_QUERY_PEER
                                                                          : SSLSERVER_VERIFY_PEER;
        if (!check(sslconfig_set_peer_verify_mode(cfg, mode), "sslconfig_set_peer_verify_mode"))
            goto fail;
    }
    if (opts.alpn_count &&
        !check(sslconfig_set_alpn_protocols(cfg, opts.alpn, opts.alpn_count), "--alpn"))
        goto fail;
    return cfg;
fail:
    sslconfig_free(cfg);
    return NULL;
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv);
    if (rc >= 0) {
        free(opts.alpn_storage);
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
    if (opts.handshake_timeout != INT_MIN &&
        !check(sslserver_set_handshake_timeout(server, opts.handshake_timeout), "--handshake-timeout"))
        goto out;
    if (opts.max_pending != INT_MIN &&
        !check(sslserver_set_max_pending_connections(server, opts.max_pending), "--max-pending"))
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
    free(opts.alpn_storage);
    return rc;
}
