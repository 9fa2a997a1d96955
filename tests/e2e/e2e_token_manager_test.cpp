// token_manager<> over the Asio transport against the reference server, over
// loopback sockets: 64 threads call a protected resource for several JWT
// lifetimes of a few seconds each. The server's own statistics are the
// witness: one login, no refresh token presented twice, no expired JWT
// presented, never two refreshes in flight at once.
#include <tokmgr/tokmgr.hpp>
#include <tokmgr/server/reference_server.hpp>
#include <tokmgr/server/stats_json.hpp>

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "test_certificate.hpp"

using namespace std::chrono_literals;

namespace {

struct crowd_result {
    std::uint64_t ok = 0, unauthorized = 0, failed = 0;
};

/// `threads` threads, each with its own keep-alive transport, GET a
/// protected resource with the shared manager's JWT until `duration` passes.
crowd_result run_crowd(tokmgr::token_manager<>& manager, const tokmgr::asio_transport_options& options, int threads,
                       std::chrono::steady_clock::duration duration) {
    std::atomic<std::uint64_t> ok{0}, unauthorized{0}, failed{0};
    const auto deadline = std::chrono::steady_clock::now() + duration;
    std::vector<std::thread> crowd;
    for (int t = 0; t < threads; ++t) {
        crowd.emplace_back([&, t] {
            tokmgr::asio_transport transport(options);
            const std::string target = "/api/items/" + std::to_string(t);
            while (std::chrono::steady_clock::now() < deadline) {
                std::error_code ec;
                const auto authorization = manager.authorization(ec);
                if (ec) {
                    ++failed;
                    std::this_thread::sleep_for(10ms);
                    continue;
                }
                tokmgr::http_request request;
                request.method = "GET";
                request.target = target;
                request.content_type = {};
                request.headers.push_back({"Authorization", std::string(authorization.reveal())});
                const auto response = transport.send(request, ec);
                if (ec) ++failed;
                else if (response.status == 401) ++unauthorized;
                else if (response.ok()) ++ok;
                else ++failed;
            }
        });
    }
    for (auto& t : crowd) t.join();
    return {ok, unauthorized, failed};
}

}  // namespace

TEST_CASE("64 threads over several 3-second JWT lifetimes: one login, rotation without reuse, no expired JWT") {
    tokmgr::server::server_options server_options;
    server_options.users.emplace("svc", tokmgr::secret("e2e-password"));
    server_options.jwt_ttl = 3s;
    server_options.refresh_ttl = 60s;
    // Hold each login and refresh a little, so that a second refresh started
    // while one is open would overlap it and show in the statistics.
    server_options.auth_delay = 50ms;
    tokmgr::server::reference_server server(std::move(server_options));
    server.start();

    tokmgr::asio_transport_options transport_options;
    transport_options.base_url = server.url();
    tokmgr::token_manager<> manager(tokmgr::asio_transport(transport_options),
                                    tokmgr::credentials{"svc", tokmgr::secret("e2e-password")});

    const auto result = run_crowd(manager, transport_options, 64, 10s);
    const auto stats = server.stats();
    const auto counters = manager.counters();
    MESSAGE("64 threads, 10 s: ok=" << result.ok << " logins=" << counters.logins << " refreshes=" << counters.refreshes
                                    << "; server " << tokmgr::server::to_json(stats));
    INFO("manager error: " << manager.last_error().message());

    CHECK(result.failed == 0);
    CHECK(result.unauthorized == 0);
    CHECK(result.ok > 1000);
    CHECK(stats.resources_served == result.ok);

    CHECK(stats.logins == 1);
    CHECK(counters.logins == 1);
    CHECK(stats.refreshes >= 3);  // ~10 s of 3-second tokens
    CHECK(counters.refreshes == stats.refreshes);
    CHECK(stats.refreshes_rejected == 0);
    CHECK(stats.refresh_tokens_reused == 0);
    CHECK(stats.families_revoked == 0);
    CHECK(stats.expired_jwts_presented == 0);
    CHECK(stats.invalid_jwts_presented == 0);
    CHECK(stats.max_refreshes_in_flight == 1);
    CHECK(stats.max_auth_requests_in_flight == 1);
}

