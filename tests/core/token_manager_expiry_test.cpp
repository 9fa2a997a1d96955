// Expiry exactly at and around both thresholds, for 5 s, 30 min and 7 days.
#include "fault_policies.hpp"
#include "harness.hpp"

#include <doctest/doctest.h>

#include <set>

using namespace std::chrono_literals;
using std::chrono::nanoseconds;

namespace {
const std::chrono::seconds lifetimes_under_test[] = {5s, 30min, 7 * 24h};
}

TEST_CASE("before the soft threshold the same JWT is served with no request") {
    for (auto lifetime : lifetimes_under_test) {
        CAPTURE(lifetime.count());
        test::harness h(lifetime, 10000min);
        auto manager = h.make();
        const std::string first(manager->get_token().reveal());
        const auto schedule = tokmgr::schedule_for(lifetime, h.options, 0);
        h.clock.advance(schedule.soft - 1ns);
        for (int i = 0; i < 100; ++i) CHECK(manager->get_token().reveal() == first);
        CHECK(h.transport.calls() == 1);
    }
}

TEST_CASE("at the soft threshold exactly one refresh goes out and the caller gets the new JWT") {
    for (auto lifetime : lifetimes_under_test) {
        CAPTURE(lifetime.count());
        test::harness h(lifetime, 10000min);
        auto manager = h.make();
        const std::string first(manager->get_token().reveal());
        h.clock.advance(tokmgr::schedule_for(lifetime, h.options, 0).soft);
        const std::string second(manager->get_token().reveal());
        CHECK(second != first);
        CHECK(h.sent("/api/auth/token_refresh") == 1);
        CHECK(manager->get_token().reveal() == second);
        CHECK(h.transport.calls() == 2);
    }
}

TEST_CASE("between the thresholds a failed refresh still serves the current JWT") {
    for (auto lifetime : lifetimes_under_test) {
        CAPTURE(lifetime.count());
        test::harness h(lifetime, 10000min);
        auto manager = h.make();
        const std::string first(manager->get_token().reveal());
        const auto schedule = tokmgr::schedule_for(lifetime, h.options, 0);
        h.transport.set_handler([](const tokmgr::http_request&) { return test::status(503); });
        h.clock.advance(schedule.hard - 1ns);
        std::error_code ec;
        CHECK(manager->get_token(ec).reveal() == first);
        CHECK_FALSE(ec);
        CHECK(manager->last_error().code == tokmgr::errc::service_unavailable);
    }
}

TEST_CASE("at the hard threshold the JWT is never handed out") {
    for (auto lifetime : lifetimes_under_test) {
        CAPTURE(lifetime.count());
        test::harness h(lifetime, 10000min);
        auto manager = h.make();
        const std::string first(manager->get_token().reveal());
        h.transport.set_handler([](const tokmgr::http_request&) { return test::status(503); });
        h.clock.advance(tokmgr::schedule_for(lifetime, h.options, 0).hard);
        std::error_code ec;
        const auto jwt = manager->get_token(ec);
        CHECK(jwt.empty());
        CHECK(ec == tokmgr::errc::service_unavailable);
        CHECK_THROWS_AS(manager->get_token(), tokmgr::error);
    }
}

