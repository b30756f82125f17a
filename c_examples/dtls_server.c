/*
 * dtls_server -- Qt's DTLS server example (QDtls + QDtlsClientVerifier) on
 * libsslserver: DTLS 1.2 over UDP, authenticated by a pre-shared key, a
 * certificate, or both.
 *
 *   dtls_server [--address A] [--port P] [--psk HEX] [--identity-hint S]
 *               [--cert PEM --key PEM] [--quiet]
 *
 * - With --psk, every client identity is accepted with the key given in hex;
 *   the server announces the identity hint (default "libsslserver DTLS
 *   example").
 * - With --cert and --key (the certificate chain and private key, PEM), the
 *   server also offers ECDHE-ECDSA or ECDHE-RSA suites (an sslconfig handed
 *   to dtlsserver_set_config). At least one of --psk and --cert is needed.
 * - It prints "listening on ADDRESS:PORT" (flushed) once bound (port 0 picks
 *   one), then, unless --quiet, one line per event: handshakes, datagrams
 *   (hex and text) and errors.
 * - Every decrypted datagram is answered, encrypted, with
 *   "to ADDRESS:PORT: ACK" (that peer's address and port), as in Qt.
 * - SIGINT or SIGTERM: close_notify to every peer, exit 0.
 *
 * The library does the UDP work on its own thread: the stateless cookie
 * exchange (HelloVerifyRequest) before a client gets any state, handshake
 * retransmissions and deadlines, decryption. The callbacks below run on that
 * thread, one at a time, with no library lock held, so they can answer with
 * dtlsserver_write directly. SIGINT and SIGTERM are blocked in every thread
 * and received by the main thread with sigwait().
 *
 * Try it:  dtls_server --port 4444 --psk 1a2b3c4d
 *          openssl s_client -dtls1_2 -connect 127.0.0.1:4444 -psk 1a2b3c4d -psk_identity me
 * or with a certificate (s_client without -psk):
 *          dtls_server --port 4444 --cert server.pem --key server.key
 *          openssl s_client -dtls1_2 -connect 127.0.0.1:4444
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sslserver.h"

#define DEFAULT_HINT "libsslserver DTLS example"

static struct {
    const char *address; /* NULL = every address */
    uint16_t port;
    uint8_t psk[DTLSSERVER_MAX_PSK_LENGTH];
    size_t psk_len;
    bool have_psk;
    const char *hint;
    const char *cert; /* certificate chain file, PEM; NULL = none */
    const char *key;  /* its private key file, PEM */
    bool quiet;
} opts = {.port = 0, .hint = DEFAULT_HINT};

static dtlsserver *server;

static void usage(FILE *out)
{
    fprintf(out, "usage: dtls_server [--address A] [--port P] [--psk HEX] [--identity-hint S]\n"
                 "                   [--cert PEM --key PEM] [--quiet]\n");
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parses the --psk argument; false if it is not 1..256 bytes of hex. */
static bool parse_psk(const char *hex)
{
    size_t len = strlen(hex);
    if (len == 0 || len % 2 != 0 || len / 2 > sizeof opts.psk)
        return false;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        opts.psk[i] = (uint8_t)(hi << 4 | lo);
    }
    opts.psk_len = len / 2;
    return true;
}

static bool parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        bool has_value = i + 1 < argc;
        if (strcmp(arg, "--quiet") == 0) {
            opts.quiet = true;
        } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (!has_value) {
            fprintf(stderr, "dtls_server: %s needs a value (or is unknown)\n", arg);
            return false;
        } else if (strcmp(arg, "--address") == 0) {
            opts.address = argv[++i];
        } else if (strcmp(arg, "--port") == 0) {
            char *end = NULL;
            errno = 0;
            long port = strtol(argv[++i], &end, 10);
            if (errno != 0 || *end != '\0' || port < 0 || port > 65535) {
                fprintf(stderr, "dtls_server: bad port '%s'\n", argv[i]);
                return false;
            }
            opts.port = (uint16_t)port;
        } else if (strcmp(arg, "--psk") == 0) {
            if (!parse_psk(argv[++i])) {
                fprintf(stderr, "dtls_server: --psk wants 1 to %d bytes in hex, e.g. 1a2b3c4d\n",
                        DTLSSERVER_MAX_PSK_LENGTH);
                return false;
            }
            opts.have_psk = true;
        } else if (strcmp(arg, "--identity-hint") == 0) {
            opts.hint = argv[++i];
        } else if (strcmp(arg, "--cert") == 0) {
            opts.cert = argv[++i];
        } else if (strcmp(arg, "--key") == 0) {
            opts.key = argv[++i];
        } else {
            fprintf(stderr, "dtls_server: unknown option %s\n", arg);
            return false;
        }
    }
    if ((opts.cert == NULL) != (opts.key == NULL)) {
        fprintf(stderr, "dtls_server: --cert and --key go together\n");
        return false;
    }
    if (!opts.have_psk && opts.cert == NULL) {
        fprintf(stderr, "dtls_server: --psk HEX or --cert PEM --key PEM is required\n");
        return false;
    }
    return true;
}

/* Any identity gets the key from the command line (Qt's example does the
   same in its pskRequired handler). Runs during each handshake. */
static int psk_for_identity(const uint8_t *identity, size_t identity_len, uint8_t *key,
                            size_t key_capacity, void *userdata)
{
    (void)identity;
    (void)identity_len;
    (void)userdata;
    if (opts.psk_len > key_capacity)
        return -1;
    memcpy(key, opts.psk, opts.psk_len);
    return (int)opts.psk_len;
}

