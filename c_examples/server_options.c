/*
 * The command line of echo_server and epoll_echo_server, the configuration
 * built from it, and the helpers both share; see server_options.h.
 */
#define _POSIX_C_SOURCE 200809L

#include "server_options.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "echo_server_http.h"

const char *program_name = "echo_server";

struct options opts = {
    .port = 4433,
    .handshake_timeout = INT_MIN,
    .max_pending = INT_MIN,
    .request_timeout = HTTP_REQUEST_TIMEOUT_MS,
};

/* Copies of arguments that are split in place (--alpn, --ticket-keys,
   --sni), freed by free_options(). */
#define MAX_COPIES (2 + MAX_SNI)
static char *copies[MAX_COPIES];
static size_t copy_count;

bool check(sslserver_result r, const char *what)
{
    if (r == SSLSERVER_OK)
        return true;
    /* The thread-local detail message is only valid until the next library
       call on this thread, and sslserver_result_string() is such a call. */
    char detail[512];
    snprintf(detail, sizeof detail, "%s", sslserver_last_error_message());
    fprintf(stderr, "%s: %s: %s%s%s\n", program_name, what, sslserver_result_string(r),
            detail[0] ? ": " : "", detail);
    return false;
}

static void usage(FILE *out, bool with_http)
{
    fprintf(out,
            "usage: %s [--address A] [--port P]\n"
            "       [--cert CHAIN.pem --key KEY.pem [--key-passphrase S]]\n"
            "       [--ca CA.pem] [--verify none|query|verify]\n"
            "       [--handshake-timeout MS] [--max-pending N] [--alpn p1,p2]\n"
            "       %s[--write-cert FILE] [--quiet]\n"
            "       [--reuse-port] [--proxy-protocol] [--ticket-keys FILE[,FILE...]]\n"
            "       [--sni NAME=CHAIN.pem:KEY.pem]... [--ocsp FILE.der]\n"
            "       [--ciphers NAMES] [--groups NAMES] [--key-log FILE]\n"
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
            "  --alpn p1,p2           ALPN protocols offered, in preference order\n",
            program_name, with_http ? "[--http [--request-timeout MS]] " : "");
    if (with_http)
        fprintf(out,
                "  --http                 answer one HTTP request per connection instead of\n"
                "                         echoing; a request head over 8 KiB gets 431, one that\n"
                "                         does not arrive within --request-timeout gets 408\n"
                "  --request-timeout MS   --http: time for the whole request head (default 30000)\n");
    fprintf(out,
            "  --write-cert FILE      write the server certificate chain (PEM) to FILE, e.g.\n"
            "                         for a client's -CAfile / --cacert\n"
            "  --quiet                do not log events and connections\n"
            "\n"
            "Behind a balancer, as one of several processes:\n"
            "  --reuse-port           SO_REUSEPORT: other processes may listen on the port too\n"
            "  --proxy-protocol       every connection starts with a PROXY protocol header\n"
            "                         (v1 or v2, as HAProxy's send-proxy[-v2] sends); the\n"
            "                         logged peer is the client it names\n"
            "  --ticket-keys FILES    session ticket keys (48 or 80 bytes each, e.g. from\n"
            "                         `openssl rand 80`), comma-separated: the first encrypts,\n"
            "                         all decrypt; processes with the same files resume each\n"
            "                         other's sessions\n"
            "  --sni NAME=CHAIN:KEY   another certificate for clients asking for NAME (exact\n"
            "                         or *.domain); repeatable; --cert/--key is the default\n"
            "  --ocsp FILE.der        an OCSP response stapled with the default certificate\n"
            "  --ciphers NAMES        cipher suites (IANA names), ':'-separated, preferred first\n"
            "  --groups NAMES         key exchange groups (e.g. X25519:secp256r1)\n"
            "  --key-log FILE         append the session secrets to FILE (NSS key log format,\n"
            "                         for Wireshark); for debugging only\n");
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

/* A copy of s owned by this module, to split in place. */
static char *keep_copy(const char *s)
{
    if (copy_count == MAX_COPIES) {
        fprintf(stderr, "%s: too many list arguments\n", program_name);
        return NULL;
    }
    char *copy = strdup(s);
    if (!copy)
        fprintf(stderr, "%s: out of memory\n", program_name);
    else
        copies[copy_count++] = copy;
    return copy;
}

/* Splits a copy of `list` at `sep` into out[0..*count); false if empty or
   over max. */
static bool split_list(const char *option, const char *list, const char *out[], size_t max,
                       size_t *count)
{
    char *copy = keep_copy(list);
    if (!copy)
        return false;
    *count = 0;
    for (char *save = NULL, *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (*count == max) {
            fprintf(stderr, "%s: %s takes at most %zu entries\n", program_name, option, max);
            return false;
        }
        out[(*count)++] = p;
    }
    if (*count == 0) {
        fprintf(stderr, "%s: %s needs at least one entry\n", program_name, option);
        return false;
    }
    return true;
}

/* NAME=CHAIN.pem:KEY.pem */
static bool parse_sni(const char *v)
{
    if (opts.sni_count == MAX_SNI) {
        fprintf(stderr, "%s: at most %d --sni certificates\n", program_name, MAX_SNI);
        return false;
    }
    char *copy = keep_copy(v);
    if (!copy)
        return false;
    char *eq = strchr(copy, '=');
    char *colon = eq ? strrchr(eq + 1, ':') : NULL;
    if (!eq || !colon || eq == copy || colon == eq + 1 || !colon[1]) {
        fprintf(stderr, "%s: --sni takes NAME=CHAIN.pem:KEY.pem, not '%s'\n", program_name, v);
        return false;
    }
    *eq = '\0';
    *colon = '\0';
    opts.sni[opts.sni_count++] = (struct sni_entry){ copy, eq + 1, colon + 1 };
    return true;
}

int parse_args(int argc, char **argv, bool with_http)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
#define NEED_VALUE()                                                              \
    do {                                                                          \
        if (!v) {                                                                 \
            fprintf(stderr, "%s: %s needs a value\n", program_name, a);                \
            return 2;                                                             \
        }                                                                         \
        i++;                                                                      \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout, with_http);
            return 0;
        } else if (with_http && !strcmp(a, "--http")) {
            opts.http = true;
        } else if (!strcmp(a, "--quiet")) {
            opts.quiet = true;
        } else if (!strcmp(a, "--reuse-port")) {
            opts.reuse_port = true;
        } else if (!strcmp(a, "--proxy-protocol")) {
            opts.proxy_protocol = true;
        } else if (!strcmp(a, "--address")) {
            NEED_VALUE();
            opts.address = v;
        } else if (!strcmp(a, "--port")) {
            NEED_VALUE();
            if (!parse_int(v, 0, 65535, &n)) {
                fprintf(stderr, "%s: bad port '%s'\n", program_name, v);
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
                fprintf(stderr, "%s: --verify takes none, query or verify\n", program_name);
                return 2;
            }
            opts.verify = v;
        } else if (with_http && !strcmp(a, "--request-timeout")) {
            NEED_VALUE();
            if (!parse_int(v, 1, INT_MAX, &n)) {
                fprintf(stderr, "%s: bad --request-timeout '%s' (1 or more ms)\n", program_name, v);
                return 2;
            }
            opts.request_timeout = (int)n;
        } else if (!strcmp(a, "--handshake-timeout")) {
            NEED_VALUE();
            if (!parse_int(v, -1, INT_MAX, &n)) {
                fprintf(stderr, "%s: bad timeout '%s'\n", program_name, v);
                return 2;
            }
            opts.handshake_timeout = (int)n;
        } else if (!strcmp(a, "--max-pending")) {
            NEED_VALUE();
            if (!parse_int(v, 1, INT_MAX, &n)) {
                fprintf(stderr, "%s: bad --max-pending '%s'\n", program_name, v);
                return 2;
            }
            opts.max_pending = (int)n;
        } else if (!strcmp(a, "--alpn")) {
            NEED_VALUE();
            if (!split_list(a, v, opts.alpn, MAX_ALPN, &opts.alpn_count))
                return 2;
        } else if (!strcmp(a, "--ticket-keys")) {
            NEED_VALUE();
            if (!split_list(a, v, opts.ticket_keys, MAX_TICKET_KEYS, &opts.ticket_key_count))
                return 2;
        } else if (!strcmp(a, "--sni")) {
            NEED_VALUE();
            if (!parse_sni(v))
                return 2;
        } else if (!strcmp(a, "--ocsp")) {
            NEED_VALUE();
            opts.ocsp = v;
        } else if (!strcmp(a, "--ciphers")) {
            NEED_VALUE();
            opts.ciphers = v;
        } else if (!strcmp(a, "--groups")) {
            NEED_VALUE();
            opts.groups = v;
        } else if (!strcmp(a, "--key-log")) {
            NEED_VALUE();
            opts.key_log = v;
        } else if (!strcmp(a, "--write-cert")) {
            NEED_VALUE();
            opts.write_cert = v;
        } else {
            fprintf(stderr, "%s: unknown argument '%s'\n", program_name, a);
            usage(stderr, with_http);
            return 2;
        }
