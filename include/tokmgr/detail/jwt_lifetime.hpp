// tokmgr/detail/jwt_lifetime.hpp — how long a freshly received JWT lives,
// read from its claims as the spec says. The signature is not verified: the
// client only schedules by these numbers, the server decides validity.
#pragma once

#include <chrono>
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
    using std::chrono::seconds;
    std::chrono::nanoseconds lifetime = configured;
    if (claims.issued_at && claims.expires_at) {
        lifetime = seconds(*claims.expires_at - *claims.issued_at);
    } else if (claims.expires_at) {
        lifetime = seconds(*claims.expires_at) - wall_now.time_since_epoch();
    }
    if (lifetime <= std::chrono::nanoseconds::zero()) ec = make_error_code(errc::protocol_error);
    return lifetime;
}

}  // namespace tokmgr::detail
