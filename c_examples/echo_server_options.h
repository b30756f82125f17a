/*
 * echo_server's command line and the configuration built from it.
 *
 * parse_args() fills `opts`; make_config() turns the TLS options into an
 * sslconfig and apply_server_options() the server options into settings of
 * an sslserver. Every failure is reported on stderr with the option or
 * file it concerns.
 */
#ifndef ECHO_SERVER_OPTIONS_H
#define ECHO_SERVER_OPTIONS_H

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

/* Reports a failed library call on stderr ("echo_server: WHAT: RESULT:
   DETAIL"); returns whether r is SSLSERVER_OK. */
bool check(sslserver_result r, const char *what);

/* Returns -1 to go on, otherwise the exit code (0 after --help). */
int parse_args(int argc, char **argv);

/* The TLS configuration of the options, or NULL (reported). */
sslconfig *make_config(void);

/* The server settings of the options; false (reported) on failure. */
bool apply_server_options(sslserver *server);

/* Frees what parse_args allocated. */
void free_options(void);

#endif
