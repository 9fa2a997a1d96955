#include <tokmgr/options.hpp>
#include <tokmgr/schedule.hpp>

#include <doctest/doctest.h>

using namespace std::chrono_literals;
using std::chrono::nanoseconds;

TEST_CASE("leeway scales with the lifetime: 1 s + 10%, capped, at most half but never under 1 s") {
    CHECK(tokmgr::leeway_for(5s, 60s) == 1500ms);
    CHECK(tokmgr::leeway_for(3s, 60s) == 1300ms);
    CHECK(tokmgr::leeway_for(30min, 60s) == 60s);
    CHECK(tokmgr::leeway_for(10080min, 60s) == 60s);
    // Claims are whole seconds: a JWT of 2 s or less keeps the full 1 s, so
    // it is never served past its exp (one of 1 s is never served at all).
    CHECK(tokmgr::leeway_for(1s, 60s) == 1s);
    CHECK(tokmgr::leeway_for(1500ms, 60s) == 1s);
    CHECK(tokmgr::leeway_for(2s, 60s) == 1s);
    CHECK(tokmgr::leeway_for(20s, 60s) == 3s);
}

TEST_CASE("without jitter the soft point is three quarters of the way to the hard one") {
    tokmgr::schedule_options options;
    options.jitter_fraction = 0;
    const auto five = tokmgr::schedule_for(5s, options, 0.5);
    CHECK(five.hard == 3500ms);
    CHECK(five.soft == nanoseconds(2625000000));
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
