// tokmgr/detail/json_text.hpp — writing JSON strings, for JSON policies whose
// library has no writer (simdjson parses only).
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

inline std::string login_request_json(std::string_view user, std::string_view password) {
    std::string body;
    // Worst case (every byte escaped as \u00XX) reserved up front: one allocation,
    // so no reallocation leaves a copy of the password in freed memory.
    body.reserve(32 + 6 * (user.size() + password.size()));
    body += "{\"userName\":";
    append_json_string(body, user);
    body += ",\"password\":";
    append_json_string(body, password);
    body += '}';
    return body;
}

inline std::string refresh_request_json(std::string_view refresh_token) {
    std::string body;
    body.reserve(24 + 6 * refresh_token.size());
    body += "{\"refreshToken\":";
    append_json_string(body, refresh_token);
    body += '}';
    return body;
}

}  // namespace tokmgr::detail
