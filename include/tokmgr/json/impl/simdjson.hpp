// tokmgr/json/impl/simdjson.hpp — bodies of tokmgr::simdjson_json: inline
// header-only, compiled once under TOKMGR_SEPARATE_COMPILATION (in the file
// that includes <tokmgr/src.hpp>).
#pragma once

#include <simdjson.h>

#include "../simdjson.hpp"

namespace tokmgr {

TOKMGR_SIMDJSON_DECL std::string simdjson_json::login_body(std::string_view user, std::string_view password) const {
    return protocol::login_request_json(user, password);
}

TOKMGR_SIMDJSON_DECL std::string simdjson_json::refresh_body(std::string_view refresh_token) const {
    return protocol::refresh_request_json(refresh_token);
}

TOKMGR_SIMDJSON_DECL token_pair simdjson_json::parse_token_response(std::string_view body, std::error_code& ec) const {
    ec.clear();
    simdjson::dom::parser parser;
    simdjson::dom::object object;
    std::string_view jwt, refresh_token;
    if (!parse_object(parser, body, object) || object[protocol::field::jwt].get_string().get(jwt) ||
        object[protocol::field::refresh_token].get_string().get(refresh_token) || jwt.empty() ||
        refresh_token.empty()) {
        ec = make_error_code(errc::protocol_error);
        return {};
    }
    return {secret(jwt), secret(refresh_token)};
}

TOKMGR_SIMDJSON_DECL jwt_claims simdjson_json::parse_jwt_claims(std::string_view payload, std::error_code& ec) const {
    ec.clear();
    simdjson::dom::parser parser;
    simdjson::dom::object object;
    if (!parse_object(parser, payload, object)) {
        ec = make_error_code(errc::protocol_error);
        return {};
    }
    return {seconds_claim(object, protocol::claim::issued_at), seconds_claim(object, protocol::claim::expires_at)};
}

TOKMGR_SIMDJSON_DECL std::string simdjson_json::error_message(std::string_view body) const {
    simdjson::dom::parser parser;
    simdjson::dom::object object;
    if (!parse_object(parser, body, object)) return {};
    for (const std::string_view key : protocol::error_message_fields) {
        std::string_view text;
        if (!object[key].get_string().get(text) && !text.empty()) return std::string(text);
    }
    return {};
}

TOKMGR_SIMDJSON_DECL std::string simdjson_json::write_object(const flat_object& object) const {
    return detail::write_flat_object(object);
}

TOKMGR_SIMDJSON_DECL flat_object simdjson_json::read_object(std::string_view body, std::error_code& ec) const {
    ec.clear();
    simdjson::dom::parser parser;
    simdjson::dom::object object;
    flat_object members;
    if (!parse_object(parser, body, object)) {
        ec = make_error_code(errc::protocol_error);
        return members;
    }
    members.reserve(object.size());
    for (auto field : object) {
        std::string_view text;
        bool boolean = false;
        if (!field.value.get_string().get(text)) {
            members.push_back(flat_member::of_string(field.key, text));
        } else if (!field.value.get_bool().get(boolean)) {
            members.push_back(flat_member::of_boolean(field.key, boolean));
        } else if (field.value.is_number()) {
            // int64 and uint64 first: get_double() refuses them.
            std::int64_t whole = 0;
            std::uint64_t positive = 0;
            double number = 0;
            if (!field.value.get_int64().get(whole)) number = static_cast<double>(whole);
            else if (!field.value.get_uint64().get(positive)) number = static_cast<double>(positive);
            else if (field.value.get_double().get(number)) continue;  // not after is_number()
            members.push_back(flat_member::of_number(field.key, number));
        }
    }
    std::sort(members.begin(), members.end(),
              [](const flat_member& a, const flat_member& b) { return a.name < b.name; });
    return members;
}

TOKMGR_SIMDJSON_DECL bool simdjson_json::parse_object(simdjson::dom::parser& parser, std::string_view text,
                                                      simdjson::dom::object& object) {
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

TOKMGR_SIMDJSON_DECL std::optional<std::int64_t> simdjson_json::seconds_claim(simdjson::dom::object& object,
                                                                              std::string_view key) {
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

}  // namespace tokmgr
