// header_check -- proves that sslserver.h is usable from C++17 under
// -Wall -Wextra -Werror -pedantic: creates a config and a server, listens on
// an ephemeral loopback port, prints it and closes.
#include "sslserver.h"

#include <cstdio>
#include <memory>
#include <string>

namespace {

// RAII owners for the opaque handles.
struct ConfigDeleter {
    void operator()(sslconfig *c) const noexcept { sslconfig_free(c); }
};
struct ServerDeleter {
    void operator()(sslserver *s) const noexcept { sslserver_free(s); }
};
using Config = std::unique_ptr<sslconfig, ConfigDeleter>;
using Server = std::unique_ptr<sslserver, ServerDeleter>;

bool check(sslserver_result r, const char *what)
{
    if (r == SSLSERVER_OK)
        return true;
    const std::string detail = sslserver_last_error_message();  // copy before the next call
    std::fprintf(stderr, "header_check: %s: %s: %s\n", what, sslserver_result_string(r), detail.c_str());
    return false;
}

}  // namespace

int main()
{
    Config cfg(sslconfig_new());
    Server server(sslserver_new());
    if (!cfg || !server) {
        std::fprintf(stderr, "header_check: allocation failed: %s\n", sslserver_last_error_message());
        return 1;
    }
    const char *const names[] = {"localhost"};
    if (!check(sslconfig_generate_self_signed(cfg.get(), names, 1), "sslconfig_generate_self_signed") ||
        !check(sslserver_set_config(server.get(), cfg.get()), "sslserver_set_config") ||
        !check(sslserver_listen(server.get(), "127.0.0.1", 0), "sslserver_listen"))
        return 1;
    if (!sslserver_is_listening(server.get()) || sslserver_server_port(server.get()) == 0) {
        std::fprintf(stderr, "header_check: not listening after a successful listen\n");
        return 1;
    }
    std::printf("sslserver %s listening on port %u\n", sslserver_version(),
                static_cast<unsigned>(sslserver_server_port(server.get())));
    sslserver_close(server.get());
    if (sslserver_is_listening(server.get())) {
        std::fprintf(stderr, "header_check: still listening after sslserver_close\n");
        return 1;
    }
    std::printf("closed\n");
    return 0;
}
