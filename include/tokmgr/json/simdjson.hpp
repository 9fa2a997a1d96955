// tokmgr/json/simdjson.hpp — the default Json policy, on simdjson's DOM API.
//
// What it accepts is defined once for every policy in detail/json_rules.hpp,
// and the member names it reads and writes once in protocol/textual_api.hpp.
//
// A Protocol policy reads and writes through flat objects (flat_object.hpp)
// rather than a generic "parse, then get a member by name" document as in
// jwt-cpp: the policy decides where a password or a token is copied, and
// each library needs a different answer (one reserved allocation here,
// nlohmann's replacement of bytes that are not UTF-8), while no parsed
// document outlives the call; string values leave as `secret`s. The
// Textual-shaped members (login_body, ...) are kept as conveniences outside
// the concept, for code that called them.
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
#include "../flat_object.hpp"
#include "../protocol/textual_api.hpp"
#include "../token_set.hpp"

namespace tokmgr {

class simdjson_json {
public:
    TOKMGR_SIMDJSON_DECL std::string login_body(std::string_view user, std::string_view password) const;

    TOKMGR_SIMDJSON_DECL std::string refresh_body(std::string_view refresh_token) const;

    TOKMGR_SIMDJSON_DECL token_pair parse_token_response(std::string_view body, std::error_code& ec) const;

    TOKMGR_SIMDJSON_DECL jwt_claims parse_jwt_claims(std::string_view payload, std::error_code& ec) const;

    TOKMGR_SIMDJSON_DECL std::string error_message(std::string_view body) const;

    /// Json 6 and 7 (tokmgr/concepts.hpp).
    TOKMGR_SIMDJSON_DECL std::string write_object(const flat_object& object) const;
    TOKMGR_SIMDJSON_DECL flat_object read_object(std::string_view body, std::error_code& ec) const;

private:
    /// One JSON object under the rules of detail/json_rules.hpp. simdjson
    /// itself refuses trailing bytes, out-of-range numbers and deeper nesting
    /// than json_max_depth (its default); the rest is checked here.
    TOKMGR_SIMDJSON_DECL static bool parse_object(simdjson::dom::parser& parser, std::string_view text,
                                                  simdjson::dom::object& object);

    TOKMGR_SIMDJSON_DECL static std::optional<std::int64_t> seconds_claim(simdjson::dom::object& object,
                                                                          std::string_view key);
};

}  // namespace tokmgr

#if !defined(TOKMGR_SEPARATE_COMPILATION)
#include "impl/simdjson.hpp"
#endif
