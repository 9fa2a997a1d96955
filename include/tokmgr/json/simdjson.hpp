// tokmgr/json/simdjson.hpp — the default Json policy, on simdjson's DOM API.
//
// What it accepts is defined once for every policy in detail/json_rules.hpp,
// and the member names it reads and writes once in protocol/textual_api.hpp.
//
// Why the policies keep their protocol-shaped operations (login_body,
// parse_token_response, ...) instead of a generic "parse, then get a member
// by name" trait as in jwt-cpp: the operations decide where a password or a
// token is copied, and each library needs a different answer (one reserved
// allocation here, nlohmann's replacement of bytes that are not UTF-8, no
// parsed document outliving the call). A generic trait would hand out
// documents holding secrets for the caller to manage, and would break every
// user-written policy for no gain: the names are already in one place.
//
// Parsing copies the body into simdjson's own buffers, which are freed but not
// wiped; a process whose freed memory must hold no token needs a policy that
// parses in place.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <simdjson.h>

#include "../detail/json_rules.hpp"
#include "../errc.hpp"
#include "../protocol/textual_api.hpp"
#include "../token_set.hpp"

namespace tokmgr {

class simdjson_json {
public:
    std::string login_body(std::string_view user, std::string_view password) const {
        return protocol::login_request_json(user, password);
    }

    std::string refresh_body(std::string_view refresh_token) const {
        return protocol::refresh_request_json(refresh_token);
    }

    token_pair parse_token_response(std::string_view body, std::error_code& ec) const {
        ec.clear();
        simdjson::dom::parser parser;
        simdjson::dom::object object;
        if (!parse_object(parser, body, object)) {
            ec = make_error_code(errc::protocol_error);
            return {};
        }
        std::string_view jwt, refresh_token;
        if (object[protocol::field::jwt].get_string().get(jwt) ||
            object[protocol::field::refresh_token].get_string().get(refresh_token) ||
            jwt.empty() || refresh_token.empty()) {
            ec = make_error_code(errc::protocol_error);
            return {};
        }
        return {secret(jwt), secret(refresh_token)};
    }

    jwt_claims parse_jwt_claims(std::string_view payload, std::error_code& ec) const {
        ec.clear();
        simdjson::dom::parser parser;
        simdjson::dom::object object;
        if (!parse_object(parser, payload, object)) {
            ec = make_error_code(errc::protocol_error);
            return {};
        }
        return {seconds_claim(object, protocol::claim::issued_at), seconds_claim(object, protocol::claim::expires_at)};
    }

    std::string error_message(std::string_view body) const {
        simdjson::dom::parser parser;
        simdjson::dom::object object;
        if (!parse_object(parser, body, object)) return {};
        for (const std::string_view key : protocol::error_message_fields) {
            std::string_view text;
            if (!object[key].get_string().get(text) && !text.empty()) return std::string(text);
        }
        return {};
    }

private:
    /// One JSON object under the rules of detail/json_rules.hpp. simdjson
    /// itself refuses trailing bytes, out-of-range numbers and deeper nesting
    /// than json_max_depth (its default); the rest is checked here.
    static bool parse_object(simdjson::dom::parser& parser, std::string_view text, simdjson::dom::object& object) {
        static_assert(detail::json_max_depth == simdjson::DEFAULT_MAX_DEPTH, "the policies must agree on depth");
        if (!detail::json_bytes_acceptable(text)) return false;
        if (parser.parse(text.data(), text.size()).get_object().get(object)) return false;
        std::vector<std::string_view> keys;
        keys.reserve(object.size());
        for (auto field : object) keys.push_back(field.key);
        std::sort(keys.begin(), keys.end());
        if (std::adjacent_find(keys.begin(), keys.end()) != keys.end()) return false;  // a member named twice
        return true;
    }

    static std::optional<std::int64_t> seconds_claim(simdjson::dom::object& object, std::string_view key) {
        simdjson::dom::element value;
        if (object[key].get(value)) return std::nullopt;
        std::int64_t whole = 0;
        if (!value.get_int64().get(whole))
            return std::fabs(double(whole)) < detail::json_max_claim_seconds ? std::optional<std::int64_t>(whole)
                                                                              : std::nullopt;
        if (value.is_uint64()) return std::nullopt;  // above INT64_MAX
        double fractional = 0;  // NumericDate may carry a fraction (RFC 7519 §2)
        if (!value.get_double().get(fractional) && std::isfinite(fractional) &&
            std::fabs(fractional) < detail::json_max_claim_seconds)
            return static_cast<std::int64_t>(std::floor(fractional));
        return std::nullopt;
    }
};

}  // namespace tokmgr
