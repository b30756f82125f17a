/*
 * starttls_server -- an SMTP subset that upgrades to TLS on request, on the
 * program's own accept loop (Qt's incomingConnection + setSocketDescriptor +
 * startServerEncryption pattern, in C).
 *
 *   starttls_server [--address A] [--port P] [--cert CHAIN.pem --key KEY.pem] [--quiet]
 *
 * The program owns the listening socket and accept(); each accepted
 * descriptor is handed to the library with sslsocket_new_from_descriptor and
 * served by a thread of its own:
 *   220 <host> ESMTP                      greeting
 *   EHLO x / HELO x   -> 250 ...          EHLO lists 250-STARTTLS before TLS
 *   STARTTLS          -> 220 Ready to start TLS, then the TLS handshake
 *                        (503 once TLS is active)
 *   NOOP -> 250 OK    QUIT -> 221 Bye     anything else -> 502
 * Lines are read one byte at a time before TLS, so a command pipelined
 * behind STARTTLS is left to the handshake, which refuses it: a man in the
 * middle cannot inject commands into the encrypted session.
 * Without --cert/--key a self-signed certificate for localhost, 127.0.0.1
 * and ::1 is generated. SIGINT/SIGTERM stop it (received with sigwait).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sslserver.h"

#define HOST_NAME "localhost"
#define MAX_LINE 1000 /* RFC 5321: a command line is at most 1000 octets */
#define HANDSHAKE_TIMEOUT_MS 10000
#define IDLE_TIMEOUT_MS 300000 /* RFC 5321: a server waits 5 minutes for a command */

static struct {
    const char *address; /* NULL = any */
    const char *port;
    const char *cert, *key;
    bool quiet;
} opts = {NULL, "2525", NULL, NULL, false};

static sslconfig *config;

/* The connections being served, so shutdown can abort them, and the number
   of connection threads, so it can wait for them. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t all_done;
    sslsocket *sockets[1024];
    size_t count;
    size_t threads;
} registry = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 0};

static void usage(void)
{
    fprintf(stderr, "usage: starttls_server [--address A] [--port P] "
                    "[--cert CHAIN.pem --key KEY.pem] [--quiet]\n");
}

static bool check(sslserver_result r, const char *what)
{
    if (r == SSLSERVER_OK)
        return true;
    fprintf(stderr, "starttls_server: %s: %s (%s)\n", what, sslserver_last_error_message(),
            sslserver_result_string(r));
    return false;
}

static void on_event(const sslserver_event *event, void *userdata)
{
    const char *peer = userdata;
    printf("[event] %s %s: %s\n", sslserver_event_kind_name(event->kind), peer, event->description);
    fflush(stdout);
}

static bool send_text(sslsocket *s, const char *text)
{
    return sslsocket_write(s, (const uint8_t *)text, strlen(text), NULL) == SSLSERVER_OK;
}

/* Reads one line (without its CR LF) one byte at a time. False at the end of
   the connection or for a line longer than MAX_LINE. */
static bool read_line(sslsocket *s, char line[MAX_LINE + 1])
{
    size_t len = 0;
    for (;;) {
        uint8_t byte;
        size_t n = 0;
        if (sslsocket_bytes_available(s) == 0 && !sslsocket_wait_for_ready_read(s, IDLE_TIMEOUT_MS))
            return false; /* idle too long, or closed */
        if (sslsocket_read(s, &byte, 1, &n) != SSLSERVER_OK || n == 0)
            return false;
        if (byte == '\n')
            break;
        if (len == MAX_LINE)
            return false;
        line[len++] = (char)byte;
    }
    if (len > 0 && line[len - 1] == '\r')
        len--;
    line[len] = '\0';
    return true;
}

static bool is_command(const char *line, const char *verb)
{
    size_t n = strlen(verb);
    return strncasecmp(line, verb, n) == 0 && (line[n] == '\0' || line[n] == ' ');
}

