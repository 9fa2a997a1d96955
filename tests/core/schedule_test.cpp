#include <tokmgr/options.hpp>
#include <tokmgr/schedule.hpp>

#include <doctest/doctest.h>

using namespace std::chrono_literals;
using std::chrono::nanoseconds;

TEST_CASE("leeway is 10% of the life left at receipt, capped at max_leeway") {
    // The whole second that claims may cost is taken off before (by
    // detail::jwt_lifetime), so a JWT of 1 s keeps 0.9 s of what is left.
    CHECK(tokmgr::leeway_for(1s, 60s) == 100ms);
    CHECK(tokmgr::leeway_for(1500ms, 60s) == 150ms);
    CHECK(tokmgr::leeway_for(2s, 60s) == 200ms);
    CHECK(tokmgr::leeway_for(3s, 60s) == 300ms);
    CHECK(tokmgr::leeway_for(5s, 60s) == 500ms);
    CHECK(tokmgr::leeway_for(20s, 60s) == 2s);
    CHECK(tokmgr::leeway_for(30s, 60s) == 3s);
    CHECK(tokmgr::leeway_for(30min, 60s) == 60s);
    CHECK(tokmgr::leeway_for(10080min, 60s) == 60s);
    CHECK(tokmgr::leeway_for(0s, 60s) == 0s);
    CHECK(tokmgr::leeway_for(30min, 5s) == 5s);
}

TEST_CASE("without jitter the soft point is three quarters of the way to the hard one") {
    tokmgr::schedule_options options;
    options.jitter_fraction = 0;
    const auto five = tokmgr::schedule_for(5s, options, 0.5);
    CHECK(five.hard == 4500ms);
    CHECK(five.soft == nanoseconds(3375000000));
    const auto one = tokmgr::schedule_for(1s, options, 0.5);
    CHECK(one.hard == 900ms);
    CHECK(one.soft == 675ms);
    const auto thirty = tokmgr::schedule_for(30min, options, 0.5);
    CHECK(thirty.hard == 29min);
    CHECK(thirty.soft == nanoseconds(29min) * 3 / 4);
    CHECK(30min - thirty.soft > 7min);  // refreshed minutes ahead
}

TEST_CASE("jitter moves the soft point earlier by at most its fraction of the lifetime") {
    tokmgr::schedule_options options;  // jitter 5%
    const auto earliest = tokmgr::schedule_for(30min, options, 0.999999);
    const auto latest = tokmgr::schedule_for(30min, options, 0.0);
    CHECK(latest.soft == nanoseconds(29min) * 3 / 4);
    CHECK(earliest.soft < latest.soft);
    CHECK(latest.soft - earliest.soft <= nanoseconds(90s));
    CHECK(earliest.hard == latest.hard);
}

TEST_CASE("manager_options converts to the schedule's options, with the same defaults") {
    const tokmgr::schedule_options defaults;
    tokmgr::manager_options options;
    tokmgr::schedule_options converted = options;
    CHECK(converted.refresh_ahead_fraction == defaults.refresh_ahead_fraction);
    CHECK(converted.jitter_fraction == defaults.jitter_fraction);
    CHECK(converted.max_leeway == defaults.max_leeway);
    options.refresh_ahead_fraction = 0.5;
    options.jitter_fraction = 0.01;
    options.max_leeway = 7s;
    converted = options;
    CHECK(converted.refresh_ahead_fraction == 0.5);
    CHECK(converted.jitter_fraction == 0.01);
    CHECK(converted.max_leeway == 7s);
    CHECK(tokmgr::schedule_for(30min, options, 0).hard == tokmgr::schedule_for(30min, converted, 0).hard);
}
