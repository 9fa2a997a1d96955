// tokmgr/token_set.hpp — token values: plain data, no I/O.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

#include "secret.hpp"

namespace tokmgr {

/// The longest lifetime tokmgr schedules by: a century. Longer values (from
/// claims, the environment or options) are refused or clamped, so deadlines in
/// nanoseconds cannot overflow.
inline constexpr std::chrono::seconds max_lifetime = std::chrono::hours(24 * 365 * 100);

/// What login and token_refresh answer: a JWT and the refresh token that
/// replaces every earlier one.
struct token_pair {
    secret jwt;
    secret refresh_token;
};

/// The JWT claims the client reads (it does not verify the signature).
/// Seconds since the Unix epoch, as in the token.
struct jwt_claims {
    std::optional<std::int64_t> issued_at;   ///< "iat"
    std::optional<std::int64_t> expires_at;  ///< "exp"
};

/// The token set as the storage policy persists it. Times are wall-clock so
/// that a set stored by one process means the same to the next one; the
/// manager itself schedules on its monotonic clock.
struct token_set {
    secret jwt;
    secret refresh_token;
    std::chrono::system_clock::time_point received_at{};  ///< wall clock when the pair arrived
    /// How long the JWT is usable from `received_at`, in whole seconds
    /// rounded down: from its claims (less what their whole-second rounding
    /// may have cost), or configured.
    std::chrono::seconds jwt_lifetime{0};
    std::chrono::seconds refresh_lifetime{0};             ///< configured refresh-token lifetime
    /// Increases with every write of the set: +1 for the write-ahead mark
    /// that spends a refresh token, +1 for the pair that replaces it. A store
    /// that coordinates refuses to replace a set by one of a lower or equal
    /// generation.
    std::uint64_t generation = 0;
    /// Write-ahead rule: set (and `refresh_token` emptied) before the refresh
    /// token is sent, so whoever reads the set next logs in instead of
    /// sending it again. The JWT stays servable until its hard threshold.
    bool refresh_token_spent = false;
};

}  // namespace tokmgr
