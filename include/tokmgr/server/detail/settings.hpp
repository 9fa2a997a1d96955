// tokmgr/server/detail/settings.hpp — turns server_options plus the
// environment into the values the server runs with, or says what is wrong.
#pragma once

#include <simdjson.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "../../error.hpp"
#include "../options.hpp"
#include "crypto.hpp"

namespace tokmgr::server::detail {

inline constexpr std::string_view jwt_ttl_variable = "SOLAR_JWT_EXPIRATION_IN_MINUTES";
inline constexpr std::string_view refresh_ttl_variable = "SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES";
inline constexpr std::string_view auth_rpm_variable = "SOLAR_AUTH_RPM_LIMIT";
inline constexpr std::string_view signing_secret_variable = "TOKMGR_SERVER_SECRET";
inline constexpr std::int64_t default_jwt_minutes = 30;
inline constexpr std::int64_t default_refresh_minutes = 10'000;
/// Generous for a person or a service, and it still ends a password guessing
/// run after 600 tries a minute (the real server's default is not documented).
inline constexpr std::uint32_t default_auth_rpm_limit = 600;
inline constexpr std::uint32_t max_auth_rpm_limit = 1'000'000;
/// About 19 years: far beyond any real setting, far below chrono overflow.
inline constexpr std::int64_t max_lifetime_minutes = 10'000'000;

struct settings {
    std::chrono::seconds jwt_ttl{0};
    std::chrono::seconds refresh_ttl{0};
    secret signing_key;
    std::uint32_t auth_rpm_limit = default_auth_rpm_limit;  ///< 0: no limit
};

/// The text of `variable` when it is set and not empty.
inline std::optional<std::string_view> environment_text(std::string_view variable) {
    const char* raw = std::getenv(std::string(variable).c_str());
    if (raw == nullptr || *raw == '\0') return std::nullopt;
    return std::string_view(raw);
}

/// `text` as a whole number of at most `max_digits` decimal digits.
inline std::optional<std::uint64_t> whole_number(std::string_view text, std::size_t max_digits) {
    if (text.empty() || text.size() > max_digits) return std::nullopt;
    std::uint64_t value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + std::uint64_t(c - '0');
    }
    return value;
}

/// Values from the environment are settings, not secrets, so quoting them
/// (cut short) helps the user.
inline bool refuse_setting(std::string_view variable, std::string_view text, const std::string& expected,
                           error_info& error) {
    error.code = make_error_code(errc::invalid_configuration);
    error.detail = std::string(variable) + " must be " + expected + ", not \"" + std::string(text.substr(0, 40)) + "\"";
    return false;
}

/// A positive whole number of minutes from `variable`, else `fallback`.
inline bool minutes_from_environment(std::string_view variable, std::int64_t fallback, std::chrono::seconds& out,
                                     error_info& error) {
    const auto text = environment_text(variable);
    if (!text) {
        out = std::chrono::minutes(fallback);
        return true;
    }
    const auto minutes = whole_number(*text, 9);
    if (!minutes || *minutes == 0 || *minutes > std::uint64_t(max_lifetime_minutes))
        return refuse_setting(variable, *text,
                              "a whole number of minutes between 1 and " + std::to_string(max_lifetime_minutes), error);
    out = std::chrono::minutes(static_cast<std::int64_t>(*minutes));
    return true;
}

/// SOLAR_AUTH_RPM_LIMIT: a whole number of requests per minute, 0 for none.
inline bool rpm_limit_from_environment(std::uint32_t& out, error_info& error) {
    const auto text = environment_text(auth_rpm_variable);
    if (!text) {
        out = default_auth_rpm_limit;
        return true;
    }
    const auto limit = whole_number(*text, 7);
    if (!limit || *limit > max_auth_rpm_limit)
        return refuse_setting(auth_rpm_variable, *text,
                              "a whole number of requests per minute between 0 (no limit) and " +
                                  std::to_string(max_auth_rpm_limit),
                              error);
    out = static_cast<std::uint32_t>(*limit);
    return true;
}

inline bool check_lifetime(std::chrono::seconds ttl, std::string_view what, error_info& error) {
    if (ttl.count() > 0 && ttl <= std::chrono::minutes(max_lifetime_minutes)) return true;
    error.code = make_error_code(errc::invalid_configuration);
    error.detail = "the " + std::string(what) + " lifetime must be between 1 second and " +
                   std::to_string(max_lifetime_minutes) + " minutes";
    return false;
}

/// Options first, then the environment, then the documented defaults.
inline bool resolve_settings(const server_options& options, settings& out, error_info& error) {
    if (options.jwt_ttl) out.jwt_ttl = *options.jwt_ttl;
    else if (!minutes_from_environment(jwt_ttl_variable, default_jwt_minutes, out.jwt_ttl, error)) return false;
    if (options.refresh_ttl) out.refresh_ttl = *options.refresh_ttl;
    else if (!minutes_from_environment(refresh_ttl_variable, default_refresh_minutes, out.refresh_ttl, error))
        return false;
    if (options.auth_rpm_limit) {
        if (*options.auth_rpm_limit > max_auth_rpm_limit) {
            error.code = make_error_code(errc::invalid_configuration);
            error.detail = "the auth request limit must be at most " + std::to_string(max_auth_rpm_limit) + " a minute";
            return false;
        }
        out.auth_rpm_limit = *options.auth_rpm_limit;
    } else if (!rpm_limit_from_environment(out.auth_rpm_limit, error)) {
        return false;
    }
    if (!check_lifetime(out.jwt_ttl, "JWT", error) || !check_lifetime(out.refresh_ttl, "refresh token", error))
        return false;

    if (!options.signing_secret.empty()) {
        out.signing_key = options.signing_secret;
    } else if (const char* env = std::getenv(std::string(signing_secret_variable).c_str()); env && *env) {
        out.signing_key.assign(env);
    } else {
        std::string key = random_bytes(32);
        out.signing_key.assign(key);
        tokmgr::detail::secure_clear(key);
    }

    for (const auto& user : options.users) {
        // Logins arrive as JSON, which is UTF-8: any other name could never
        // log in, and would be signed into a JWT that is not valid JSON.
        if (user.first.empty() || !simdjson::validate_utf8(user.first.data(), user.first.size())) {
            error.code = make_error_code(errc::invalid_configuration);
            error.detail = "a user name is empty or not valid UTF-8";
            return false;
        }
    }
    if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
        error.code = make_error_code(errc::invalid_configuration);
        error.detail = "TLS needs both a certificate file and a private key file";
        return false;
    }
    if (options.threads == 0 || options.max_body_bytes == 0 || options.idle_timeout.count() <= 0 ||
        options.request_timeout.count() <= 0 || options.max_token_families == 0) {
        error.code = make_error_code(errc::invalid_configuration);
        error.detail = "threads, max_body_bytes, max_token_families and the timeouts of the reference server must be "
                       "positive";
        return false;
    }
    return true;
}

}  // namespace tokmgr::server::detail
