// Rotation over long runs: the refresh-token chain is never broken or reused.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <set>

using namespace std::chrono_literals;

TEST_CASE("1,000 simulated 30-minute lifetimes: one login, an unbroken chain, no reuse") {
    test::harness h(30min, 10000min);
    auto manager = h.make();
    for (int minute = 0; minute < 1000 * 30; ++minute) {
        std::error_code ec;
        const auto jwt = manager->get_token(ec);
        REQUIRE_FALSE(ec);
        REQUIRE_FALSE(jwt.empty());
        h.clock.advance(1min);
    }
    const auto stats = h.server.stats();
    CHECK(stats.logins == 1);
    CHECK(stats.refresh_tokens_reused == 0);
    CHECK(stats.refreshes_rejected == 0);
    CHECK(stats.refreshes >= 1000);
    CHECK(manager->counters().refreshes == stats.refreshes);
    // Every refresh presented a token never presented before.
    std::set<std::string> presented;
    for (const auto& request : h.transport.requests())
        if (request.target == "/api/auth/token_refresh") CHECK(presented.insert(request.body).second);
}

TEST_CASE("login happens exactly when the refresh token's lifetime demands it") {
    test::harness h(30min, 10000min);
    auto manager = h.make();
    manager->get_token();
    const auto refresh_usable_for = std::chrono::nanoseconds(10000min) - tokmgr::leeway_for(10000min, h.options.max_leeway);

    SUBCASE("just before: refresh") {
        h.clock.advance(refresh_usable_for - 1ns);
        manager->get_token();
        CHECK(h.sent("/api/auth/token_refresh") == 1);
        CHECK(h.sent("/api/auth/login") == 1);
    }
    SUBCASE("at its end: login, and the old refresh token is not sent") {
        h.clock.advance(refresh_usable_for);
        manager->get_token();
        CHECK(h.sent("/api/auth/token_refresh") == 0);
        CHECK(h.sent("/api/auth/login") == 2);
    }
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("a short refresh lifetime forces a login after every idle gap longer than it") {
    test::harness h(5min, 60min);
    auto manager = h.make();
    for (int round = 0; round < 50; ++round) {
        manager->get_token();
        h.clock.advance(61min);
    }
    CHECK(h.server.stats().logins == 50);
    CHECK(h.server.stats().refresh_tokens_expired == 0);  // an expired token is never presented
}

TEST_CASE("a refresh answered 401 falls back to exactly one login") {
    test::harness h;
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    int refusals = 0;
    h.transport.set_handler([&](const tokmgr::http_request& r) {
        if (r.target == "/api/auth/token_refresh" && refusals++ == 0) return test::status(401, R"({"detail":"revoked"})");
        return h.server(r);
    });
    h.clock.advance(29min);
    const std::string second(manager->get_token().reveal());
    CHECK(second != first);
    CHECK(h.sent("/api/auth/login") == 2);
    CHECK(h.sent("/api/auth/token_refresh") == 1);
    h.clock.advance(29min);
    manager->get_token();  // the chain continues from the new login
    CHECK(h.sent("/api/auth/token_refresh") == 2);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("a stored token set is used before any login") {
    test::harness h;
    test::storage_type storage;
    {
        auto first = h.make();
        first->get_token();
        std::error_code ec;
        tokmgr::token_set set;
        set.jwt = tokmgr::secret(std::string(first->get_token().reveal()));
        set.refresh_token = tokmgr::secret(h.server.current_refresh_token());
        set.received_at = h.clock.wall_now();
        set.jwt_lifetime = 30min;
        set.refresh_lifetime = 10000min;
        set.generation = 1;
        storage.store(set, ec);
    }
    test::manager second(h.transport, tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)},
                         h.options, h.clock, storage);
    second.get_token();
    CHECK(h.sent("/api/auth/login") == 1);  // only the first manager's
    h.clock.advance(29min);
    second.get_token();
    CHECK(h.sent("/api/auth/token_refresh") == 1);
    CHECK(h.server.stats().refreshes_rejected == 0);
}