/* The SMTP conversation; returns when the client quits or leaves. */
static void converse(sslsocket *s, const char *peer)
{
    char line[MAX_LINE + 1];
    bool encrypted = false;
    if (!send_text(s, "220 " HOST_NAME " ESMTP\r\n"))
        return;
    while (read_line(s, line)) {
        bool ok;
        if (is_command(line, "EHLO"))
            ok = send_text(s, encrypted ? "250 " HOST_NAME "\r\n"
                                        : "250-" HOST_NAME "\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
        else if (is_command(line, "HELO"))
            ok = send_text(s, "250 " HOST_NAME "\r\n");
        else if (is_command(line, "NOOP"))
            ok = send_text(s, "250 OK\r\n");
        else if (is_command(line, "QUIT")) {
            send_text(s, "221 Bye\r\n");
            sslsocket_disconnect_from_host(s);
            return;
        } else if (is_command(line, "STARTTLS")) {
            if (encrypted) {
                ok = send_text(s, "503 TLS already active\r\n");
            } else {
                if (!send_text(s, "220 Ready to start TLS\r\n"))
                    return;
                if (sslsocket_start_server_encryption(s, config, HANDSHAKE_TIMEOUT_MS) != SSLSERVER_OK) {
                    printf("connection %s: TLS handshake failed: %s\n", peer,
                           sslserver_last_error_message());
                    fflush(stdout);
                    return;
                }
                char cipher[128] = "";
                size_t n = 0;
                sslsocket_session_cipher(s, cipher, sizeof cipher, &n);
                printf("connection %s: %s %s\n", peer,
                       sslserver_protocol_name(sslsocket_session_protocol(s)), cipher);
                fflush(stdout);
                encrypted = true;
                ok = true;
            }
        } else
            ok = send_text(s, "502 Command not implemented\r\n");
        if (!ok)
            return;
    }
}

static void *serve(void *arg)
{
    sslsocket *s = arg;
    char address[64] = "?";
    size_t n = 0;
    sslsocket_peer_address(s, address, sizeof address, &n);
    char peer[80];
    snprintf(peer, sizeof peer, strchr(address, ':') ? "[%s]:%u" : "%s:%u", address,
             (unsigned)sslsocket_peer_port(s));
    if (!opts.quiet) {
        /* Every kind a socket reports; the server-only ones are refused. */
        for (int kind = SSLSERVER_EVENT_STARTED_ENCRYPTION_HANDSHAKE;
             kind <= SSLSERVER_EVENT_NEW_SESSION_TICKET_RECEIVED; kind++)
            sslsocket_register_callback(s, (sslserver_event_kind)kind, on_event, peer);
    }
    converse(s, peer);
    printf("connection %s closed\n", peer);
    fflush(stdout);

    /* Out of the registry first (shutdown no longer aborts it), then free
       without the lock: freeing may wait up to a second for close_notify. */
    pthread_mutex_lock(&registry.lock);
    for (size_t i = 0; i < registry.count; i++) {
        if (registry.sockets[i] == s) {
            registry.sockets[i] = registry.sockets[--registry.count];
            break;
        }
    }
    pthread_mutex_unlock(&registry.lock);
    sslsocket_free(s);
    pthread_mutex_lock(&registry.lock);
    if (--registry.threads == 0)
        pthread_cond_broadcast(&registry.all_done);
    pthread_mutex_unlock(&registry.lock);
    return NULL;
}

/* The program's own accept loop: every descriptor goes to the library. */
static void *accept_loop(void *arg)
{
    int listener = *(int *)arg;
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                struct timespec pause = {0, 100 * 1000 * 1000};
                nanosleep(&pause, NULL); /* wait for a connection to end */
                continue;
            }
            return NULL; /* shut down */
        }
        sslsocket *s = NULL;
        if (!check(sslsocket_new_from_descriptor(fd, &s), "sslsocket_new_from_descriptor")) {
            close(fd); /* still ours on failure */
            continue;
        }
        pthread_mutex_lock(&registry.lock);
        bool room = registry.count < sizeof registry.sockets / sizeof registry.sockets[0];
        if (room) {
            registry.sockets[registry.count++] = s;
            registry.threads++;
        }
        pthread_mutex_unlock(&registry.lock);
        pthread_t thread;
        if (!room || pthread_create(&thread, NULL, serve, s) != 0) {
            pthread_mutex_lock(&registry.lock);
            if (room) {
                for (size_t i = 0; i < registry.count; i++)
                    if (registry.sockets[i] == s)
                        registry.sockets[i] = registry.sockets[--registry.count];
                registry.threads--;
            }
            pthread_mutex_unlock(&registry.lock);
            sslsocket_free(s);
            continue;
        }
        pthread_detach(thread);
    }
}

