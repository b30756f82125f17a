/*
 * The command line of echo_server and epoll_echo_server, the configuration
 * built from it, and the small helpers both programs share.
 *
 * parse_args() fills `opts`; make_config() turns the TLS options into an
 * sslconfig and apply_server_options() the server options into settings of
 * an sslserver. Every failure is reported on stderr, prefixed with
 * `program_name`, with the option or file it concerns.
 */
#ifndef SERVER_OPTIONS_H
#define SERVER_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sslserver.h"

#define MAX_ALPN 16
#define MAX_TICKET_KEYS 16
#define MAX_SNI 16

/* --sni NAME=CHAIN.pem:KEY.pem, split in place. */
struct sni_entry {
    const char *name;
    const char *chain;
    const char *key;
};

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
    const char *alpn[MAX_ALPN];
    size_t alpn_count;
    const char *write_cert;
    bool http;
    int request_timeout;       /* --http: ms for the whole request head */
    bool quiet;
    /* Running behind a balancer, as one of several processes. */
    bool reuse_port;
    bool proxy_protocol;
    const char *ticket_keys[MAX_TICKET_KEYS];
    size_t ticket_key_count;
    struct sni_entry sni[MAX_SNI];
    size_t sni_count;
    const char *ocsp;          /* a DER OCSP response file */
    const char *ciphers;
    const char *groups;
    const char *key_log;
};

extern struct options opts;

/* The program's name in messages and usage ("echo_server" unless set). */
extern const char *program_name;

/* Reports a failed library call on stderr ("echo_server: WHAT: RESULT:
   DETAIL"); returns whether r is SSLSERVER_OK. */
bool check(sslserver_result r, const char *what);

/* Returns -1 to go on, otherwise the exit code (0 after --help).
   `with_http`: whether --http and --request-timeout are options. */
int parse_args(int argc, char **argv, bool with_http);

/* The TLS configuration of the options, or NULL (reported). */
sslconfig *make_config(void);

/* The server settings of the options; false (reported) on failure. */
bool apply_server_options(sslserver *server);

/* Frees what parse_args allocated. */
void free_options(void);

/* "1.2.3.4:5" or "[::1]:5" for a connection; never fails. Behind a
   balancer (--proxy-protocol) the client's address, then " via " and the
   balancer's address. */
void format_peer(const sslsocket *s, char *out, size_t outlen);

/* A string from a config getter (malloc'd), or NULL (reported). */
char *config_string(sslserver_result (*get)(const sslconfig *, char *, size_t, size_t *),
                    const sslconfig *cfg, const char *what);

/* Writes `text` to `path`; false (reported) on failure. */
bool write_file(const char *path, const char *text);

#endif
