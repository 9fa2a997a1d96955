// Retry-After: delta-seconds or an IMF-fixdate; never negative, never a
// crash, and a plain number means itself.
#include <tokmgr/detail/retry_after.hpp>

#include "fuzz_target.hpp"

TOKMGR_FUZZ_TARGET(retry_after) {
    const auto text = tokmgr_fuzz::as_text(data, size);
    const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000));
    const auto wait = tokmgr::detail::parse_retry_after(text, now);
    if (wait) FUZZ_CHECK(wait->count() >= 0);
    if (const auto digits = tokmgr::detail::parse_digits(text)) FUZZ_CHECK(wait && wait->count() == *digits);
    return 0;
}
