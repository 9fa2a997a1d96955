// tokmgr/protocol/lifetime_variables.hpp — SOLAR_JWT_EXPIRATION_IN_MINUTES and
// SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES, the self-hosted Textual server's
// token lifetimes, read by the client (as the lifetimes it assumes), the
// reference server (as the lifetimes it issues) and the CLI, all by this rule:
//
//   * unset: the documented default (JWT 30 minutes, refresh token 10,000);
//   * set: a whole number of minutes, decimal digits only, from 1 to
//     `max_lifetime` (a century, 52,560,000 minutes) — the bound every
//     lifetime in tokmgr has;
//   * set to anything else — the empty string included — is a configuration
//     error that names the variable and quotes its value. An empty value is
//     refused rather than read as "unset" because it is what a template or
//     a shell leaves for a variable it failed to fill in, and a silently
//     assumed default lifetime is how a client ends up refreshing too late.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "../detail/decimal.hpp"
#include "../error.hpp"
#include "../token_set.hpp"

namespace tokmgr::protocol {

inline constexpr std::string_view jwt_lifetime_variable = "SOLAR_JWT_EXPIRATION_IN_MINUTES";
inline constexpr std::string_view refresh_lifetime_variable = "SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES";

inline constexpr std::chrono::minutes default_jwt_lifetime{30};
inline constexpr std::chrono::minutes default_refresh_lifetime{10'000};

/// The largest value the variables take, in minutes: `max_lifetime`.
inline constexpr std::int64_t max_lifetime_minutes = std::chrono::duration_cast<std::chrono::minutes>(max_lifetime).count();

/// `text`, the value of `variable`, as a lifetime; or false and the
/// configuration error naming the variable. Lifetimes are settings, not
/// secrets, so the value is quoted (cut short) to help the user.
inline bool parse_lifetime_minutes(std::string_view variable, std::string_view text, std::chrono::seconds& out,
                                   error_info& failed) {
    const auto minutes = tokmgr::detail::parse_decimal<std::int64_t>(text);
    if (!minutes || *minutes < 1 || *minutes > max_lifetime_minutes) {
        // The example is the variable's own default: 30 would make a refresh token die with its JWT.
        const auto example = variable == refresh_lifetime_variable ? default_refresh_lifetime : default_jwt_lifetime;
        failed = {make_error_code(errc::invalid_configuration),
                  std::string(variable) + "='" + std::string(text.substr(0, 40)) +
                      "' is not a whole number of minutes from 1 to " + std::to_string(max_lifetime_minutes) +
                      " (a century); unset it or set e.g. " + std::to_string(example.count())};
        return false;
    }
    out = std::chrono::minutes(*minutes);
    failed = {};
    return true;
}

/// The lifetime `variable` sets, else `fallback` when it is unset.
inline bool lifetime_from_environment(std::string_view variable, std::chrono::seconds fallback,
                                      std::chrono::seconds& out, error_info& failed) {
    const char* text = std::getenv(std::string(variable).c_str());
    if (text == nullptr) {
        out = fallback;
        failed = {};
        return true;
    }
    return parse_lifetime_minutes(variable, text, out, failed);
}

/// Both variables by the rule above; the first invalid one is the error.
inline bool lifetimes_from_environment(std::chrono::seconds& jwt, std::chrono::seconds& refresh,
                                       error_info& failed) {
    return lifetime_from_environment(jwt_lifetime_variable, default_jwt_lifetime, jwt, failed) &&
           lifetime_from_environment(refresh_lifetime_variable, default_refresh_lifetime, refresh, failed);
}

}  // namespace tokmgr::protocol