#undef NEED_VALUE
    }
    if (!opts.cert != !opts.key) {
        fprintf(stderr, "%s: --cert and --key go together\n", program_name);
        return 2;
    }
    return -1;
}

/* Reads a whole (small) binary file; NULL (reported) on failure. */
static uint8_t *read_file(const char *path, size_t *len)
{
    enum { MAX_SIZE = 1 << 20 };
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s: %s\n", program_name, path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = malloc(MAX_SIZE);
    size_t n = buf ? fread(buf, 1, MAX_SIZE, f) : 0;
    bool too_big = buf && n == MAX_SIZE;
    bool failed = !buf || ferror(f) || too_big;
    fclose(f);
    if (failed) {
        fprintf(stderr, "%s: %s: %s\n", program_name, path,
                !buf ? "out of memory" : too_big ? "larger than 1 MiB" : "read error");
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static bool set_ocsp(sslconfig *cfg)
{
    size_t len = 0;
    uint8_t *der = read_file(opts.ocsp, &len);
    if (!der)
        return false;
    if (len == 0) {
        /* The library takes length 0 as "no response": say what is wrong. */
        fprintf(stderr, "%s: %s: empty file\n", program_name, opts.ocsp);
        free(der);
        return false;
    }
    bool ok = check(sslconfig_set_ocsp_response(cfg, der, len), opts.ocsp);
    free(der);
    return ok;
}

sslconfig *make_config(void)
{
    sslconfig *cfg = sslconfig_new();
    if (!cfg) {
        fprintf(stderr, "%s: sslconfig_new failed: %s\n", program_name, sslserver_last_error_message());
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
    if (opts.ticket_key_count &&
        !check(sslconfig_set_session_ticket_keys_files(cfg, opts.ticket_keys, opts.ticket_key_count),
               "--ticket-keys"))
        goto fail;
    for (size_t i = 0; i < opts.sni_count; i++) {
        const struct sni_entry *e = &opts.sni[i];
        if (!check(sslconfig_add_sni_certificate_files(cfg, e->name, e->chain, e->key, NULL),
                   "--sni"))
            goto fail;
    }
    if (opts.ocsp && !set_ocsp(cfg))
        goto fail;
    if (opts.ciphers && !check(sslconfig_set_ciphers(cfg, opts.ciphers), "--ciphers"))
        goto fail;
    if (opts.groups && !check(sslconfig_set_groups(cfg, opts.groups), "--groups"))
        goto fail;
    if (opts.key_log && !check(sslconfig_set_key_log_file(cfg, opts.key_log), "--key-log"))
        goto fail;
    return cfg;
fail:
    sslconfig_free(cfg);
    return NULL;
}

bool apply_server_options(sslserver *server)
{
    if (opts.handshake_timeout != INT_MIN &&
        !check(sslserver_set_handshake_timeout(server, opts.handshake_timeout),
               "--handshake-timeout"))
        return false;
    if (opts.max_pending != INT_MIN &&
        !check(sslserver_set_max_pending_connections(server, opts.max_pending), "--max-pending"))
        return false;
    if (opts.reuse_port && !check(sslserver_set_reuse_port(server, true), "--reuse-port"))
        return false;
    if (opts.proxy_protocol &&
        !check(sslserver_set_proxy_protocol(server, SSLSERVER_PROXY_PROTOCOL_REQUIRED),
               "--proxy-protocol"))
        return false;
    return true;
}

void free_options(void)
{
    for (size_t i = 0; i < copy_count; i++)
        free(copies[i]);
    copy_count = 0;
}

void format_peer(const sslsocket *s, char *out, size_t outlen)
{
    char addr[64], via[80] = "";
    size_t n = 0;
    if (sslsocket_peer_address(s, addr, sizeof addr, &n) != SSLSERVER_OK)
        snprintf(addr, sizeof addr, "?");
    if (opts.proxy_protocol) {
        char transport[64];
        if (sslsocket_transport_peer_address(s, transport, sizeof transport, &n) != SSLSERVER_OK)
            snprintf(transport, sizeof transport, "?");
        snprintf(via, sizeof via, " via %s", transport);
    }
    const char *fmt = strchr(addr, ':') ? "[%s]:%u%s" : "%s:%u%s";
    snprintf(out, outlen, fmt, addr, (unsigned)sslsocket_peer_port(s), via);
}

/* BUFFER_TOO_SMALL reports the size needed, without the NUL: grow to it. */
char *config_string(sslserver_result (*get)(const sslconfig *, char *, size_t, size_t *),
                    const sslconfig *cfg, const char *what)
{
    size_t len = 256, needed = 0;
    for (;;) {
        char *buf = malloc(len);
        if (!buf) {
            fprintf(stderr, "%s: out of memory\n", program_name);
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

bool write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "%s: %s: %s\n", program_name, path, strerror(errno));
        return false;
    }
    bool ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok)
        fprintf(stderr, "%s: writing %s failed\n", program_name, path);
    return ok;
}
