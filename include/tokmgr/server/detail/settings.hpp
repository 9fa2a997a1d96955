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
#include <utility>

#include "../../detail/decimal.hpp"
#include "../../error.hpp"
#include "../../protocol/lifetime_variables.hpp"
#include "../options.hpp"
#include "crypto.hpp"

namespace tokmgr::server::detail {

inline constexpr std::string_view auth_rpm_variable = "SOLAR_AUTH_RPM_LIMIT";
inline constexpr std::string_view signing_secret_variable = "TOKMGR_SERVER_SECRET";
/// Generous for a person or a service, and it still ends a password guessing
/// run after 600 tries a minute (the real server's default is not documented).
inline constexpr std::uint32_t default_auth_rpm_limit = 600;
inline constexpr std::uint32_t max_auth_rpm_limit = 1'000'000;

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

/// Sets `failed` to a configuration error; false, for `return refuse(...)`.
inline bool refuse(error_info& failed, std::string what) {
    failed = {make_error_code(errc::invalid_configuration), std::move(what)};
    return false;
}

/// SOLAR_AUTH_RPM_LIMIT: a whole number of requests per minute, 0 for none.
/// Its value is a setting, not a secret, so quoting it (cut short) helps.
inline bool rpm_limit_from_environment(std::uint32_t& out, error_info& failed) {
    const auto text = environment_text(auth_rpm_variable);
    failed = {};
    if (!text) {
        out = default_auth_rpm_limit;
        return true;
    }
    const auto limit = tokmgr::detail::parse_decimal<std::uint32_t>(*text);
    if (!limit || *limit > max_auth_rpm_limit)
        return refuse(failed, std::string(auth_rpm_variable) +
                                  " must be a whole number of requests per minute between 0 (no limit) and " +
                                  std::to_string(max_auth_rpm_limit) + ", not \"" +
                                  std::string(text->substr(0, 40)) + "\"");
    out = *limit;
    return true;
}

inline bool check_lifetime(std::chrono::seconds ttl, std::string_view what, error_info& failed) {
    failed = {};
    if (ttl.count() > 0 && ttl <= max_lifetime) return true;
    return refuse(failed, "the " + std::string(what) + " lifetime must be between 1 second and " +
                              std::to_string(protocol::max_lifetime_minutes) + " minutes (a century)");
}

/// Options first, then the environment, then the documented defaults.
inline bool resolve_settings(const server_options& options, settings& out, error_info& failed) {
    failed = {};
    if (options.jwt_ttl) {
        out.jwt_ttl = *options.jwt_ttl;
    } else if (!protocol::lifetime_from_environment(protocol::jwt_lifetime_variable, protocol::default_jwt_lifetime,
                                                    out.jwt_ttl, failed)) {
        return false;
    }
    if (options.refresh_ttl) {
        out.refresh_ttl = *options.refresh_ttl;
    } else if (!protocol::lifetime_from_environment(protocol::refresh_lifetime_variable,
                                                    protocol::default_refresh_lifetime, out.refresh_ttl, failed)) {
        return false;
    }
    if (options.auth_rpm_limit) {
        if (*options.auth_rpm_limit > max_auth_rpm_limit)
            return refuse(failed, "the auth request limit must be at most " + std::to_string(max_auth_rpm_limit) +
                                      " a minute");
        out.auth_rpm_limit = *options.auth_rpm_limit;
    } else if (!rpm_limit_from_environment(out.auth_rpm_limit, failed)) {
        return false;
    }
    if (!check_lifetime(out.jwt_ttl, "JWT", failed) || !check_lifetime(out.refresh_ttl, "refresh token", failed))
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
        if (user.first.empty() || !simdjson::validate_utf8(user.first.data(), user.first.size()))
            return refuse(failed, "a user name is empty or not valid UTF-8");
    }
    if (options.tls_cert_file.empty() != options.tls_key_file.empty())
        return refuse(failed, "TLS needs both a certificate file and a private key file");
    if (options.threads == 0 || options.max_body_bytes == 0 || options.idle_timeout.count() <= 0 ||
        options.request_timeout.count() <= 0 || options.max_token_families == 0)
        return refuse(failed, "threads, max_body_bytes, max_token_families and the timeouts of the reference "
                              "server must be positive");
    return true;
}

}  // namespace tokmgr::server::detail