/* "ADDRESS:PORT" as Qt's example writes a peer (IPv6 without brackets). */
static void peer_info(const dtlsserver_event *event, char *buf, size_t len)
{
    snprintf(buf, len, "%s:%u", event->peer_address, (unsigned)event->peer_port);
}

/* Prints bytes as text: printable ASCII as is, the rest escaped. */
static void print_text(const uint8_t *data, size_t len)
{
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        uint8_t c = data[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c >= 0x20 && c < 0x7f)
            putchar(c);
        else
            printf("\\x%02x", c);
    }
    putchar('"');
}

static void log_event(const dtlsserver_event *event, void *userdata)
{
    (void)userdata;
    if (opts.quiet)
        return;
    printf("%s %s", dtlsserver_event_kind_name(event->kind), event->description);
    if (event->kind == DTLSSERVER_EVENT_ERROR)
        printf(" (%s)", sslserver_socket_error_name(event->socket_error));
    putchar('\n');
    fflush(stdout);
}

/* A decrypted datagram: log it (hex and text) and answer "to PEER: ACK". */
static void on_datagram(const dtlsserver_event *event, void *userdata)
{
    char peer[80];
    peer_info(event, peer, sizeof peer);
    if (!opts.quiet) {
        printf("%s %s: hex ", dtlsserver_event_kind_name(event->kind), event->description);
        for (size_t i = 0; i < event->data_len; i++)
            printf("%02x", event->data[i]);
        printf(" text ");
        print_text(event->data, event->data_len);
        putchar('\n');
        fflush(stdout);
    }
    (void)userdata;
    char reply[128];
    int n = snprintf(reply, sizeof reply, "to %s: ACK", peer);
    if (n < 0 || (size_t)n >= sizeof reply)
        return;
    sslserver_result r = dtlsserver_write(server, event->peer_address, event->peer_port,
                                          (const uint8_t *)reply, (size_t)n);
    if (r != SSLSERVER_OK && !opts.quiet) {
        printf("ERROR %s: cannot reply: %s\n", peer, sslserver_last_error_message());
        fflush(stdout);
    }
}

static bool check(sslserver_result r, const char *what)
{
    if (r == SSLSERVER_OK)
        return true;
    fprintf(stderr, "dtls_server: %s: %s (%s)\n", what, sslserver_result_string(r),
            sslserver_last_error_message());
    return false;
}

/* The PSK side: the callback and the identity hint. */
static bool set_up_psk(void)
{
    return check(dtlsserver_set_identity_hint(server, opts.hint), "dtlsserver_set_identity_hint") &&
           check(dtlsserver_set_psk_callback(server, psk_for_identity, NULL),
                 "dtlsserver_set_psk_callback");
}

/* The certificate side: an sslconfig with the chain and key, copied by
   dtlsserver_set_config (so it is freed right after). */
static bool set_up_certificate(void)
{
    sslconfig *cfg = sslconfig_new();
    if (cfg == NULL) {
        fprintf(stderr, "dtls_server: out of memory\n");
        return false;
    }
    bool ok = check(sslconfig_set_certificate_chain_file(cfg, opts.cert), "--cert") &&
              check(sslconfig_set_private_key_file(cfg, opts.key, NULL), "--key") &&
              check(dtlsserver_set_config(server, cfg), "dtlsserver_set_config");
    sslconfig_free(cfg);
    return ok;
}

int main(int argc, char **argv)
{
    if (!parse_args(argc, argv)) {
        usage(stderr);
        return 2;
    }

    /* Block the shutdown signals before the library starts its thread (it
       inherits this mask), so only the sigwait() below receives them. A
       shell starts background jobs with SIGINT ignored, and an ignored
       signal never reaches sigwait(): take the default disposition back. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    int status = 1;
    server = dtlsserver_new();
    if (server == NULL) {
        fprintf(stderr, "dtls_server: out of memory\n");
        return 1;
    }
    static const dtlsserver_event_kind logged[] = {
        DTLSSERVER_EVENT_HANDSHAKE_STARTED,
        DTLSSERVER_EVENT_HANDSHAKE_COMPLETE,
        DTLSSERVER_EVENT_PEER_CLOSED,
        DTLSSERVER_EVENT_ERROR,
    };
    for (size_t i = 0; i < sizeof logged / sizeof logged[0]; i++)
        if (!check(dtlsserver_register_callback(server, logged[i], log_event, NULL),
                   "dtlsserver_register_callback"))
            goto out;
    if (!check(dtlsserver_register_callback(server, DTLSSERVER_EVENT_DATAGRAM_RECEIVED,
                                            on_datagram, NULL),
               "dtlsserver_register_callback") ||
        (opts.have_psk && !set_up_psk()) || (opts.cert != NULL && !set_up_certificate()) ||
        !check(dtlsserver_listen(server, opts.address, opts.port), "listen"))
        goto out;

    char addr[64];
    size_t n = 0;
    if (!check(dtlsserver_server_address(server, addr, sizeof addr, &n), "dtlsserver_server_address"))
        goto out;
    printf(strchr(addr, ':') ? "listening on [%s]:%u\n" : "listening on %s:%u\n", addr,
           (unsigned)dtlsserver_server_port(server));
    fflush(stdout);

    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    if (!opts.quiet) {
        printf("signal %d: sending close_notify to %zu peer(s) and exiting\n", sig,
               dtlsserver_peer_count(server));
        fflush(stdout);
    }
    dtlsserver_close(server);
    status = 0;
out:
    dtlsserver_free(server);
    return status;
}
