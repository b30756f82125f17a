/* Listens on an ephemeral loopback port, prints it, and exits: the smallest
   program that proves the installed header and library work together. */
#include <stdio.h>

#include <sslserver.h>

static void fail(const char *what, sslserver_result r)
{
    char detail[512];   /* copied first: the next library call may replace it */
    snprintf(detail, sizeof detail, "%s", sslserver_last_error_message());
    fprintf(stderr, "consumer: %s: %s: %s\n", what, sslserver_result_string(r), detail);
}

int main(void)
{
    int rc = 1;
    sslconfig *cfg = sslconfig_new();
    sslserver *server = sslserver_new();
    sslserver_result r;
    if (!cfg || !server)
        fprintf(stderr, "consumer: allocation failed\n");
    else if ((r = sslconfig_generate_self_signed(cfg, NULL, 0)) != SSLSERVER_OK)
        fail("sslconfig_generate_self_signed", r);
    else if ((r = sslserver_set_config(server, cfg)) != SSLSERVER_OK)
        fail("sslserver_set_config", r);
    else if ((r = sslserver_listen(server, "127.0.0.1", 0)) != SSLSERVER_OK)
        fail("sslserver_listen", r);
    else {
        printf("sslserver %s listening on port %u\n", sslserver_version(),
               (unsigned)sslserver_server_port(server));
        rc = 0;
    }
    sslserver_free(server);
    sslconfig_free(cfg);
    return rc;
}
