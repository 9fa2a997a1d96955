#include <tokmgr/clock.hpp>
#include <tokmgr/storage/memory.hpp>
#include <tokmgr/testing/crowd_gate.hpp>
#include <tokmgr/testing/fake_auth_server.hpp>
#include <tokmgr/testing/fake_transport.hpp>
#include <tokmgr/testing/manual_clock.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

TEST_CASE("manual_clock moves only when told, and copies share the time") {
    tokmgr::testing::manual_clock clock;
    const auto copy = clock;
    const auto start = copy.now();
    const auto wall = copy.wall_now();
    clock.advance(7 * 24h);
    CHECK(copy.now() - start == 7 * 24h);
    CHECK(copy.wall_now() - wall == 7 * 24h);
    clock.skew_wall(-1h);
    CHECK(copy.now() - start == 7 * 24h);
    CHECK(copy.wall_now() - wall == 7 * 24h - 1h);
}

TEST_CASE("memory_storage returns what was stored") {
    tokmgr::memory_storage storage;
    std::error_code ec;
    CHECK_FALSE(storage.load(ec));
    tokmgr::token_set set;
    set.jwt = tokmgr::secret("j");
    set.generation = 3;
    storage.store(set, ec);
    CHECK_FALSE(ec);
    const auto loaded = storage.load(ec);
    REQUIRE(loaded);
    CHECK(loaded->jwt.reveal() == "j");
    CHECK(loaded->generation == 3);
}

TEST_CASE("fake_transport counts, records and fails the n-th call") {
    tokmgr::testing::fake_transport transport([](const tokmgr::http_request&) {
        return tokmgr::http_response{200, {}, "ok"};
    });
    const auto observer = transport;
    transport.fail_call(2, tokmgr::errc::connection_refused);
    std::error_code ec;
    tokmgr::http_request request;
    request.target = "/x";
    CHECK(transport.send(request, ec).body == "ok");
    CHECK_FALSE(ec);
    transport.send(request, ec);
    CHECK(ec == tokmgr::errc::connection_refused);
    transport.send(request, ec);
    CHECK_FALSE(ec);
    CHECK(observer.calls() == 3);
    CHECK(observer.requests().at(1).target == "/x");
}

TEST_CASE("a maybe-sent fault lets the server act and loses the answer") {
    tokmgr::testing::manual_clock clock;
    tokmgr::testing::fake_auth_server server(clock);
    tokmgr::testing::fake_transport transport(server);
    transport.fail_call(1, tokmgr::errc::timeout);
    tokmgr::http_request login;
    login.target = "/api/auth/login";
    const std::string body = R"({"userName":"user@example.com","password":"correct horse battery staple"})";
    login.body = body;
    std::error_code ec;
    transport.send(login, ec);
    CHECK(ec == tokmgr::errc::timeout);
    CHECK(server.stats().logins == 1);  // the server issued a pair the client never saw
}

TEST_CASE("fake_auth_server rotates, and a reused refresh token revokes the family") {
    tokmgr::testing::manual_clock clock;
    tokmgr::testing::fake_auth_server server(clock);
    auto post = [&](const char* target, const std::string& body) {
        tokmgr::http_request request;
        request.target = target;
        request.body = body;
        return server(request);
    };
    CHECK(post("/api/auth/login", R"({"userName":"user@example.com","password":"wrong"})").status == 401);
    CHECK(post("/api/auth/login", R"({"userName":"user@example.com","password":"correct horse battery staple"})").status == 200);
    const std::string first = server.current_refresh_token();
    CHECK(post("/api/auth/token_refresh", R"({"refreshToken":")" + first + "\"}").status == 200);
    const std::string second = server.current_refresh_token();
    CHECK(second != first);
    CHECK(post("/api/auth/token_refresh", R"({"refreshToken":")" + first + "\"}").status == 401);
    CHECK(server.stats().refresh_tokens_reused == 1);
    CHECK(post("/api/auth/token_refresh", R"({"refreshToken":")" + second + "\"}").status == 401);  // family revoked
    CHECK(post("/api/auth/token_refresh", R"({"refreshToken":"never issued"})").status == 401);
    CHECK(post("/api/auth/login", R"({"userName":"user@example.com","password":"correct horse battery staple"})").status == 200);
    clock.advance(std::chrono::minutes(10'000));  // the refresh token's lifetime is over
    CHECK(post("/api/auth/token_refresh", R"({"refreshToken":")" + server.current_refresh_token() + "\"}").status == 401);

    // The counters of server_stats, under the same names.
    const auto stats = server.stats();
    CHECK(stats.logins == 2);
    CHECK(stats.logins_rejected == 1);
    CHECK(stats.refreshes == 1);
    CHECK(stats.refreshes_rejected == 4);
    CHECK(stats.refresh_tokens_reused == 1);
    CHECK(stats.refresh_tokens_revoked == 1);
    CHECK(stats.refresh_tokens_unknown == 1);
    CHECK(stats.refresh_tokens_expired == 1);
    CHECK(stats.families_revoked == 1);
}

TEST_CASE("steady_clock is monotonic and its wall time is the system clock's") {
    const tokmgr::steady_clock clock;
    const auto a = clock.now();
    const auto b = clock.now();
    CHECK(b >= a);
    const auto wall = clock.wall_now();
    CHECK(std::chrono::abs(wall - std::chrono::system_clock::now()) < 5s);
}

TEST_CASE("crowd_gate releases nobody before the whole crowd has arrived") {
    constexpr std::size_t crowd = 8;
    tokmgr::testing::crowd_gate gate(crowd);
    std::atomic<std::size_t> released{0};
    std::atomic<std::size_t> early{0};
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < crowd; ++i) {
        threads.emplace_back([&] {
            gate.arrive_and_wait();
            if (gate.arrived() < crowd) ++early;
            ++released;
        });
    }
    for (auto& t : threads) t.join();
    CHECK(released == crowd);
    CHECK(early == 0);
}

TEST_CASE("fake_auth_server: a resource opens to a JWT it issued until that expires or is revoked") {
    tokmgr::testing::manual_clock clock;
    tokmgr::testing::fake_auth_server::settings settings;
    settings.jwt_lifetime = 60s;
    tokmgr::testing::fake_auth_server server(clock, settings);
    tokmgr::http_request login;
    login.target = "/api/auth/login";
    const std::string body = R"({"userName":"user@example.com","password":"correct horse battery staple"})";
    login.body = body;
    const auto issued = server(login);
    REQUIRE(issued.status == 200);
    const std::string jwt = *tokmgr::testing::fake_auth_server::string_field(issued.body, "jwt");
    const auto get = [&](const std::string& authorization) {
        tokmgr::http_request request;
        request.method = "GET";
        request.target = "/api/datasets";
        if (!authorization.empty()) request.headers.push_back({"Authorization", authorization});
        return server(request);
    };
    CHECK(get("Bearer " + jwt).status == 200);
    const auto missing = get("");
    CHECK(missing.status == 401);
    CHECK(tokmgr::find_header(missing.headers, "WWW-Authenticate") == std::optional<std::string_view>("Bearer"));
    CHECK(get("Bearer not-issued").status == 401);
    clock.advance(60s);
    CHECK(get("Bearer " + jwt).status == 401);  // expired
    clock.skew_wall(-60s);  // back before its exp
    server.revoke_jwt(jwt);
    CHECK(get("Bearer " + jwt).status == 401);
    const auto stats = server.stats();
    CHECK(stats.resources_served == 1);
    CHECK(stats.unauthorized == 4);
    CHECK(stats.revoked_jwts_presented == 1);
}
