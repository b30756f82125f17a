/*
 * epoll_echo_server -- a TLS echo server on libsslserver with one
 * application thread for every connection (Linux, epoll).
 *
 *   epoll_echo_server [--address A] [--port P] [--cert CHAIN.pem --key KEY.pem [--key-passphrase S]]
 *                     [--ca CA.pem] [--verify none|query|verify] [--handshake-timeout MS]
 *                     [--max-pending N] [--alpn p1,p2] [--write-cert FILE] [--quiet]
 *
 * The same options and output as echo_server (without --http); what differs
 * is the design:
 *   - the library still accepts and runs the TLS handshakes on its own
 *     threads, and queues only handshaken connections;
 *   - the main thread runs one level-triggered epoll loop over three kinds
 *     of descriptor: the server's notification descriptor (readable while a
 *     handshaken connection is queued), every connection's socket (in
 *     non-blocking mode), and a signalfd for SIGINT and SIGTERM;
 *   - a connection costs no thread and no buffer while it is idle: what a
 *     write could not take yet is kept per connection only until it is sent.
 *
 * Per connection: read until SSLSERVER_ERROR_WOULD_BLOCK, echoing each
 * chunk. A write may take only part of a chunk (the library bounds the
 * ciphertext it queues per socket); the rest is kept, the connection then
 * waits for EPOLLOUT instead of EPOLLIN, and reading resumes once everything
 * is sent. Reading stops meanwhile, so a client that sends without reading
 * is slowed down by TCP instead of growing the server's memory.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "sslserver.h"

#define MAX_ALPN 16
#define MAX_EVENTS 256
#define READ_CHUNK 16384

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
    bool quiet;
};

static struct options opts = {
    .port = 4433,
    .handshake_timeout = INT_MIN,
    .max_pending = INT_MIN,
};

/* One served connection. `unsent` holds echo bytes a write did not take
   yet; it exists only while there are such bytes. */
struct connection {
    sslsocket *socket;
    int fd;
    uint32_t interest;         /* EPOLLIN or EPOLLOUT, as registered */
    bool closing;              /* close_notify queued: only flushing is left */
    uint8_t *unsent;
    size_t unsent_len;
    char peer[80];
    struct connection *prev, *next;
};

/* Every connection being served, for shutdown. */
static struct connection *connections;

/* The epoll tags of the two descriptors that are not connections. */
static char server_tag, signal_tag;

/* One buffer for every read: the loop serves one connection at a time. */
static uint8_t read_buffer[READ_CHUNK];

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
    fprintf(stderr, "epoll_echo_server: %s: %s%s%s\n", what, sslserver_result_string(r),
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
            fprintf(stderr, "epoll_echo_server: out of memory\n");
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
        fprintf(stderr, "epoll_echo_server: %s: %s\n", path, strerror(errno));
        return false;
    }
    bool ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok)
        fprintf(stderr, "epoll_echo_server: writing %s failed\n", path);
    return ok;
}

/* Logs why a connection ended early. Not an error of the server: peers
   often close TCP without close_notify. */
static void report_end(const struct connection *c, sslserver_result r)
{
    if (opts.quiet)
        return;
    char detail[512];
    snprintf(detail, sizeof detail, "%s", sslserver_last_error_message());
    fprintf(stderr, "connection %s: %s (%s)\n", c->peer, detail, sslserver_result_string(r));
}

/* ------------------------------------------------------------------- events */

/* One line per event. Runs on the library's handshake threads, possibly
   several at once: build the whole line first so lines never interleave. */
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

static bool register_callbacks(sslserver *server)
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
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (!check(sslserver_register_callback(server, kinds[i], log_event, NULL),
                   "sslserver_register_callback"))
            return false;
    }
    return true;
}

/* -------------------------------------------------------------- connections */

static void free_connection(int epfd, struct connection *c)
{
    /* Out of the epoll set before sslsocket_free closes the descriptor. */
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->prev)
        c->prev->next = c->next;
    else
        connections = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (!opts.quiet)
        fprintf(stderr, "connection %s closed\n", c->peer);
    sslsocket_free(c->socket);
    free(c->unsent);
    free(c);
}

/* Waits for EPOLLOUT while anything is unsent, else for EPOLLIN. */
static bool update_interest(int epfd, struct connection *c)
{
    uint32_t want = (c->unsent_len > 0 || sslsocket_wants_write(c->socket)) ? EPOLLOUT : EPOLLIN;
    if (want == c->interest)
        return true;
    struct epoll_event ev = { .events = want, .data.ptr = c };
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        fprintf(stderr, "connection %s: epoll_ctl: %s\n", c->peer, strerror(errno));
        return false;
    }
    c->interest = want;
    return true;
}

/* Writes `len` bytes of echo; what the socket does not take is kept in
   `unsent`. False if the connection failed. */
