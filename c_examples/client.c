/*
 * client: the client mode of libsslserver (QSslSocket::connectToHostEncrypted).
 *
 *   client [--cafile CA.pem] [--cert CHAIN.pem --key KEY.pem]
 *          [--verify-name NAME] [--ignore-errors CODE,...] [--alpn p1,p2]
 *          [--insecure] [--starttls smtp] HOST PORT
 *
 * With --starttls smtp it connects in plain text, reads the greeting, says
 * EHLO and STARTTLS (QSslSocket::connectToHost + startClientEncryption),
 * then upgrades. Connects, prints one line
 *   connected protocol=TLSv1.3 cipher=NAME alpn=PROTO subject=SUBJECT
 * then copies standard input to the connection and the connection to
 * standard output until both ends are closed. On a certificate verification
 * failure it prints each error's Qt-numbered code and name and exits 1.
 */
#define _POSIX_C_SOURCE 200809L /* strtok_r, read */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sslserver.h"

#define MAX_LIST 16

static void usage(void) {
  fprintf(stderr,
          "usage: client [--cafile CA.pem] [--cert CHAIN.pem --key KEY.pem]\n"
          "              [--verify-name NAME] [--ignore-errors CODE,...] [--alpn p1,p2]\n"
          "              [--insecure] [--starttls smtp] HOST PORT\n");
}

/* Fails with the library's explanation of the last error. */
static int check(sslserver_result r, const char *what) {
  if (r != SSLSERVER_OK) {
    fprintf(stderr, "client: %s: %s (%s)\n", what, sslserver_last_error_message(),
            sslserver_result_string(r));
    return -1;
  }
  return 0;
}

/* Splits "a,b,c" in place into at most MAX_LIST items. */
static size_t split_list(char *text, char *items[MAX_LIST]) {
  size_t n = 0;
  for (char *save = NULL, *item = strtok_r(text, ",", &save); item && n < MAX_LIST;
       item = strtok_r(NULL, ",", &save))
    items[n++] = item;
  return n;
}

/* Asked about certificate errors that were not ignored up front: print them
 * and refuse, so the connection fails. */
static bool report_errors(const sslserver_ssl_error *errors, size_t count, void *userdata) {
  (void)userdata;
  for (size_t i = 0; i < count; i++)
    printf("certificate error %d %s: %s\n", (int)errors[i].code,
           sslserver_ssl_error_code_name(errors[i].code), errors[i].message);
  fflush(stdout);
  return false;
}

/* Reads one SMTP reply line (one byte at a time: what follows is TLS) into
 * `line`; false when the server closed or the line is too long. */
static bool read_reply_line(sslsocket *s, char *line, size_t size) {
  size_t len = 0;
  for (;;) {
    uint8_t byte;
    size_t n = 0;
    if (sslsocket_read(s, &byte, 1, &n) != SSLSERVER_OK || n == 0)
      return false;
    if (byte == '\n')
      break;
    if (len + 1 >= size)
      return false;
    line[len++] = (char)byte;
  }
  if (len > 0 && line[len - 1] == '\r')
    len--;
  line[len] = '\0';
  return true;
}

/* Reads a (possibly multi-line) reply; true if its code is `code`. Sets
 * *has_starttls when a line of it advertises STARTTLS. */
static bool smtp_reply(sslsocket *s, const char *code, bool *has_starttls) {
  char line[1024];
  for (;;) {
    if (!read_reply_line(s, line, sizeof line)) {
      fprintf(stderr, "client: the SMTP server closed the connection\n");
      return false;
    }
    if (strncmp(line, code, 3) != 0) {
      fprintf(stderr, "client: unexpected SMTP reply: %s\n", line);
      return false;
    }
    if (has_starttls && strlen(line) > 4 && strcmp(line + 4, "STARTTLS") == 0)
      *has_starttls = true;
    if (line[3] != '-')
      return true; /* the last line of the reply */
  }
}

/* The plain-text part of SMTP's STARTTLS (RFC 3207). */
static bool smtp_starttls(sslsocket *s) {
  bool has_starttls = false;
  static const char ehlo[] = "EHLO client.invalid\r\n", starttls[] = "STARTTLS\r\n";
  if (!smtp_reply(s, "220", NULL) ||
      check(sslsocket_write(s, (const uint8_t *)ehlo, strlen(ehlo), NULL), "EHLO") != 0 ||
      !smtp_reply(s, "250", &has_starttls))
    return false;
  if (!has_starttls) {
    fprintf(stderr, "client: the SMTP server does not offer STARTTLS\n");
    return false;
  }
  return check(sslsocket_write(s, (const uint8_t *)starttls, strlen(starttls), NULL),
               "STARTTLS") == 0 &&
         smtp_reply(s, "220", NULL);
}

/* Copies the connection to standard output until the server closes. */
static void *copy_to_stdout(void *arg) {
  sslsocket *s = arg;
  uint8_t buf[16384];
  for (;;) {
    size_t n = 0;
    sslserver_result r = sslsocket_read(s, buf, sizeof buf, &n);
    if (r != SSLSERVER_OK || n == 0)
      break; /* closed (cleanly or not): nothing more will come */
    if (fwrite(buf, 1, n, stdout) != n)
      break;
    fflush(stdout);
  }
  return NULL;
}

