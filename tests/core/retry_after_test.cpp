#include <tokmgr/detail/retry_after.hpp>

#include <doctest/doctest.h>

using namespace std::chrono_literals;

TEST_CASE("Retry-After as delta-seconds, as an IMF-fixdate, or unreadable") {
    const auto wall = std::chrono::system_clock::time_point(std::chrono::seconds(784111777));  // 06 Nov 1994 08:49:37
    CHECK(tokmgr::detail::parse_retry_after(" 120 ", wall) == 120s);
    CHECK(tokmgr::detail::parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", wall) == 60s);
    CHECK(tokmgr::detail::parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", wall) == 0s);  // past: now
    CHECK_FALSE(tokmgr::detail::parse_retry_after("soon", wall));
    CHECK_FALSE(tokmgr::detail::parse_retry_after("-5", wall));
    CHECK_FALSE(tokmgr::detail::parse_retry_after("Sun, 06 Foo 1994 08:50:37 GMT", wall));
}
