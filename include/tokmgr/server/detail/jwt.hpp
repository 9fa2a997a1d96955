// tokmgr/server/detail/jwt.hpp — HS256 JWTs as the reference server issues
// and checks them (RFC 7519 / RFC 7515 compact form). No Asio.
//
// Checking follows RFC 8725: the algorithm is pinned to HS256 before the
// signature is looked at, so `alg: none` or an algorithm swap is refused,
// and the signature is compared in constant time.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "../../detail/base64url.hpp"
#include "../../protocol/textual_api.hpp"
#include "../../secret.hpp"
#include "crypto.hpp"
#include "reply.hpp"

namespace tokmgr::server::detail {

/// A per-thread DOM parser: simdjson parsers are reusable but not thread-safe,
/// and the server handles requests on several threads.
inline simdjson::dom::parser& json_parser() {
    thread_local simdjson::dom::parser parser;
    return parser;
}

struct jwt_fields {
    std::string subject;  ///< "sub"
    std::int64_t issued_at = 0;   ///< "iat"
    std::int64_t expires_at = 0;  ///< "exp"
    std::string id;       ///< "jti"
};

/// `base64url(header).base64url(payload).base64url(HMAC-SHA256)`.
inline std::string sign_hs256(std::string_view key, const jwt_fields& fields) {
    std::string payload = "{\"sub\":";
    append_json_string(payload, fields.subject);
    // The claims the client reads for the lifetime are named where the client finds them.
    payload += ",\"" + std::string(protocol::claim::issued_at) + "\":" + std::to_string(fields.issued_at);
    payload += ",\"" + std::string(protocol::claim::expires_at) + "\":" + std::to_string(fields.expires_at);
    payload += ",\"jti\":";
    append_json_string(payload, fields.id);
    payload += '}';
    std::string token = tokmgr::detail::base64url_encode(R"({"alg":"HS256","typ":"JWT"})");
    token += '.';
    token += tokmgr::detail::base64url_encode(payload);
    const std::string mac = hmac_sha256(key, token);
    token += '.';
    token += tokmgr::detail::base64url_encode(mac);
    return token;
}

enum class jwt_status {
    valid,
    malformed,              ///< not three base64url parts of JSON objects, or claims missing
    unsupported_algorithm,  ///< "alg" is not HS256 (e.g. "none")
    bad_signature,
    expired,  ///< signature good, but "exp" is not after now
};

struct jwt_check {
    jwt_status status = jwt_status::malformed;
    std::string subject;
};

/// Checks `token` under `key` at `now_seconds` (Unix time, fractional: a
/// token whose exp is 100 is already expired at 100.0, per RFC 7519 §4.1.4).
inline jwt_check verify_hs256(std::string_view token, std::string_view key, double now_seconds) {
    jwt_check result;
    const auto dot1 = token.find('.');
    const auto dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) return result;

    // Canonical spelling only: one token, one string (see base64url_decode_canonical).
    const auto header_json = tokmgr::detail::base64url_decode_canonical(token.substr(0, dot1));
    const auto payload_json = tokmgr::detail::base64url_decode_canonical(token.substr(dot1 + 1, dot2 - dot1 - 1));
    const auto signature = tokmgr::detail::base64url_decode_canonical(token.substr(dot2 + 1));
    if (!header_json || !payload_json || !signature) return result;

    auto& parser = json_parser();
    simdjson::dom::element header;
    if (parser.parse(*header_json).get(header) != simdjson::SUCCESS || !header.is_object()) return result;
    std::string_view alg;
    if (header["alg"].get_string().get(alg) != simdjson::SUCCESS) return result;
    if (alg != "HS256") {
        result.status = jwt_status::unsupported_algorithm;
        return result;
    }

    const std::string expected = hmac_sha256(key, token.substr(0, dot2));
    if (!tokmgr::detail::constant_time_equal(expected, *signature)) {
        result.status = jwt_status::bad_signature;
        return result;
    }

    simdjson::dom::element payload;
    if (parser.parse(*payload_json).get(payload) != simdjson::SUCCESS || !payload.is_object()) return result;
    double exp = 0;
    std::string_view sub;
    if (payload[protocol::claim::expires_at].get_double().get(exp) != simdjson::SUCCESS) return result;
    if (payload["sub"].get_string().get(sub) != simdjson::SUCCESS) return result;
    result.subject.assign(sub);
    result.status = now_seconds >= exp ? jwt_status::expired : jwt_status::valid;
    return result;
}

}  // namespace tokmgr::server::detail
