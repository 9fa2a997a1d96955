// tokmgr/json/simdjson.hpp — the default Json policy, on simdjson's DOM API.
//
// What it accepts is defined once for every policy in detail/json_rules.hpp.
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

// Under TOKMGR_SEPARATE_COMPILATION (see tokmgr/tokmgr.hpp) the bodies are
// compiled once, in the file that includes <tokmgr/src.hpp>, and the other
// files do not parse simdjson.h.
#if defined(TOKMGR_SEPARATE_COMPILATION)
namespace simdjson::dom {
class parser;
class object;
}  // namespace simdjson::dom
#define TOKMGR_SIMDJSON_DECL
#else
#include <simdjson.h>
#define TOKMGR_SIMDJSON_DECL inline
#endif

#include "../detail/json_rules.hpp"
#include "../detail/json_text.hpp"
#include "../errc.hpp"
#include "../token_set.hpp"

namespace tokmgr {

class simdjson_json {
public:
    TOKMGR_SIMDJSON_DECL std::string login_body(std::string_view user, std::string_view password) const;

    TOKMGR_SIMDJSON_DECL std::string refresh_body(std::string_view refresh_token) const;

    TOKMGR_SIMDJSON_DECL token_pair parse_token_response(std::string_view body, std::error_code& ec) const;

    TOKMGR_SIMDJSON_DECL jwt_claims parse_jwt_claims(std::string_view payload, std::error_code& ec) const;

    TOKMGR_SIMDJSON_DECL std::string error_message(std::string_view body) const;

private:
    /// One JSON object under the rules of detail/json_rules.hpp. simdjson
    /// itself refuses trailing bytes, out-of-range numbers and deeper nesting
    /// than json_max_depth (its default); the rest is checked here.
    TOKMGR_SIMDJSON_DECL static bool parse_object(simdjson::dom::parser& parser, std::string_view text,
                                                  simdjson::dom::object& object);

    TOKMGR_SIMDJSON_DECL static std::optional<std::int64_t> seconds_claim(simdjson::dom::object& object,
                                                                          const char* key);
};

}  // namespace tokmgr

#if !defined(TOKMGR_SEPARATE_COMPILATION)
#include "impl/simdjson.hpp"
#endif
