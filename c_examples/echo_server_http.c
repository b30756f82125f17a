/*
 * echo_server --http: one HTTP/1.0 request per connection (see
 * echo_server_http.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "echo_server_http.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The largest request head accepted; a longer one gets 431. */
#define HTTP_MAX_HEAD 8192
/* After answering an error, how long to read and discard what the client is
   still sending before closing: closing a socket with unread input makes the
   kernel send a reset, which can destroy the answer before the client reads
   it. */
#define HTTP_LINGER_MS 2000

/* Logs why a connection ended early, as echo_server does for echo clients:
   not an error of the server, and nothing at shutdown. */
static void report_end(const struct http_client *c, sslserver_result r)
{
    if (atomic_load(c->stopping) || c->quiet)
        return;
    char detail[512];   /* copied first: the next library call may replace it */
    snprintf(detail, sizeof detail, "%s", sslserver_last_error_message());
    fprintf(stderr, "connection %s: %s (%s)\n", c->peer, detail, sslserver_result_string(r));
}

/* Offset just past the blank line ending the request head, or 0. HTTP/1.1
   (RFC 9112) lets a server accept a bare LF as a line terminator. */
static size_t end_of_head(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] == '\n' && buf[i + 1] == '\n')
            return i + 2;
        if (i + 3 < len && memcmp(buf + i, "\r\n\r\n", 4) == 0)
            return i + 4;
    }
    return 0;
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sends a complete HTTP/1.0 response and then close_notify, which tells the
   client the body is complete. */
static bool http_respond(const struct http_client *c, const char *status, const char *body)
{
    char resp[1024];
    int rlen = snprintf(resp, sizeof resp,
                        "HTTP/1.0 %s\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: %zu\r\n"
                        "Connection: close\r\n"
                        "\r\n%s",
                        status, strlen(body), body);
    if (rlen < 0 || (size_t)rlen >= sizeof resp)
        return false;
    /* One write: the whole response goes out in as few records as possible. */
    size_t n = 0;
    sslserver_result r = sslsocket_write(c->socket, (const uint8_t *)resp, (size_t)rlen, &n);
    if (r == SSLSERVER_OK)
        r = sslsocket_disconnect_from_host(c->socket);
    if (r != SSLSERVER_OK) {
        report_end(c, r);
        return false;
    }
    return true;
}

/* After an error response: reads and discards until the client closes, for at
   most HTTP_LINGER_MS (see there). */
static void http_linger(const struct http_client *c)
{
    int64_t deadline = monotonic_ms() + HTTP_LINGER_MS;
    uint8_t sink[4096];
    for (;;) {
        int64_t left = deadline - monotonic_ms();
        if (left <= 0 || !sslsocket_wait_for_ready_read(c->socket, (int)left))
            return;
        size_t n = 0;
        if (sslsocket_read(c->socket, sink, sizeof sink, &n) != SSLSERVER_OK || n == 0)
            return;
    }
}

/* Answers a request head that is too long (431) or did not end in time (408),
   as a web server does, instead of dropping the connection without a word. */
static void http_reject(const struct http_client *c, const char *status, const char *body)
{
    if (!c->quiet)
        fprintf(stderr, "connection %s: %s\n", c->peer, status);
    if (http_respond(c, status, body))
        http_linger(c);
}

void http_serve_one(const struct http_client *c)
{
    char req[HTTP_MAX_HEAD];
    size_t used = 0;
    /* One deadline for the whole head: a client trickling bytes cannot hold
       the connection longer than one that sends nothing. */
    int64_t deadline = monotonic_ms() + c->request_timeout_ms;
    while (!end_of_head(req, used)) {
        if (used == sizeof req) {
            http_reject(c, "431 Request Header Fields Too Large",
                        "request head larger than 8 KiB\n");
            return;
        }
        int64_t left = deadline - monotonic_ms();
        if (left <= 0 || !sslsocket_wait_for_ready_read(c->socket, left > 0 ? (int)left : 0)) {
            if (atomic_load(c->stopping))
                return;
            if (monotonic_ms() >= deadline &&
                sslsocket_state(c->socket) == SSLSERVER_SOCKET_STATE_CONNECTED) {
                http_reject(c, "408 Request Timeout", "the request head did not arrive in time\n");
                return;
            }
            /* The connection ended before a complete head. */
            if (!c->quiet)
                fprintf(stderr, "connection %s: no complete request (%s)\n", c->peer,
                        sslserver_socket_error_name(sslsocket_error(c->socket)));
            return;
        }
        size_t n = 0;
        sslserver_result r = sslsocket_read(c->socket, (uint8_t *)req + used, sizeof req - used, &n);
        if (r != SSLSERVER_OK) {
            report_end(c, r);
            return;
        }
        if (n == 0)
            return;
        used += n;
    }

    char cipher[96] = "?";
    size_t n = 0;
    if (sslsocket_session_cipher(c->socket, cipher, sizeof cipher, &n) != SSLSERVER_OK)
        snprintf(cipher, sizeof cipher, "?");
    char body[256];
    snprintf(body, sizeof body, "Hello from libsslserver %s over %s (%s)\n", sslserver_version(),
             sslserver_protocol_name(sslsocket_session_protocol(c->socket)), cipher);
    http_respond(c, "200 OK", body);
}