TEST_CASE("the same over HTTPS, verified against the server's CA file") {
    auto cert = tokmgr_test::make_test_certificate();
    tokmgr::server::server_options server_options;
    server_options.users.emplace("svc", tokmgr::secret("e2e-password"));
    server_options.jwt_ttl = 2s;
    server_options.refresh_ttl = 60s;
    server_options.tls_cert_file = cert->cert_file;
    server_options.tls_key_file = cert->key_file;
    tokmgr::server::reference_server server(std::move(server_options));
    server.start();

    tokmgr::asio_transport_options transport_options;
    transport_options.base_url = server.url();
    transport_options.ca_file = cert->cert_file;
    tokmgr::token_manager<> manager(tokmgr::asio_transport(transport_options),
                                    tokmgr::credentials{"svc", tokmgr::secret("e2e-password")});

    const auto result = run_crowd(manager, transport_options, 8, 4s);
    const auto stats = server.stats();
    INFO("server: " << tokmgr::server::to_json(stats));
    INFO("manager error: " << manager.last_error().message());
    CHECK(result.failed == 0);
    CHECK(result.unauthorized == 0);
    CHECK(result.ok > 0);
    CHECK(stats.logins == 1);
    CHECK(stats.refreshes >= 1);
    CHECK(stats.refresh_tokens_reused == 0);
    CHECK(stats.expired_jwts_presented == 0);
    CHECK(stats.max_refreshes_in_flight == 1);
}

TEST_CASE("a wrong password is reported as credentials_rejected, once, to every caller") {
    tokmgr::server::server_options server_options;
    server_options.users.emplace("svc", tokmgr::secret("e2e-password"));
    tokmgr::server::reference_server server(std::move(server_options));
    server.start();
    tokmgr::asio_transport_options transport_options;
    transport_options.base_url = server.url();
    tokmgr::token_manager<> manager(tokmgr::asio_transport(transport_options),
                                    tokmgr::credentials{"svc", tokmgr::secret("wrong-password")});
    std::vector<std::thread> callers;
    std::atomic<int> rejected{0};
    for (int i = 0; i < 8; ++i) {
        callers.emplace_back([&] {
            std::error_code ec;
            manager.get_token(ec);
            if (ec == tokmgr::errc::credentials_rejected) ++rejected;
        });
    }
    for (auto& c : callers) c.join();
    CHECK(rejected == 8);
    CHECK(server.stats().logins_rejected == 1);
    CHECK(manager.last_error().message().find("wrong-password") == std::string::npos);
}

TEST_CASE("over the server's auth rate limit: rate_limited, Retry-After honoured, nothing sent meanwhile") {
    tokmgr::server::server_options server_options;
    server_options.users.emplace("svc", tokmgr::secret("e2e-password"));
    server_options.auth_rpm_limit = 1;  // one login a minute from this address
    tokmgr::server::reference_server server(std::move(server_options));
    server.start();
    tokmgr::asio_transport_options transport_options;
    transport_options.base_url = server.url();
    const tokmgr::credentials credentials{"svc", tokmgr::secret("e2e-password")};

    // Another client at the same address spends the quota.
    tokmgr::token_manager<> first(tokmgr::asio_transport(transport_options), credentials);
    CHECK_FALSE(first.get_token().empty());

    tokmgr::token_manager<> second(tokmgr::asio_transport(transport_options), credentials);
    std::error_code ec;
    second.get_token(ec);
    CHECK(ec == tokmgr::errc::rate_limited);
    // The server said to wait about a minute: callers get the error at once,
    // and no request reaches the server until then.
    const auto started = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) {
        second.get_token(ec);
        CHECK(ec == tokmgr::errc::rate_limited);
    }
    CHECK(std::chrono::steady_clock::now() - started < 2s);
    const auto stats = server.stats();
    INFO("server: " << tokmgr::server::to_json(stats));
    CHECK(stats.auth_requests_limited == 1);
    CHECK(stats.logins == 1);
}
