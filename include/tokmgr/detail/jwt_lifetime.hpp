// tokmgr/detail/jwt_lifetime.hpp — how long a freshly received JWT lives,
// read from its claims as the spec says. The signature is not verified: the
// client only schedules by these numbers, the server decides validity.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "../errc.hpp"
#include "../secret.hpp"
#include "../token_set.hpp"
#include "base64url.hpp"

namespace tokmgr::detail {

/// The payload (middle part) of a compact JWS, decoded; nothing for an
/// opaque token. The caller wipes the result.
inline std::optional<std::string> jwt_payload(std::string_view jwt) {
    const auto first = jwt.find('.');
    if (first == std::string_view::npos) return std::nullopt;
    const auto second = jwt.find('.', first + 1);
    if (second == std::string_view::npos) return std::nullopt;
    return base64url_decode(jwt.substr(first + 1, second - first - 1));
}

/// With iat and exp: exp - iat, immune to skew between the clocks. With exp
/// alone: exp against the local wall clock. With neither, or a token that is
/// not a JWT: `configured`. A lifetime that is already over is a protocol
/// error (`ec`), since serving it would only earn 401s.
template <class Json>
std::chrono::nanoseconds jwt_lifetime(const Json& json, std::string_view jwt,
                                      std::chrono::system_clock::time_point wall_now,
                                      std::chrono::nanoseconds configured, std::error_code& ec) {
    ec.clear();
    auto payload = jwt_payload(jwt);
    if (!payload) return configured;
    std::error_code parse_error;
    const jwt_claims claims = json.parse_jwt_claims(*payload, parse_error);
    secure_clear(*payload);
    if (parse_error) return configured;
    // In long double seconds: claims are untrusted numbers, and exp - iat or
    // exp in nanoseconds could overflow. Anything beyond a century is a century.
    constexpr auto century = static_cast<long double>(max_lifetime.count());
    long double span = 0;
    if (claims.issued_at && claims.expires_at) {
        span = static_cast<long double>(*claims.expires_at) - static_cast<long double>(*claims.issued_at);
    } else if (claims.expires_at) {
        const auto wall = std::chrono::duration_cast<std::chrono::duration<long double>>(wall_now.time_since_epoch());
        span = static_cast<long double>(*claims.expires_at) - wall.count();
    } else {
        return configured;
    }
    const std::chrono::nanoseconds lifetime(static_cast<std::int64_t>(std::clamp(span, -1.0L, century) * 1e9L));
    if (lifetime <= std::chrono::nanoseconds::zero()) ec = make_error_code(errc::protocol_error);
    return lifetime;
}

}  // namespace tokmgr::detail
