/*
 * openssl_echo -- the OpenSSL peer of the sslserver benchmarks: a blocking,
 * thread-per-connection TLS echo server on libssl, the same shape as the
 * library's (an accept loop, one thread per connection, blocking reads and
 * writes, a handshake deadline, TCP_NODELAY on accepted sockets).
 *
 *   openssl_echo --cert CHAIN.pem --key KEY.pem [--port P] [--address A]
 *                [--handshake-timeout MS] [--backlog N]
 *   openssl_echo --plain [--port P] [--address A] [--backlog N]
 *
 * --plain is the plain TCP floor: the same server without TLS.
 *
 * OpenSSL's defaults are kept (TLS 1.2 and 1.3, stateless session tickets,
 * the internal session cache); no client certificate is requested; the
 * listen backlog is 50 (--backlog), as in the library and Qt. Threads
 * get a 256 KiB stack, as the library's connection threads do.
 * Prints "listening on ADDR:PORT" once it accepts connections.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define BUF_SIZE (16 * 1024)
#define STACK_SIZE (256 * 1024)

static SSL_CTX *ctx;          /* NULL in --plain mode */
static int handshake_timeout_ms = 5000;

static void usage(const char *msg)
{
    fprintf(stderr, "openssl_echo: %s\n"
            "usage: openssl_echo --cert CHAIN.pem --key KEY.pem [--port P] [--address A]\n"
            "                    [--handshake-timeout MS] [--backlog N] | --plain [--port P]\n", msg);
    exit(2);
}

static void set_rcv_timeout(int fd, int ms)
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static void serve_plain(int fd)
{
    char buf[BUF_SIZE];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return;
            }
            off += w;
        }
    }
}

static void serve_tls(int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return;
    SSL_set_fd(ssl, fd);
    /* The handshake deadline: a silent client's read times out. */
    if (handshake_timeout_ms > 0)
        set_rcv_timeout(fd, handshake_timeout_ms);
    if (SSL_accept(ssl) != 1) {
        SSL_free(ssl);
        return;
    }
    set_rcv_timeout(fd, 0);
    char buf[BUF_SIZE];
    for (;;) {
        int n = SSL_read(ssl, buf, sizeof buf);
        if (n <= 0) {
            if (SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN)
                SSL_shutdown(ssl);   /* answer the client's close_notify */
            break;
        }
        if (SSL_write(ssl, buf, n) != n)
            break;
    }
    SSL_free(ssl);
}

static void *connection_thread(void *arg)
{
    int fd = (int)(intptr_t)arg;
    if (ctx)
        serve_tls(fd);
    else
        serve_plain(fd);
    close(fd);
    ERR_clear_error();
    return NULL;
}

int main(int argc, char **argv)
{
    const char *address = "127.0.0.1", *cert = NULL, *key = NULL;
    int port = 0, plain = 0, backlog = 50;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--plain")) {
            plain = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage("an option needs a value");
        const char *v = argv[++i];
        if (!strcmp(a, "--cert")) cert = v;
        else if (!strcmp(a, "--key")) key = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--address")) address = v;
        else if (!strcmp(a, "--handshake-timeout")) handshake_timeout_ms = atoi(v);
        else if (!strcmp(a, "--backlog")) backlog = atoi(v);
        else usage("unknown option");
    }
    signal(SIGPIPE, SIG_IGN);
    if (!plain) {
        if (!cert || !key)
            usage("--cert and --key are required (or --plain)");
        ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1
            || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1
            || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1
            || SSL_CTX_check_private_key(ctx) != 1) {
            ERR_print_errors_fp(stderr);
            return 1;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, address, &sa.sin_addr) != 1)
        usage("--address must be an IPv4 address");
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, backlog) != 0) {
        perror("openssl_echo: bind/listen");
        return 1;
    }
    socklen_t len = sizeof sa;
    getsockname(ls, (struct sockaddr *)&sa, &len);
    printf("listening on %s:%u\n", address, ntohs(sa.sin_port));
    fflush(stdout);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, STACK_SIZE);
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("openssl_echo: accept");
            usleep(10000);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        if (pthread_create(&t, &attr, connection_thread, (void *)(intptr_t)fd) != 0) {
            fprintf(stderr, "openssl_echo: cannot start a thread\n");
            close(fd);
        }
    }
}
