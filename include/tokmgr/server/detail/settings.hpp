// tokmgr/server/detail/settings.hpp — turns server_options plus the
// environment into the values the server runs with, or says what is wrong.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "../../error.hpp"
#include "../options.hpp"
#include "crypto.hpp"

namespace tokmgr::server::detail {

inline constexpr std::string_view jwt_ttl_variable = "SOLAR_JWT_EXPIRATION_IN_MINUTES";
inline constexpr std::string_view refresh_ttl_variable = "SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES";
inline constexpr std::string_view signing_secret_variable = "TOKMGR_SERVER_SECRET";
inline constexpr std::int64_t default_jwt_minutes = 30;
inline constexpr std::int64_t default_refresh_minutes = 10'000;
/// About 19 years: far beyond any real setting, far below chrono overflow.
inline constexpr std::int64_t max_lifetime_minutes = 10'000'000;

struct settings {
    std::chrono::seconds jwt_ttl{0};
    std::chrono::seconds refresh_ttl{0};
    secret signing_key;
};

/// A positive whole number of minutes from `variable`, else `fallback`.
inline bool minutes_from_environment(std::string_view variable, std::int64_t fallback, std::chrono::seconds& out,
                                     error_info& error) {
    const char* raw = std::getenv(std::string(variable).c_str());
    if (raw == nullptr || *raw == '\0') {
        out = std::chrono::minutes(fallback);
        return true;
    }
    const std::string_view text(raw);
    std::int64_t minutes = 0;
    bool valid = text.size() <= 9;
    for (char c : text) {
        if (c < '0' || c > '9') valid = false;
        else if (valid) minutes = minutes * 10 + (c - '0');
    }
    if (!valid || minutes <= 0 || minutes > max_lifetime_minutes) {
        // The value is a lifetime, not a secret, so quoting it helps the user.
        error.code = make_error_code(errc::invalid_configuration);
        error.detail = std::string(variable) + " must be a whole number of minutes between 1 and " +
                       std::to_string(max_lifetime_minutes) + ", not \"" + std::string(text.substr(0, 40)) + "\"";
        return false;
    }
    out = std::chrono::minutes(minutes);
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

    if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
        error.code = make_error_code(errc::invalid_configuration);
        error.detail = "TLS needs both a certificate file and a private key file";
        return false;
    }
    if (options.threads == 0 || options.max_body_bytes == 0 || options.idle_timeout.count() <= 0 ||
        options.request_timeout.count() <= 0) {
        error.code = make_error_code(errc::invalid_configuration);
        error.detail = "threads, max_body_bytes and the timeouts of the reference server must be positive";
        return false;
    }
    return true;
}

}  // namespace tokmgr::server::detail
