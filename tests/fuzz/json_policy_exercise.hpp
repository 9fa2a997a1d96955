// What a Json policy reads from bytes, gathered so that the per-policy
// harnesses and the differential one exercise exactly the same calls.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <vector>

#include "fuzz_target.hpp"

namespace tokmgr_fuzz {

struct json_reading {
    std::error_code token_ec;
    std::string jwt, refresh_token;
    std::error_code claims_ec;
    std::optional<std::int64_t> issued_at, expires_at;
    std::string message;
    std::error_code object_ec;
    // name, kind, text, number, boolean: read_object's members, in its order
    std::vector<std::tuple<std::string, int, std::string, double, bool>> members;

    bool operator==(const json_reading& o) const {
        return token_ec == o.token_ec && jwt == o.jwt && refresh_token == o.refresh_token && claims_ec == o.claims_ec &&
               issued_at == o.issued_at && expires_at == o.expires_at && message == o.message &&
               object_ec == o.object_ec && members == o.members;
    }
};

template <class Json>
json_reading read_with(std::string_view text) {
    const Json json{};
    json_reading r;
    const auto pair = json.parse_token_response(text, r.token_ec);
    if (!r.token_ec) {
        r.jwt.assign(pair.jwt.reveal());
        r.refresh_token.assign(pair.refresh_token.reveal());
        FUZZ_CHECK(!r.jwt.empty() && !r.refresh_token.empty());
    }
    const auto claims = json.parse_jwt_claims(text, r.claims_ec);
    r.issued_at = claims.issued_at;
    r.expires_at = claims.expires_at;
    // Documented bound on claims (detail/json_rules.hpp).
    if (r.expires_at) FUZZ_CHECK(*r.expires_at > -1'000'000'000'000'001 && *r.expires_at < 1'000'000'000'000'000);
    r.message = json.error_message(text);
    const tokmgr::flat_object object = json.read_object(text, r.object_ec);
    for (const auto& m : object)
        r.members.emplace_back(m.name, static_cast<int>(m.type), std::string(m.text.reveal()), m.number, m.boolean);
    if (!r.object_ec) {
        // What was read is written and read back whole.
        std::error_code again;
        FUZZ_CHECK(json.read_object(json.write_object(object), again).size() == object.size() && !again);
    }
    // Request bodies built from the same bytes parse back.
    const std::string body = json.refresh_body(text);
    FUZZ_CHECK(!body.empty() && body.front() == '{' && body.back() == '}');
    return r;
}

}  // namespace tokmgr_fuzz
