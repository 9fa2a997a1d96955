#include "serve.hpp"

#include <pthread.h>

#include <csignal>
#include <cstdint>
#include <iostream>

#include <tokmgr/server/reference_server.hpp>
#include <tokmgr/server/detail/settings.hpp>
#include <tokmgr/server/stats_json.hpp>
#include <tokmgr/token_set.hpp>

#include "args.hpp"
#include "exit_status.hpp"
#include "output.hpp"

namespace tokmgr_cli {

int run_serve(int argc, char** argv) {
    option_spec spec;
    spec.valued = {"host", "port", "user", "api-key", "jwt-ttl", "refresh-ttl", "tls-cert", "tls-key",
                   "auth-rpm-limit", "max-connections", "max-connections-per-client", "auth-delay-ms"};
    spec.repeated = {"user"};
    const auto args = parse_options(argc, argv, 2, spec, "serve");

    tokmgr::server::server_options options;
    if (auto host = args.get("host")) options.host = *host;
    if (auto port = args.get("port")) options.port = static_cast<unsigned short>(parse_integer(*port, 0, 65535, "--port"));
    for (const auto& entry : args.all("user")) {
        const auto colon = entry.find(':');
        if (colon == std::string::npos || colon == 0)
            throw usage_error{"--user takes NAME:PASSWORD (a user name, a colon, the password)"};
        if (!options.users.emplace(entry.substr(0, colon), tokmgr::secret(entry.substr(colon + 1))).second)
            throw usage_error{"--user names the same user twice"};
    }
    if (auto key = args.get("api-key")) {
        if (key->empty()) throw usage_error{"--api-key must not be empty"};
        options.api_key = tokmgr::secret(*key);
    }
    // The bound every lifetime has, on client and server alike.
    constexpr std::int64_t max_ttl = tokmgr::max_lifetime.count();
    if (auto ttl = args.get("jwt-ttl")) options.jwt_ttl = std::chrono::seconds(parse_integer(*ttl, 1, max_ttl, "--jwt-ttl"));
    if (auto ttl = args.get("refresh-ttl"))
        options.refresh_ttl = std::chrono::seconds(parse_integer(*ttl, 1, max_ttl, "--refresh-ttl"));
    // Holds each login and refresh answer, so tests can land a kill or a
    // SIGSTOP while a client's request is in flight.
    if (auto delay = args.get("auth-delay-ms"))
        options.auth_delay = std::chrono::milliseconds(parse_integer(*delay, 0, 60'000, "--auth-delay-ms"));
    if (auto limit = args.get("auth-rpm-limit"))
        options.auth_rpm_limit = static_cast<std::uint32_t>(
            parse_integer(*limit, 0, tokmgr::server::detail::max_auth_rpm_limit, "--auth-rpm-limit"));
    if (auto cap = args.get("max-connections"))
        options.max_connections = static_cast<std::size_t>(parse_integer(*cap, 0, 1'000'000, "--max-connections"));
    if (auto cap = args.get("max-connections-per-client"))
        options.max_connections_per_client =
            static_cast<std::size_t>(parse_integer(*cap, 0, 1'000'000, "--max-connections-per-client"));
    const auto cert = args.get("tls-cert"), key = args.get("tls-key");
    if (cert.has_value() != key.has_value()) throw usage_error{"--tls-cert and --tls-key go together"};
    if (cert) {
        options.tls_cert_file = *cert;
        options.tls_key_file = *key;
    }

    // Block the stop signals before any server thread exists, so that every
    // thread inherits the mask and only sigwait below receives them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    tokmgr::server::reference_server server(std::move(options));
    std::error_code ec;
    server.start(ec);
    if (ec) {
        print_error("serve", server.last_error());
        return exit_status_for(ec);
    }
    std::cout << "listening on " << server.url() << std::endl;  // endl: flushed for whoever waits on it

    int received = 0;
    sigwait(&stop_signals, &received);
    server.stop();
    // The statistics, for scripts (the demo checks reused refresh tokens and
    // expired JWTs in it): one JSON line after the listening line.
    std::cout << tokmgr::server::to_json(server.stats()) << std::endl;
    return exit_ok;
}

}  // namespace tokmgr_cli