/* Binds and listens on opts.address (any: IPv6 and IPv4) and opts.port. */
static int listen_socket(void)
{
    struct addrinfo hints, *found = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int err = getaddrinfo(opts.address ? opts.address : "::", opts.port, &hints, &found);
    if (err != 0) {
        fprintf(stderr, "starttls_server: %s: %s\n", opts.address ? opts.address : "::",
                gai_strerror(err));
        return -1;
    }
    int fd = socket(found->ai_family, SOCK_STREAM, 0);
    int one = 1, zero = 0;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (found->ai_family == AF_INET6 && !opts.address)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, found->ai_addr, found->ai_addrlen) != 0 || listen(fd, 64) != 0) {
            perror("starttls_server: bind/listen");
            close(fd);
            fd = -1;
        }
    } else {
        perror("starttls_server: socket");
    }
    freeaddrinfo(found);
    return fd;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--quiet") == 0) {
            opts.quiet = true;
            continue;
        }
        if (i + 1 >= argc) {
            usage();
            return 2;
        }
        const char *value = argv[++i];
        if (strcmp(opt, "--address") == 0)
            opts.address = value;
        else if (strcmp(opt, "--port") == 0)
            opts.port = value;
        else if (strcmp(opt, "--cert") == 0)
            opts.cert = value;
        else if (strcmp(opt, "--key") == 0)
            opts.key = value;
        else {
            usage();
            return 2;
        }
    }
    if ((opts.cert == NULL) != (opts.key == NULL)) {
        usage();
        return 2;
    }
    return -1;
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv);
    if (rc >= 0)
        return rc;
    rc = 1;

    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, NULL);

    int listener = -1;
    bool accepting = false;
    pthread_t acceptor;
    config = sslconfig_new();
    if (!config)
        goto out;
    if (opts.cert) {
        if (!check(sslconfig_set_certificate_chain_file(config, opts.cert), "--cert") ||
            !check(sslconfig_set_private_key_file(config, opts.key, NULL), "--key"))
            goto out;
    } else {
        const char *names[] = {"localhost", "127.0.0.1", "::1"};
        if (!check(sslconfig_generate_self_signed(config, names, 3), "generate a certificate"))
            goto out;
    }
    listener = listen_socket();
    if (listener < 0)
        goto out;
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof bound;
    getsockname(listener, (struct sockaddr *)&bound, &bound_len);
    char host[64], port[16];
    getnameinfo((struct sockaddr *)&bound, bound_len, host, sizeof host, port, sizeof port,
                NI_NUMERICHOST | NI_NUMERICSERV);
    printf(strchr(host, ':') ? "listening on [%s]:%s\n" : "listening on %s:%s\n", host, port);
    fflush(stdout);

    int err = pthread_create(&acceptor, NULL, accept_loop, &listener);
    if (err != 0) {
        fprintf(stderr, "starttls_server: pthread_create: %s\n", strerror(err));
        goto out;
    }
    accepting = true;
    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    if (!opts.quiet)
        fprintf(stderr, "received %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rc = 0;

out:
    /* Stop accepting (shutdown wakes accept()), then abort the connections
       being served and wait until their threads have freed them. */
    if (listener >= 0)
        shutdown(listener, SHUT_RDWR);
    if (accepting)
        pthread_join(acceptor, NULL);
    if (listener >= 0)
        close(listener);
    pthread_mutex_lock(&registry.lock);
    for (size_t i = 0; i < registry.count; i++)
        sslsocket_abort(registry.sockets[i]);
    while (registry.threads > 0)
        pthread_cond_wait(&registry.all_done, &registry.lock);
    pthread_mutex_unlock(&registry.lock);
    sslconfig_free(config);
    return rc;
}
