// The clock policies tokmgr ships, and the rule that a clock's resolution
// brings every deadline that ends serving or sending that much earlier.
#include "harness.hpp"

#include <tokmgr/clock.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <thread>
#include <type_traits>

using namespace std::chrono_literals;
using std::chrono::nanoseconds;

TEST_CASE("the shipped clocks are Clock policies and the coarse one shares steady_clock's time points") {
    static_assert(tokmgr::is_clock_v<tokmgr::steady_clock>);
    static_assert(tokmgr::is_clock_v<tokmgr::coarse_steady_clock>);
    static_assert(tokmgr::is_clock_v<tokmgr::boottime_clock>);
    static_assert(std::is_same_v<tokmgr::coarse_steady_clock::time_point, std::chrono::steady_clock::time_point>);
    // Boot time has its own epoch: comparing it with steady_clock must not compile.
    static_assert(!std::is_same_v<tokmgr::boottime_clock::time_point, std::chrono::steady_clock::time_point>);
}

TEST_CASE("coarse_steady_clock never goes back or ahead, and almost always lags by at most its resolution") {
    const tokmgr::coarse_steady_clock coarse;
    const auto resolution = coarse.resolution();
#if defined(__linux__)
    CHECK(resolution > 0ns);
    CHECK(resolution <= 20ms);  // two ticks; CONFIG_HZ=100 is the coarsest Linux kernel
#endif
    constexpr int readings = 100000;
    int late = 0;
    nanoseconds worst{0};
    auto previous = coarse.now();
    for (int i = 0; i < readings; ++i) {
        const auto before = std::chrono::steady_clock::now();
        const auto reading = coarse.now();
        const auto after = std::chrono::steady_clock::now();
        // A reading is the last tick: never back, never after the precise clock.
        REQUIRE(reading >= previous);
        REQUIRE(reading <= after);
        const nanoseconds lag = before - reading;
        worst = std::max(worst, lag);
        late += lag > resolution + 2ms;  // 2 ms: scheduling slack
        previous = reading;
    }
    CAPTURE(worst.count());
    // The kernel's tick can itself come late (one reading was 2.5 ticks old
    // under ThreadSanitizer on a loaded 2-core VM), so the resolution is the
    // usual lag, not a bound: a late tick must stay rare...
    CHECK(late * 1000 <= readings);
    // ...and within the leeway (10% of a JWT's life: 500 ms of a 5 s JWT,
    // a minute of Textual's), which is what keeps a JWT from being served
    // past its expiry whatever the clock's lag.
    CHECK(worst < 500ms);
}

TEST_CASE("boottime_clock moves with the monotonic clock while the machine is awake") {
    const tokmgr::boottime_clock boot;
    const auto boot_start = boot.now();
    const auto steady_start = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(20ms);
    const auto boot_elapsed = boot.now() - boot_start;
    const auto steady_elapsed = std::chrono::steady_clock::now() - steady_start;
    CHECK(boot_elapsed >= 20ms);
    CHECK(std::chrono::abs(boot_elapsed - std::chrono::duration_cast<nanoseconds>(steady_elapsed)) < 5ms);
}

TEST_CASE("a clock's resolution ends serving a JWT that much before its hard threshold") {
    for (auto lifetime : {5s, std::chrono::seconds(30min)}) {
        CAPTURE(lifetime.count());
        for (auto resolution : {nanoseconds(0), nanoseconds(4ms), nanoseconds(10ms)}) {
            CAPTURE(resolution.count());
            test::harness h(lifetime, 10000min);
            h.clock.set_resolution(resolution);
            auto manager = h.make();
            const std::string first(manager->get_token().reveal());
            h.transport.set_handler([](const tokmgr::http_request&) { return test::status(503); });
            const auto hard = tokmgr::schedule_for(lifetime, h.options, 0).hard;
            std::error_code ec;
            h.clock.advance(hard - resolution - 1ns);
            CHECK(manager->get_token(ec).reveal() == first);  // the refresh failed; still before the threshold
            h.clock.advance(1ns);
            CHECK(manager->get_token(ec).empty());
            CHECK(ec == tokmgr::errc::service_unavailable);
        }
    }
}

TEST_CASE("a clock's resolution ends sending a refresh token that much before its deadline") {
    const auto refresh_lifetime = std::chrono::seconds(60min);
    const auto resolution = nanoseconds(4ms);
    // The refresh token's deadline: its lifetime less the leeway a JWT of that lifetime gets.
    const auto deadline =
        nanoseconds(refresh_lifetime) - tokmgr::leeway_for(refresh_lifetime, tokmgr::manager_options{}.max_leeway);
    for (auto at : {deadline - resolution - 1ns, deadline - resolution}) {
        CAPTURE(at.count());
        test::harness h(5min, refresh_lifetime);
        h.clock.set_resolution(resolution);
        auto manager = h.make();
        manager->get_token();
        h.clock.advance(at);
        manager->get_token();
        const bool refreshed = at < deadline - resolution;
        CHECK(h.sent("/api/auth/token_refresh") == (refreshed ? 1u : 0u));
        CHECK(h.sent("/api/auth/login") == (refreshed ? 1u : 2u));
    }
}

namespace {
template <class Duration>
struct reporting_clock {
    Duration said;
    Duration resolution() const { return said; }
};
}  // namespace

TEST_CASE("a clock's resolution counts from 0 to 1 s, whatever the clock says or its duration type") {
    using tokmgr::detail::clock_resolution;
    CHECK(clock_resolution(reporting_clock<nanoseconds>{4ms}, 0) == 4ms);
    CHECK(clock_resolution(reporting_clock<nanoseconds>{-5ms}, 0) == 0ns);  // would move deadlines later
    CHECK(clock_resolution(reporting_clock<std::chrono::hours>{std::chrono::hours(1'000'000)}, 0) == 1s);
    CHECK(clock_resolution(reporting_clock<std::chrono::duration<double>>{std::chrono::duration<double>(0.004)}, 0) == 4ms);
    CHECK(clock_resolution(tokmgr::steady_clock{}, 0) == 0ns);  // no resolution(): exact
}