int main(int argc, char **argv) {
  const char *cafile = NULL, *cert = NULL, *key = NULL, *verify_name = NULL;
  char *ignore = NULL, *alpn = NULL;
  const char *starttls = NULL;
  bool insecure = false;
  int arg = 1;
  for (; arg < argc && strncmp(argv[arg], "--", 2) == 0; arg++) {
    const char *opt = argv[arg];
    if (strcmp(opt, "--insecure") == 0) {
      insecure = true;
      continue;
    }
    if (arg + 1 >= argc) {
      usage();
      return 2;
    }
    char *value = argv[++arg];
    if (strcmp(opt, "--cafile") == 0) cafile = value;
    else if (strcmp(opt, "--cert") == 0) cert = value;
    else if (strcmp(opt, "--key") == 0) key = value;
    else if (strcmp(opt, "--verify-name") == 0) verify_name = value;
    else if (strcmp(opt, "--ignore-errors") == 0) ignore = value;
    else if (strcmp(opt, "--alpn") == 0) alpn = value;
    else if (strcmp(opt, "--starttls") == 0) starttls = value;
    else {
      usage();
      return 2;
    }
  }
  if (argc - arg != 2 || (cert == NULL) != (key == NULL) ||
      (starttls && strcmp(starttls, "smtp") != 0)) {
    usage();
    return 2;
  }
  const char *host = argv[arg];
  long port = strtol(argv[arg + 1], NULL, 10);
  if (port <= 0 || port > 65535) {
    usage();
    return 2;
  }

  int status = 1;
  sslsocket *s = NULL;
  sslconfig *cfg = sslconfig_new();
  if (cfg == NULL)
    return 1;
  if (cafile && check(sslconfig_add_ca_certificates_file(cfg, cafile), "--cafile") != 0)
    goto done;
  if (cert && (check(sslconfig_set_certificate_chain_file(cfg, cert), "--cert") != 0 ||
               check(sslconfig_set_private_key_file(cfg, key, NULL), "--key") != 0))
    goto done;
  if (insecure && check(sslconfig_set_peer_verify_mode(cfg, SSLSERVER_VERIFY_NONE), "--insecure") != 0)
    goto done;
  if (ignore) {
    char *items[MAX_LIST];
    sslserver_ssl_error_code codes[MAX_LIST];
    size_t n = split_list(ignore, items);
    for (size_t i = 0; i < n; i++)
      codes[i] = (sslserver_ssl_error_code)strtol(items[i], NULL, 10);
    if (check(sslconfig_set_ignored_ssl_errors(cfg, codes, n), "--ignore-errors") != 0)
      goto done;
  }
  if (alpn) {
    char *items[MAX_LIST];
    size_t n = split_list(alpn, items);
    if (check(sslconfig_set_alpn_protocols(cfg, (const char *const *)items, n), "--alpn") != 0)
      goto done;
  }
  if (check(sslconfig_set_ssl_errors_callback(cfg, report_errors, NULL), "callback") != 0)
    goto done;

  if (starttls) {
    if (check(sslsocket_connect(host, (uint16_t)port, 10000, &s), "connect") != 0 ||
        !smtp_starttls(s) ||
        check(sslsocket_start_client_encryption(s, cfg, verify_name, 10000), "connect") != 0)
      goto done;
  } else if (check(sslsocket_connect_encrypted(host, (uint16_t)port, cfg, verify_name, 10000, &s),
                   "connect") != 0) {
    goto done;
  }

  char cipher[128] = "", protocol_alpn[256] = "", subject[1024] = "";
  size_t n = 0;
  sslsocket_session_cipher(s, cipher, sizeof cipher, &n);
  sslsocket_alpn_protocol(s, protocol_alpn, sizeof protocol_alpn, &n);
  sslsocket_peer_certificate_subject(s, subject, sizeof subject, &n);
  printf("connected protocol=%s cipher=%s alpn=%s subject=%s\n",
         sslserver_protocol_name(sslsocket_session_protocol(s)), cipher,
         protocol_alpn[0] ? protocol_alpn : "-", subject);
  fflush(stdout);

  pthread_t reader;
  if (pthread_create(&reader, NULL, copy_to_stdout, s) != 0) {
    fprintf(stderr, "client: pthread_create: %s\n", strerror(errno));
    goto done;
  }
  uint8_t buf[16384];
  for (;;) {
    ssize_t got = read(STDIN_FILENO, buf, sizeof buf);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      break;
    if (check(sslsocket_write(s, buf, (size_t)got, NULL), "write") != 0)
      break;
  }
  /* End of input: tell the server (close_notify), then wait for its end. */
  sslsocket_disconnect_from_host(s);
  pthread_join(reader, NULL);
  status = 0;

done:
  sslsocket_free(s);
  sslconfig_free(cfg);
  return status;
}
