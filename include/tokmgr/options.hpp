// tokmgr/options.hpp — what a token manager is told: who logs in, how long
// tokens live, when to refresh, and whom to tell.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "detail/session_options.hpp"
#include "error.hpp"
#include "event.hpp"
#include "protocol/lifetime_variables.hpp"
#include "protocol/textual_api.hpp"
#include "schedule.hpp"
#include "secret.hpp"
#include "token_set.hpp"

namespace tokmgr {

/// A Textual user name and password. The password is a `secret`.
struct credentials {
    std::string user_name;
    secret password;
};

/// Token lifetimes the client assumes when the server does not say.
struct lifetimes {
    std::chrono::seconds jwt{protocol::default_jwt_lifetime};          ///< used when the JWT has no exp claim
    std::chrono::seconds refresh{protocol::default_refresh_lifetime};  ///< the refresh token's, counted from receipt
};

/// Runs a refresh somewhere other than the calling thread (a thread pool, an
/// Asio executor: `[ex](auto f) { asio::post(ex, std::move(f)); }`). When set,
/// the caller that crosses the soft threshold hands the refresh to it and
/// returns the current JWT at once.
using refresh_executor = std::function<void(std::function<void()>)>;

struct manager_options {
    /// Lifetimes to assume; unset means the SOLAR_* environment variables,
    /// else the documented defaults (see `lifetimes_from_environment`).
    std::optional<lifetimes> assumed_lifetimes;

    /// Where in a token's lifetime the proactive refresh starts, as a fraction
    /// of the time until the hard threshold (0.75: after three quarters).
    double refresh_ahead_fraction = 0.75;
    /// The soft point is moved earlier by up to this fraction of the lifetime,
    /// uniformly at random per token, so a fleet does not refresh in lockstep.
    double jitter_fraction = 0.05;
    /// Seed for the jitter; 0 picks one at random. Tests fix it.
    std::uint64_t jitter_seed = 0;

    /// The hard threshold is the end of the JWT's usable life (its claims,
    /// less up to 1 s their whole seconds may have cost) minus a leeway of
    /// 10% of that life, capped at `max_leeway` (see schedule.hpp).
    std::chrono::seconds max_leeway{60};

    /// Backoff after a failed login or refresh: first delay, doubled per
    /// consecutive failure (with jitter), capped; Retry-After is honoured up to
    /// `max_retry_after`. During backoff, callers that need a new token get the
    /// last error at once instead of another request.
    std::chrono::milliseconds backoff_initial{200};
    std::chrono::milliseconds backoff_max{std::chrono::seconds(30)};
    std::chrono::seconds max_retry_after{std::chrono::minutes(5)};
    /// After the server rejected the credentials, no new login is tried for
    /// this long: the password will not become right by itself.
    std::chrono::seconds rejected_credentials_backoff{std::chrono::minutes(5)};

    /// invalidate() forces at most one refresh per this interval: a JWT
    /// rejected again sooner is served until the interval is over, so a
    /// service that rejects every JWT cannot drive one refresh per request.
    std::chrono::milliseconds min_forced_refresh_interval{std::chrono::seconds(5)};

    /// The longest a synchronous caller waits for a login or refresh another
    /// caller runs (errc::wait_timeout after it; the flight goes on). The
    /// transport's own timeouts bound the request itself.
    std::chrono::milliseconds max_wait{std::chrono::seconds(60)};

    /// With a coordinating storage (shared by several processes), the longest
    /// a login or refresh waits for the storage's lease (errc::lease_timeout
    /// after it; the current JWT is still served until its hard threshold).
    std::chrono::milliseconds lease_wait{std::chrono::seconds(30)};

    /// Authorization scheme for `authorization()`: "<scheme> <jwt>".
    std::string scheme{protocol::bearer_scheme};
    std::string login_path{protocol::login_path};
    std::string refresh_path{protocol::refresh_path};

    /// Optional; see refresh_executor.
    refresh_executor executor;
    /// Optional. Where an asynchronous manager (one whose transport runs on
    /// an executor) runs the calls of a blocking store, so its executor never
    /// waits for one. Unset: a thread of the manager's own, started with its
    /// first flight. A task it destroys unrun ends the flight with
    /// errc::storage_failed. Tasks should run in the order given (one thread,
    /// or a strand): a flight's lease release is handed over before the next
    /// flight's lease request.
    refresh_executor storage_executor;
    /// Optional; called without any lock held, on the thread that ran the
    /// request. Never receives a secret. A call from it to get_token that
    /// would have to wait for the flight reporting the event fails at once
    /// with errc::would_block instead of deadlocking.
    event_handler on_event;