static bool echo(struct connection *c, const uint8_t *data, size_t len)
{
    size_t taken = 0;
    sslserver_result r = sslsocket_write(c->socket, data, len, &taken);
    if (r == SSLSERVER_ERROR_WOULD_BLOCK)
        taken = 0;
    else if (r != SSLSERVER_OK) {
        report_end(c, r);
        return false;
    }
    if (taken < len) {
        uint8_t *copy = malloc(len - taken);
        if (!copy) {
            fprintf(stderr, "connection %s: out of memory\n", c->peer);
            return false;
        }
        memcpy(copy, data + taken, len - taken);
        c->unsent = copy;
        c->unsent_len = len - taken;
    }
    return true;
}

/* Sends close_notify after the peer's (queued if the socket is full). */
static bool begin_close(struct connection *c)
{
    sslserver_result r = sslsocket_disconnect_from_host(c->socket);
    if (r != SSLSERVER_OK && r != SSLSERVER_ERROR_WOULD_BLOCK) {
        report_end(c, r);
        return false;
    }
    c->closing = true;
    return true;
}

/* Reads and echoes until the socket has nothing more or a write could not
   take everything. False when the connection is over. */
static bool serve_input(struct connection *c)
{
    while (c->unsent_len == 0 && !c->closing) {
        size_t n = 0;
        sslserver_result r = sslsocket_read(c->socket, read_buffer, sizeof read_buffer, &n);
        if (r == SSLSERVER_ERROR_WOULD_BLOCK)
            return true;
        if (r != SSLSERVER_OK) {
            report_end(c, r);
            return false;
        }
        if (n == 0)
            return begin_close(c);   /* the peer's close_notify: answer with ours */
        if (!echo(c, read_buffer, n))
            return false;
    }
    return true;
}

/* Sends what waits (queued ciphertext, then unsent echo bytes). False if the
   connection failed; `*done` once a closing connection has sent all. */
static bool serve_output(struct connection *c, bool *done)
{
    sslserver_result r = sslsocket_flush(c->socket);
    if (r == SSLSERVER_ERROR_WOULD_BLOCK)
        return true;
    if (r != SSLSERVER_OK) {
        report_end(c, r);
        return false;
    }
    if (c->closing) {
        *done = true;
        return true;
    }
    if (c->unsent_len > 0) {
        uint8_t *pending = c->unsent;
        size_t len = c->unsent_len;
        c->unsent = NULL;
        c->unsent_len = 0;
        bool ok = echo(c, pending, len);
        free(pending);
        if (!ok)
            return false;
    }
    return true;
}

static void on_connection_event(int epfd, struct connection *c, uint32_t events)
{
    bool ok = true, done = false;
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        ok = serve_output(c, &done);
    /* With everything sent, read: also what was decrypted but not read
       while output was stuck, which no EPOLLIN would announce. */
    if (ok && !done && c->unsent_len == 0 && !sslsocket_wants_write(c->socket))
        ok = serve_input(c);
    if (ok && !done && c->closing && !sslsocket_wants_write(c->socket))
        done = true;
    if (!ok || done || !update_interest(epfd, c))
        free_connection(epfd, c);
}

static void add_connection(int epfd, sslsocket *s)
{
    struct connection *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "epoll_echo_server: out of memory, dropping a connection\n");
        sslsocket_abort(s);
        sslsocket_free(s);
        return;
    }
    c->socket = s;
    c->fd = sslsocket_descriptor(s);
    c->interest = EPOLLIN;
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

    c->next = connections;
    if (connections)
        connections->prev = c;
    connections = c;

    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
    if (c->fd < 0 || !check(sslsocket_set_blocking(s, false), "sslsocket_set_blocking") ||
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        /* The peer may already be gone (descriptor -1). */
        free_connection(epfd, c);
        return;
    }
    /* Data may have come with the handshake's last flight, already
       decrypted: serve it now, no EPOLLIN will announce it. */
    on_connection_event(epfd, c, 0);
}

