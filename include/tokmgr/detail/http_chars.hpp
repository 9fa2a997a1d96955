// tokmgr/detail/http_chars.hpp — the character classes and list syntax of
// HTTP/1.1 (RFC 9110 §5.6), shared by the transport's response parser and
// request writer and by the reference server's request parser.
#pragma once

#include <string_view>

#include "../http.hpp"

namespace tokmgr::detail::http_chars {

/// tchar: what a method, a header name or a token may contain.
inline bool is_token_char(char c) noexcept {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return true;
    default:
        return false;
    }
}

inline bool is_token(std::string_view s) noexcept {
    if (s.empty()) return false;
    for (char c : s)
        if (!is_token_char(c)) return false;
    return true;
}

/// Field values may hold visible characters, spaces, tabs and obs-text, never controls.
inline bool is_field_value_char(char c) noexcept {
    const auto u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7f);
}

inline std::string_view trim_ows(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

/// Calls f(element) for each comma-separated, trimmed, non-empty element.
template <class F>
void for_each_list_element(std::string_view list, F f) {
    while (true) {
        const std::size_t comma = list.find(',');
        const std::string_view element = trim_ows(list.substr(0, comma));
        if (!element.empty()) f(element);
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
inline bool list_contains(std::string_view value, std::string_view token) {
    bool found = false;
    for_each_list_element(value, [&](std::string_view element) { found = found || iequals(element, token); });
    return found;
}

}  // namespace tokmgr::detail::http_chars