    /// The options the schedule reads: `schedule_for(lifetime, options, j)`.
    operator schedule_options() const noexcept { return {refresh_ahead_fraction, jitter_fraction, max_leeway}; }
};

namespace detail {

/// The options the session reads, with the refresh token's lifetime as
/// resolved (`assumed_lifetimes` or the environment).
inline session_options session_options_for(const manager_options& options, const lifetimes& assumed) {
    session_options picked;
    picked.schedule = options;
    picked.backoff_initial = options.backoff_initial;
    picked.backoff_max = options.backoff_max;
    picked.max_retry_after = options.max_retry_after;
    picked.rejected_credentials_backoff = options.rejected_credentials_backoff;
    picked.min_forced_refresh_interval = options.min_forced_refresh_interval;
    picked.scheme = options.scheme;
    picked.refresh_lifetime = assumed.refresh;
    return picked;
}

}  // namespace detail

/// The documented defaults (JWT 30 minutes, refresh token 10,000 minutes),
/// overridden by SOLAR_JWT_EXPIRATION_IN_MINUTES and
/// SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES when set, as on a self-hosted
/// server: a whole number of minutes from 1 to a century. A set but invalid
/// (or empty) variable is an error, not silently ignored; the rule is shared
/// with the reference server (protocol/lifetime_variables.hpp).
inline lifetimes lifetimes_from_environment(error_info& failed) {
    lifetimes result;
    protocol::lifetimes_from_environment(result.jwt, result.refresh, failed);
    return result;
}

inline lifetimes lifetimes_from_environment(std::error_code& ec) {
    return detail::code_only(ec, [](error_info& failed) { return lifetimes_from_environment(failed); });
}

inline lifetimes lifetimes_from_environment() {
    return detail::throw_on_failure([](error_info& failed) { return lifetimes_from_environment(failed); });
}

/// Checks options for values that make no sense; says which and why.
inline error_info validate(const manager_options& options) {
    auto bad = [](std::string what) {
        return error_info{make_error_code(errc::invalid_configuration), std::move(what)};
    };
    if (!(options.refresh_ahead_fraction > 0.0 && options.refresh_ahead_fraction <= 1.0))
        return bad("refresh_ahead_fraction must be in (0, 1]");
    if (!(options.jitter_fraction >= 0.0 && options.jitter_fraction < options.refresh_ahead_fraction))
        return bad("jitter_fraction must be in [0, refresh_ahead_fraction)");
    if (options.assumed_lifetimes &&
        (options.assumed_lifetimes->jwt.count() <= 0 || options.assumed_lifetimes->refresh.count() <= 0 ||
         options.assumed_lifetimes->jwt > max_lifetime || options.assumed_lifetimes->refresh > max_lifetime))
        return bad("assumed lifetimes must be positive and at most a century");
    if (options.max_leeway < std::chrono::seconds(1) || options.max_leeway > max_lifetime)
        return bad("max_leeway must be from 1 s to a century");
    // Every duration is converted to nanoseconds: a century is far inside
    // int64 nanoseconds (292 years), and nothing sensible is longer.
    auto within = [](auto d) { return d.count() >= 0 && d <= max_lifetime; };
    if (!within(options.backoff_initial) || !within(options.backoff_max) ||
        options.backoff_max < options.backoff_initial)
        return bad("backoff_initial and backoff_max must be from 0 to a century, backoff_initial <= backoff_max");
    if (!within(options.max_retry_after) || !within(options.rejected_credentials_backoff) ||
        !within(options.min_forced_refresh_interval))
        return bad("max_retry_after, rejected_credentials_backoff and min_forced_refresh_interval must be from 0 to "
                   "a century");
    if (options.max_wait.count() <= 0 || options.max_wait > max_lifetime)
        return bad("max_wait must be positive and at most a century");
    if (!within(options.lease_wait)) return bad("lease_wait must be from 0 to a century");
    if (options.login_path.empty() || options.login_path[0] != '/' || options.refresh_path.empty() ||
        options.refresh_path[0] != '/')
        return bad("login_path and refresh_path must start with '/'");
    return {};
}

}  // namespace tokmgr
