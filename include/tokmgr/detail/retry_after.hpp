// tokmgr/detail/retry_after.hpp — the Retry-After header (RFC 9110 §10.2.3):
// delta-seconds, or an IMF-fixdate read against the wall clock.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "decimal.hpp"

namespace tokmgr::detail {

/// Digits only. More than 12 (over 30,000 years of seconds) is not a wait
/// any server means, so it counts as unreadable rather than as "forever".
inline std::optional<std::int64_t> parse_digits(std::string_view text) {
    if (text.size() > 12) return std::nullopt;
    return parse_decimal<std::int64_t>(text);
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// days_from_civil).
constexpr std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

/// "Sun, 06 Nov 1994 08:49:37 GMT" as seconds since the epoch.
inline std::optional<std::int64_t> parse_imf_fixdate(std::string_view text) {
    if (text.size() != 29 || text[3] != ',' || text.substr(25) != " GMT") return std::nullopt;
    static constexpr std::string_view months = "JanFebMarAprMayJunJulAugSepOctNovDec";
    const auto month_at = months.find(text.substr(8, 3));
    if (month_at == std::string_view::npos || month_at % 3 != 0) return std::nullopt;
    const auto day = parse_digits(text.substr(5, 2));
    const auto year = parse_digits(text.substr(12, 4));
    const auto hour = parse_digits(text.substr(17, 2));
    const auto minute = parse_digits(text.substr(20, 2));
    const auto second = parse_digits(text.substr(23, 2));
    if (!day || !year || !hour || !minute || !second || text[19] != ':' || text[22] != ':' || *day < 1 ||
        *day > 31 || *hour > 23 || *minute > 59 || *second > 60)
        return std::nullopt;
    return days_from_civil(*year, static_cast<unsigned>(month_at / 3 + 1), static_cast<unsigned>(*day)) * 86400 +
           *hour * 3600 + *minute * 60 + *second;
}

/// How long to wait; nothing when the header is absent or unreadable. A date
/// in the past means "now".
inline std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                             std::chrono::system_clock::time_point wall_now) {
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    if (auto delta = parse_digits(value)) return std::chrono::seconds(*delta);
    if (auto date = parse_imf_fixdate(value)) {
        const auto now = std::chrono::duration_cast<std::chrono::seconds>(wall_now.time_since_epoch()).count();
        return std::chrono::seconds(*date > now ? *date - now : 0);
    }
    return std::nullopt;
}

}  // namespace tokmgr::detail
