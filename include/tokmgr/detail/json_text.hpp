// tokmgr/detail/json_text.hpp — writing JSON strings, for code whose JSON
// library has no writer (simdjson parses only). The bodies built from them
// are in protocol/textual_api.hpp.
#pragma once

#include <string>
#include <string_view>

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

}  // namespace tokmgr::detail