TEST_CASE("a 5-second token is neither refreshed on every call nor served expired") {
    test::harness h(5s, 10000min);
    auto manager = h.make();
    std::string previous(manager->get_token().reveal());
    std::size_t changes = 0;
    for (int ms = 0; ms < 60'000; ms += 10) {  // a minute of calls every 10 ms
        h.clock.advance(10ms);
        const std::string jwt(manager->get_token().reveal());
        changes += jwt != previous;
        previous = jwt;
    }
    CHECK(h.transport.calls() == 1 + changes);
    // Each is refreshed at 75% of 90% of what is left of it on arrival (5 s
    // less the part of iat's second gone by): at most 3.375 s...
    CHECK(changes >= 60 / 3.375);
    CHECK(changes <= 60 / 2);  // ...but at least 2 s each: no refresh storm
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("the JWT lifetime comes from its claims, immune to a skewed wall clock") {
    test::harness h(10min, 10000min);
    h.options.assumed_lifetimes = tokmgr::lifetimes{30min, 10000min};  // the claims must win
    // The server's wall clock runs 3 hours ahead of the client's: exp read
    // against the client's clock would look 3 h 10 min away.
    const tokmgr::testing::manual_clock server_clock(tokmgr::testing::manual_clock::default_wall_start() + 3h);
    h.server = tokmgr::testing::fake_auth_server(server_clock, test::harness::settings(10min, 10000min));
    h.transport.set_handler(h.server);
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    // The client's wall clock, 3 hours off, cannot say how much of iat's
    // second had gone by: the whole second is taken off, and nothing more.
    const auto schedule = tokmgr::schedule_for(10min - 1s, h.options, 0);
    h.clock.advance(schedule.soft - 1ns);
    CHECK(manager->get_token().reveal() == first);
    h.clock.advance(1ns);
    CHECK(manager->get_token().reveal() != first);
}

TEST_CASE("a JWT without claims lives for the configured lifetime") {
    test::harness h(10min, 10000min);
    h.server = tokmgr::testing::fake_auth_server(h.clock, [] {
        auto s = test::harness::settings(10min, 10000min);
        s.jwt_has_iat = s.jwt_has_exp = false;
        return s;
    }());
    h.transport.set_handler(h.server);
    h.options.assumed_lifetimes = tokmgr::lifetimes{2min, 10000min};
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    h.clock.advance(tokmgr::schedule_for(2min, h.options, 0).soft);
    CHECK(manager->get_token().reveal() != first);
}

TEST_CASE("jitter spreads the soft point of a fleet within its bound") {
    std::set<std::int64_t> refresh_points;
    for (std::uint64_t seed = 1; seed <= 8; ++seed) {
        test::harness h(30min, 10000min);
        h.options.jitter_fraction = 0.05;
        h.options.jitter_seed = seed;
        auto manager = h.make();
        manager->get_token();
        const auto latest = tokmgr::schedule_for(30min, h.options, 0).soft;
        h.clock.advance(latest - 90s - 1s);
        manager->get_token();
        CHECK(h.transport.calls() == 1);  // not before the jitter bound
        for (int second = 0; second <= 91 && h.transport.calls() == 1; ++second) {
            h.clock.advance(1s);
            manager->get_token();
            if (h.transport.calls() == 2) refresh_points.insert(second);
        }
        CHECK(h.transport.calls() == 2);  // by the unjittered point at the latest
    }
    CHECK(refresh_points.size() >= 4);  // eight managers did not refresh in lockstep
}

namespace {

std::chrono::system_clock::time_point exp_of(std::string_view jwt) {
    return std::chrono::system_clock::time_point(std::chrono::seconds(test::jwt_exp(jwt).value()));
}

}  // namespace

TEST_CASE("a JWT of 1, 2, 3 or 30 s is served until 90% of what is left of it, and refreshed before then") {
    // iat is rounded down: received `into` its iat's second, a JWT has
    // exp - iat - into left. The schedule runs on that, so even a 1 s JWT
    // received 900 ms into its second is served (for 90 ms) and refreshed
    // at 75% of that, never at or after its exp.
    for (auto lifetime : {1s, 2s, 3s, 30s}) {
        for (auto into : {0ms, 250ms, 500ms, 900ms}) {
            CAPTURE(lifetime.count());
            CAPTURE(into.count());
            test::harness h(lifetime, 10000min);
            h.clock.advance(into);  // the manual wall clock starts on a whole second
            auto manager = h.make();
            std::error_code ec;
            const std::string first(manager->get_token(ec).reveal());
            REQUIRE_FALSE(ec);
            const auto exp = exp_of(first);
            const auto received = h.clock.wall_now();
            CHECK(exp - received == lifetime - into);
            const auto schedule = tokmgr::schedule_for(lifetime - into, h.options, 0);
            CHECK(received + schedule.hard < exp);
            CHECK(exp - (received + schedule.hard) == (lifetime - into) / 10);
            h.clock.advance(schedule.soft - 1ns);
            CHECK(manager->get_token(ec).reveal() == first);
            CHECK(h.transport.calls() == 1);
            h.clock.advance(1ns);  // the soft threshold: the refresh goes out, before the end
            CHECK(manager->get_token(ec).reveal() != first);
            CHECK_FALSE(ec);
            CHECK(h.sent("/api/auth/token_refresh") == 1);
            CHECK(h.clock.wall_now() < exp);
        }
    }
}

TEST_CASE("short JWTs at every phase of the second, on a clock with a resolution: never served at or after exp") {
    for (auto lifetime : {1s, 2s, 3s}) {
        for (auto into : {0ms, 370ms, 990ms}) {
            CAPTURE(lifetime.count());
            CAPTURE(into.count());
            test::harness h(lifetime, 10000min);
            h.clock.set_resolution(8ms);  // a coarse clock's two ticks
            h.clock.advance(into);
            auto manager = h.make();
            int served = 0;
            int refused = 0;
            for (int step = 0; step < 1000; ++step) {  // 7 s of calls every 7 ms
                std::error_code ec;
                const tokmgr::secret_view jwt = manager->get_token(ec);
                if (!ec) {
                    ++served;
                    // With the resolution: a reading 8 ms late is still before exp.
                    CHECK(h.clock.wall_now() + 8ms < exp_of(jwt.reveal()));
                } else {
                    // Every JWT of 1 s ends on a whole second of the
                    // server's: one issued in the last few milliseconds of
                    // a second has too little left to serve. That, and no
                    // more: the next attempt is due on the next second.
                    ++refused;
                    CHECK(lifetime == 1s);
                    const auto into_second = h.clock.wall_now().time_since_epoch() % 1s;
                    CHECK(into_second > 980ms);
                    CHECK(manager->last_error().detail.find("too little to serve") != std::string::npos);
                }
                h.clock.advance(7ms);
            }
            CHECK(refused <= 8);  // at most one per second
            CHECK(served + refused == 1000);
            CHECK(h.transport.calls() <= 8 * 7 / lifetime.count() + 2);  // no refresh storm
            CHECK(h.server.stats().logins == 1);
            CHECK(h.server.stats().refresh_tokens_reused == 0);
        }
    }
}

namespace {

/// The first get_token's error, which must be a refusal of the JWT.
std::string refusal(test::harness& h) {
    auto manager = h.make();
    std::error_code ec;
    CHECK(manager->get_token(ec).empty());
    CHECK(ec == tokmgr::errc::protocol_error);
    const std::string said = manager->last_error().detail;
    CHECK(said.find("took too long") == std::string::npos);
    return said;
}

/// The fake server on a wall clock of its own, `ahead` of the client's.
void server_clock_ahead(test::harness& h, std::chrono::seconds lifetime, std::chrono::milliseconds ahead) {
    const tokmgr::testing::manual_clock server_clock(tokmgr::testing::manual_clock::default_wall_start() + ahead);
    h.server = tokmgr::testing::fake_auth_server(server_clock, test::harness::settings(lifetime, 10000min));
    h.transport.set_handler(h.server);
}

}  // namespace

TEST_CASE("a JWT with no usable life left is refused for that, never for a request that took no time") {
    SUBCASE("a 1 s JWT whose answer took 1.2 s: expired on arrival") {
        test::harness h(1s, 10000min);
        h.transport.set_handler([clock = h.clock, server = h.server](const tokmgr::http_request& request) mutable {
            auto response = server(request);
            clock.advance(1200ms);
            return response;
        });
        CHECK(refusal(h).find("expired on arrival") != std::string::npos);
    }
    SUBCASE("a 1 s JWT, a client clock 1.5 s behind the server's: no part of it can be vouched for") {
        // Received "before" its iat: the clocks disagree, so the whole
        // second iat's rounding may have taken is taken, and nothing is left.
        test::harness h(1s, 10000min);
        server_clock_ahead(h, 1s, 1500ms);
        CHECK(refusal(h).find("check the clocks") != std::string::npos);
    }
    SUBCASE("a 1 s JWT received 999 ms into its second, on a clock of 8 ms: too little to serve") {
        test::harness h(1s, 10000min);
        h.clock.set_resolution(8ms);
        h.clock.advance(999ms);
        CHECK(refusal(h).find("1 ms of life left on arrival, too little to serve any of it") != std::string::npos);
    }
    SUBCASE("the same skew, a 2 s JWT: the second it has left whatever the clocks is served") {
        test::harness h(2s, 10000min);
        server_clock_ahead(h, 2s, 1500ms);
        auto manager = h.make();
        std::error_code ec;
        const std::string first(manager->get_token(ec).reveal());
        CHECK_FALSE(ec);
        h.clock.advance(tokmgr::schedule_for(1s, h.options, 0).soft - 1ns);
        CHECK(manager->get_token(ec).reveal() == first);
        CHECK(h.transport.calls() == 1);
    }
}
