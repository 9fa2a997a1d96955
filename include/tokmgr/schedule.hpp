// tokmgr/schedule.hpp — when a token is refreshed and when it stops being
// served, as a function of its lifetime. Pure functions, no clock.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace tokmgr {

/// The options the schedule reads, and nothing else: `manager_options`
/// converts to it (so `schedule_for(lifetime, manager_options, j)` reads the
/// manager's own), and its defaults are the manager's.
struct schedule_options {
    double refresh_ahead_fraction = 0.75;  ///< see manager_options::refresh_ahead_fraction
    double jitter_fraction = 0.05;         ///< see manager_options::jitter_fraction
    std::chrono::seconds max_leeway{60};   ///< see manager_options::max_leeway
};

/// Offsets from the moment a token was received.
struct refresh_schedule {
    std::chrono::nanoseconds soft;  ///< from here on, one caller refreshes while the others keep the JWT
    std::chrono::nanoseconds hard;  ///< from here on, the JWT is never handed out
};

/// The leeway kept before the end of a token's usable life: 10% of it, for
/// drift and for the request that carries the token, at most `max_leeway`.
/// `lifetime` is the life left at receipt: for a JWT, what
/// `detail::jwt_lifetime` makes of its claims, which already takes off what
/// their whole seconds may have cost (up to 1 s), so a 1-second JWT is served
/// for 0.9 s of what is left of it. The clock's resolution comes off too (in
/// the session), so a stale reading is never past the threshold.
inline std::chrono::nanoseconds leeway_for(std::chrono::nanoseconds lifetime,
                                           std::chrono::seconds max_leeway) noexcept {
    using std::chrono::nanoseconds;
    return std::max(nanoseconds::zero(), std::min(lifetime / 10, nanoseconds(max_leeway)));
}

/// `jitter_unit` in [0, 1) moves the soft point earlier by up to
/// `jitter_fraction` of the lifetime.
inline refresh_schedule schedule_for(std::chrono::nanoseconds lifetime, const schedule_options& options,
                                     double jitter_unit) noexcept {
    using std::chrono::nanoseconds;
    const nanoseconds hard = lifetime - leeway_for(lifetime, options.max_leeway);
    const auto ahead = static_cast<double>(hard.count()) * options.refresh_ahead_fraction;
    const auto jitter = static_cast<double>(lifetime.count()) * options.jitter_fraction * jitter_unit;
    const nanoseconds soft(static_cast<std::int64_t>(std::max(0.0, ahead - jitter)));
    return {std::min(soft, hard), hard};
}

}  // namespace tokmgr
