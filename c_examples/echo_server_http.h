/*
 * echo_server --http: answers one HTTP/1.0 request per connection.
 *
 * A complete request head (ending in a blank line; bare LF allowed) gets
 * 200 and a line naming the library, the protocol and the cipher. A head
 * over 8 KiB gets 431 Request Header Fields Too Large; one that is not
 * complete within request_timeout_ms of the start gets 408 Request Timeout.
 * Every answer is followed by close_notify, which tells the client the body
 * is complete.
 */
#ifndef ECHO_SERVER_HTTP_H
#define ECHO_SERVER_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>

#include "sslserver.h"

/* An HTTP client gets this long to send its whole request head unless
   --request-timeout says otherwise. */
#define HTTP_REQUEST_TIMEOUT_MS 30000

struct http_client {
    sslsocket *socket;            /* encrypted; stays owned by the caller */
    const char *peer;             /* "address:port", for log lines */
    int request_timeout_ms;       /* for the whole request head, > 0 */
    bool quiet;                   /* no log lines */
    const atomic_bool *stopping;  /* set at shutdown: end without logging */
};

/* Reads one request head and answers it (200, 431 or 408); returns when the
   connection is done with. Blocks the calling thread. */
void http_serve_one(const struct http_client *c);

#endif
