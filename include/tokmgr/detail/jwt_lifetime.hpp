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

/// How long a JWT received at `wall_now` can still be used, counted from its
/// receipt.
///
/// With iat and exp: exp - iat, immune to skew between the clocks, less what
/// the whole-second claims may already have taken. `iat` is the second the
/// JWT was issued in, rounded down, so up to a second of `exp - iat` can be
/// gone before the answer even leaves the server. When the wall clock puts
/// the receipt within iat's own second (0 <= wall_now - iat < 1 s: the
/// clocks agree to within the claims' resolution), that is the part of the
/// second gone by — rounding and the answer's way back together — and only it
/// is taken off, so a 1-second JWT is still served. Otherwise (a skewed
/// clock, or an answer that took a second or more) the clocks cannot say,
/// and the whole second is taken off, whatever the skew.
/// With exp alone: exp against the local wall clock, which is exact to the
/// clock's agreement. With neither, or a token that is not a JWT:
/// `configured`. A JWT with nothing left to use is a protocol error (`ec`),
/// since serving it would only earn 401s.
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
    using std::chrono::nanoseconds;
    constexpr auto century = static_cast<long double>(max_lifetime.count());
    auto to_lifetime = [&](long double seconds, nanoseconds less) {
        // Whole seconds (and the clamp's bounds) are exact in nanoseconds,
        // so only `less` is sub-second, and taken off exactly.
        const nanoseconds lifetime(static_cast<std::int64_t>(std::clamp(seconds, -1.0L, century) * 1e9L));
        return lifetime - less;
    };
    nanoseconds lifetime{0};
    if (claims.issued_at && claims.expires_at) {
        // The part of iat's second gone by at receipt, if the wall clock
        // puts the receipt within it; else the whole second.
        nanoseconds gone = std::chrono::seconds(1);
        const auto wall = std::chrono::duration_cast<nanoseconds>(wall_now.time_since_epoch());
        const auto wall_seconds = std::chrono::duration_cast<std::chrono::seconds>(wall).count();
        // Compared in seconds first: an iat far from now would overflow the
        // difference in nanoseconds.
        if (*claims.issued_at >= wall_seconds - 2 && *claims.issued_at <= wall_seconds + 2) {
            const nanoseconds into = wall - std::chrono::seconds(*claims.issued_at);
            if (into >= nanoseconds::zero() && into < std::chrono::seconds(1)) gone = into;
        }
        const long double span =
            static_cast<long double>(*claims.expires_at) - static_cast<long double>(*claims.issued_at);
        lifetime = to_lifetime(span, gone);
    } else if (claims.expires_at) {
        const auto wall = std::chrono::duration_cast<std::chrono::duration<long double>>(wall_now.time_since_epoch());
        lifetime = to_lifetime(static_cast<long double>(*claims.expires_at) - wall.count(), nanoseconds::zero());
    } else {
        return configured;
    }
    if (lifetime <= nanoseconds::zero()) ec = make_error_code(errc::protocol_error);
    return lifetime;
}

/// A lifetime the answer states (OAuth 2.0's expires_in) rather than the
/// token's claims: it is counted from the answer's receipt, like a JWT with
/// iat, and held to the same bounds. None left is the same protocol error.
inline std::chrono::nanoseconds stated_lifetime(std::chrono::seconds stated, std::error_code& ec) {
    ec.clear();
    if (stated.count() <= 0) ec = make_error_code(errc::protocol_error);
    return std::chrono::nanoseconds(std::clamp(stated, std::chrono::seconds::zero(), max_lifetime));
}

}  // namespace tokmgr::detail
