// tokmgr/detail/json_text.hpp — writing JSON strings, numbers and flat
// objects, for code whose JSON library has no writer (simdjson parses only).
// The Textual bodies built from them are in protocol/textual_api.hpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "../flat_object.hpp"

namespace tokmgr::detail {

/// Appends `value` as a JSON string literal (RFC 8259 §7). Bytes >= 0x80 pass
/// through: the input is taken to be UTF-8.
inline void append_json_string(std::string& out, std::string_view value) {
    static constexpr char hex[] = "0123456789abcdef";
    out += '"';
    for (char c : value) {
        const auto byte = static_cast<unsigned char>(c);
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (byte < 0x20) {
                out += "\\u00";
                out += hex[byte >> 4];
                out += hex[byte & 15];
            } else {
                out += c;
            }
        }
    }
    out += '"';
}

/// An integral value within ±2^53 (where every integer is exact) as an
/// integer, so that 3600 reads back as 3600 in any library; any other finite
/// value with the 17 digits that read back to the same double; NaN and the
/// infinities, which JSON cannot write, as null (as nlohmann does).
inline void append_json_number(std::string& out, double value) {
    constexpr double exact = 9007199254740992.0;  // 2^53
    char text[32];
    if (!std::isfinite(value)) {
        out += "null";
        return;
    }
    if (value == std::floor(value) && std::fabs(value) <= exact)
        std::snprintf(text, sizeof text, "%lld", static_cast<long long>(value));
    else
        std::snprintf(text, sizeof text, "%.17g", value);
    out += text;
}

/// `{"<name>":<value>,...}` in the members' order. The worst case (every
/// byte of a string escaped as \u00XX) is reserved up front: one
/// allocation, so no reallocation leaves a copy of a secret in freed memory.
inline std::string write_flat_object(const flat_object& object) {
    std::size_t worst = 2;
    for (const auto& member : object) worst += 6 * member.name.size() + 4 + 6 * member.text.size() + 32;
    std::string body;
    body.reserve(worst);
    body += '{';
    for (const auto& member : object) {
        if (body.size() != 1) body += ',';
        append_json_string(body, member.name);
        body += ':';
        switch (member.type) {
        case flat_member::kind::string: append_json_string(body, member.text.reveal()); break;
        case flat_member::kind::number: append_json_number(body, member.number); break;
        case flat_member::kind::boolean: body += member.boolean ? "true" : "false"; break;
        }
    }
    body += '}';
    return body;
}

}  // namespace tokmgr::detail
