/*
 * epoll_echo_server -- a TLS echo server on libsslserver with one
 * application thread for every connection (Linux, epoll).
 *
 *   epoll_echo_server [--address A] [--port P] [--cert CHAIN.pem --key KEY.pem [--key-passphrase S]]
 *                     [--ca CA.pem] [--verify none|query|verify] [--handshake-timeout MS]
 *                     [--max-pending N] [--alpn p1,p2] [--write-cert FILE] [--quiet]
 *                     and echo_server's fleet options (server_options.c)
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
 * Per connection: read until SSLSERVER_ERROR_WOULD_BLOCK, gathering up to
 * 64 KiB before echoing it in one write, so that several records leave in
 * one send (one wakeup of the peer) rather than one send per record. A write
 * may take only part of it (the library bounds the ciphertext it queues per
 * socket); the rest is kept, the connection then waits for EPOLLOUT instead
 * of EPOLLIN, and reading resumes once everything is sent. Reading stops meanwhile, so a client that sends without reading
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

#include "server_options.h"
#include "sslserver.h"

#define MAX_EVENTS 256
#define READ_CHUNK 65536

/* One served connection. `unsent` holds echo bytes a write did not take
   yet; it exists only while there are such bytes. */
struct connection {
    sslsocket *socket;
    int fd;
    uint32_t interest;         /* EPOLLIN or EPOLLOUT, as registered */
    bool closing;              /* close_notify queued: only flushing is left */
    uint8_t *unsent;
    size_t unsent_len;
    char peer[160];
    struct connection *prev, *next;
};

/* Every connection being served, for shutdown. */
static struct connection *connections;

/* The epoll tags of the two descriptors that are not connections. */
static char server_tag, signal_tag;

/* One buffer for every read: the loop serves one connection at a time. */
static uint8_t read_buffer[READ_CHUNK];

/* ------------------------------------------------------------------ helpers */

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
        size_t have = 0, n = 0;
        sslserver_result r = SSLSERVER_OK;
        while (have < sizeof read_buffer) {
            r = sslsocket_read(c->socket, read_buffer + have, sizeof read_buffer - have, &n);
            if (r != SSLSERVER_OK || n == 0)
                break;
            have += n;
        }
        if (have > 0) {
            if (!echo(c, read_buffer, have))
                return false;
            if (r == SSLSERVER_ERROR_WOULD_BLOCK)
                return true;
            /* A full buffer: read on. The end of input or an error that
               stopped the gathering is returned again by the next read,
               once what was gathered has been sent. */
            continue;
        }
        if (r == SSLSERVER_ERROR_WOULD_BLOCK)
            return true;
        if (r != SSLSERVER_OK) {
            report_end(c, r);
            return false;
        }
        return begin_close(c);   /* n == 0: the peer's close_notify; answer with ours */
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
    program_name = "epoll_echo_server";
    int rc = parse_args(argc, argv, false);
    if (rc >= 0) {
        free_options();
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
    if (!apply_server_options(server))
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
    free_options();
    return rc;
}