/* -------------------------------------------------------------------- setup */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: epoll_echo_server [--address A] [--port P]\n"
            "                         [--cert CHAIN.pem --key KEY.pem [--key-passphrase S]]\n"
            "                         [--ca CA.pem] [--verify none|query|verify]\n"
            "                         [--handshake-timeout MS] [--max-pending N] [--alpn p1,p2]\n"
            "                         [--write-cert FILE] [--quiet]\n"
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
            fprintf(stderr, "epoll_echo_server: %s needs a value\n", a);          \
            return 2;                                                             \
        }                                                                         \
        i++;                                                                      \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--quiet")) {
            opts.quiet = true;
        } else if (!strcmp(a, "--address")) {
            NEED_VALUE();
            opts.address = v;
        } else if (!strcmp(a, "--port")) {
            NEED_VALUE();
            if (!parse_int(v, 0, 65535, &n)) {
                fprintf(stderr, "epoll_echo_server: bad port '%s'\n", v);
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
                fprintf(stderr, "epoll_echo_server: --verify takes none, query or verify\n");
                return 2;
            }
            opts.verify = v;
        } else if (!strcmp(a, "--handshake-timeout")) {
            NEED_VALUE();
            if (!parse_int(v, -1, INT_MAX, &n)) {
                fprintf(stderr, "epoll_echo_server: bad timeout '%s'\n", v);
                return 2;
            }
            opts.handshake_timeout = (int)n;
        } else if (!strcmp(a, "--max-pending")) {
            NEED_VALUE();
            if (!parse_int(v, 1, INT_MAX, &n)) {
                fprintf(stderr, "epoll_echo_server: bad --max-pending '%s'\n", v);
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
                    fprintf(stderr, "epoll_echo_server: at most %d ALPN protocols\n", MAX_ALPN);
                    return 2;
                }
                opts.alpn[opts.alpn_count++] = p;
            }
        } else if (!strcmp(a, "--write-cert")) {
            NEED_VALUE();
            opts.write_cert = v;
        } else {
            fprintf(stderr, "epoll_echo_server: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
#undef NEED_VALUE
    }
    if (!opts.cert != !opts.key) {
        fprintf(stderr, "epoll_echo_server: --cert and --key go together\n");
        return 2;
    }
    return -1;
}

static sslconfig *make_config(void)
{
    sslconfig *cfg = sslconfig_new();
    if (!cfg) {
        fprintf(stderr, "epoll_echo_server: sslconfig_new failed: %s\n",
                sslserver_last_error_message());
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

static bool watch(int epfd, int fd, void *tag)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        fprintf(stderr, "epoll_echo_server: epoll_ctl: %s\n", strerror(errno));
        return false;
    }
    return true;
}

/* The event loop; returns the signal that ended it, or 0 on an error. */
static int run(int epfd, int sigfd, sslserver *server)
{
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "epoll_echo_server: epoll_wait: %s\n", strerror(errno));
            return 0;
        }
        for (int i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;
            if (tag == &signal_tag) {
                struct signalfd_siginfo info;
                if (read(sigfd, &info, sizeof info) == (ssize_t)sizeof info)
                    return (int)info.ssi_signo;
            } else if (tag == &server_tag) {
                sslsocket *s;
                while ((s = sslserver_next_pending_connection(server)) != NULL)
                    add_connection(epfd, s);
            } else {
                on_connection_event(epfd, tag, events[i].events);
            }
        }
    }
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv);
    if (rc >= 0) {
        free(opts.alpn_storage);
        return rc;
    }
    rc = 1;

    /* The shutdown signals are blocked before any thread exists (the
       library's threads inherit the mask) and read from a signalfd in the
       event loop, so no code runs in a signal handler. A peer that resets a
       connection must not kill us with SIGPIPE. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    sigprocmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    sslconfig *cfg = make_config();
    sslserver *server = NULL;
    char *fingerprint = NULL;
    int epfd = -1, sigfd = -1;
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
        fprintf(stderr, "epoll_echo_server: sslserver_new failed: %s\n",
                sslserver_last_error_message());
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
    if (!opts.quiet && !register_callbacks(server))
        goto out;

    epfd = epoll_create1(EPOLL_CLOEXEC);
    sigfd = signalfd(-1, &stop_signals, SFD_CLOEXEC);
    if (epfd < 0 || sigfd < 0) {
        fprintf(stderr, "epoll_echo_server: %s: %s\n", epfd < 0 ? "epoll_create1" : "signalfd",
                strerror(errno));
        goto out;
    }
    int notify_fd = sslserver_notification_descriptor(server);
    if (notify_fd < 0) {
        fprintf(stderr, "epoll_echo_server: sslserver_notification_descriptor: %s\n",
                sslserver_last_error_message());
        goto out;
    }
    if (!watch(epfd, notify_fd, &server_tag) || !watch(epfd, sigfd, &signal_tag))
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

    int sig = run(epfd, sigfd, server);
    if (sig != 0) {
        if (!opts.quiet)
            fprintf(stderr, "received %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        rc = 0;
    }

out:
    /* Stop accepting (this also aborts handshakes in flight), then abort
       the connections being served (echo clients never finish on their
       own): no close_notify to wait for at shutdown. */
    if (server)
        sslserver_close(server);
    while (connections) {
        sslsocket_abort(connections->socket);
        free_connection(epfd, connections);
    }
    if (sigfd >= 0)
        close(sigfd);
    if (epfd >= 0)
        close(epfd);
    sslserver_free(server);
    sslconfig_free(cfg);
    free(fingerprint);
    free(opts.alpn_storage);
    return rc;
}
