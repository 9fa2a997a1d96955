// tokmgr/transport/detail/url.hpp — the base URL a transport talks to.
//
// Asio-free so that it is unit-tested without a network. Accepts
// `http://` and `https://` with a host name, an IPv4 literal or a bracketed
// IPv6 literal, an optional port and an optional base path. Rejects what
// could leak or mislead: user information (credentials in a URL end up in
// logs), a query or fragment on the base URL, a scoped IPv6 address.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "../../detail/decimal.hpp"
#include "../../errc.hpp"
#include "../../error.hpp"

namespace tokmgr::detail {

struct parsed_url {
    bool tls = false;
    std::string host;            ///< without brackets, lower case
    bool host_is_ipv4 = false;
    bool host_is_ipv6 = false;
    std::uint16_t port = 0;      ///< explicit, or 80 / 443 by scheme
    bool default_port = true;    ///< the port was not given or equals the scheme's default
    std::string base_path;       ///< "" or "/textual" — never a trailing slash

    bool host_is_ip() const noexcept { return host_is_ipv4 || host_is_ipv6; }

    /// "https://host:port", IPv6 in brackets; no path, never credentials.
    std::string endpoint() const {
        std::string out = tls ? "https://" : "http://";
        out += host_for_authority();
        out += ':';
        out += std::to_string(port);
        return out;
    }

    /// The host as it appears in an authority: IPv6 literals in brackets.
    std::string host_for_authority() const { return host_is_ipv6 ? "[" + host + "]" : host; }

    /// The value of the Host header: the port only when it is not the default.
    std::string host_header() const {
        if (default_port) return host_for_authority();
        return host_for_authority() + ":" + std::to_string(port);
    }
};

namespace url_chars {

inline bool is_alpha(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
inline bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
inline bool is_hex(char c) noexcept {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
inline char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

/// RFC 3986 pchar plus '/', which is what a path may hold (percent escapes checked separately).
inline bool is_path_char(char c) noexcept {
    if (is_alpha(c) || is_digit(c)) return true;
    switch (c) {
    case '-': case '.': case '_': case '~':                                  // unreserved
    case '!': case '$': case '&': case '\'': case '(': case ')': case '*':  // sub-delims
    case '+': case ',': case ';': case '=':
    case ':': case '@': case '/': case '%':
        return true;
    default:
        return false;
    }
}

}  // namespace url_chars

/// True for a dotted quad of four decimal octets 0-255 without leading zeros.
inline bool is_ipv4_literal(std::string_view s) noexcept {
    int parts = 0;
    std::size_t i = 0;
    while (true) {
        std::size_t start = i;
        unsigned value = 0;
        while (i < s.size() && url_chars::is_digit(s[i])) {
            value = value * 10 + static_cast<unsigned>(s[i] - '0');
            if (value > 255) return false;
            ++i;
        }
        const std::size_t len = i - start;
        if (len == 0 || len > 3 || (len > 1 && s[start] == '0')) return false;
        ++parts;
        if (i == s.size()) break;
        if (s[i] != '.' || parts == 4) return false;
        ++i;
    }
    return parts == 4;
}

/// True for an RFC 4291 textual IPv6 address (no zone index).
inline bool is_ipv6_literal(std::string_view s) noexcept {
    if (s.empty()) return false;
    int groups = 0;
    bool compressed = false;
    std::size_t i = 0;
    if (s.size() >= 2 && s[0] == ':' && s[1] == ':') {
        compressed = true;
        i = 2;
        if (i == s.size()) return true;  // "::"
    } else if (s[0] == ':') {
        return false;
    }
    while (i < s.size()) {
        // An embedded IPv4 address may end the address.
        const std::size_t colon = s.find(':', i);
        const std::string_view rest = s.substr(i, colon == std::string_view::npos ? std::string_view::npos : colon - i);
        if (colon == std::string_view::npos && rest.find('.') != std::string_view::npos) {
            if (!is_ipv4_literal(rest)) return false;
            groups += 2;
            i = s.size();
            break;
        }
        if (rest.empty() || rest.size() > 4) return false;
        for (char c : rest)
            if (!url_chars::is_hex(c)) return false;
        ++groups;
        i += rest.size();
        if (i == s.size()) break;
        ++i;  // the ':'
        if (i < s.size() && s[i] == ':') {
            if (compressed) return false;  // at most one "::"
            compressed = true;
            ++i;
            if (i == s.size()) break;
        } else if (i == s.size()) {
            return false;  // a single trailing ':'
        }
    }
    return compressed ? groups <= 7 : groups == 8;
}

/// Fills `out` from `url`, or sets `failed` to errc::invalid_url and a reason
/// (the reason never repeats the URL, which may hold a secret by mistake).
inline bool parse_url(std::string_view url, parsed_url& out, error_info& failed) {
    auto fail = [&](const char* reason) {
        failed = {make_error_code(errc::invalid_url), reason};
        return false;
    };
    out = parsed_url{};
    const std::size_t scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos) return fail("the URL must start with http:// or https://");
    std::string scheme;
    for (char c : url.substr(0, scheme_end)) scheme += url_chars::lower(c);
    if (scheme == "https") out.tls = true;
    else if (scheme != "http") return fail("the scheme must be http or https");
    out.port = out.tls ? 443 : 80;

    std::string_view rest = url.substr(scheme_end + 3);
    const std::size_t authority_end = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, authority_end);
    std::string_view path = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);
    if (authority.find('@') != std::string_view::npos)
        return fail("the URL must not contain a user name or password; pass credentials separately");
    if (authority.empty()) return fail("the URL has no host");

    std::string_view host;
    std::string_view port_text;
    bool has_port = false;
    if (authority.front() == '[') {
        const std::size_t close = authority.find(']');
        if (close == std::string_view::npos) return fail("an IPv6 address must be closed by ']'");
        host = authority.substr(1, close - 1);
        if (host.find('%') != std::string_view::npos) return fail("a scoped IPv6 address (with a zone) is not supported");
        if (!is_ipv6_literal(host)) return fail("the IPv6 address is malformed");
        out.host_is_ipv6 = true;
        const std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return fail("unexpected characters after the IPv6 address");
            port_text = after.substr(1);
            has_port = true;
        }
    } else {
        const std::size_t colon = authority.find(':');
        host = authority.substr(0, colon);
        if (colon != std::string_view::npos) {
            port_text = authority.substr(colon + 1);
            has_port = true;
        }
        if (host.empty()) return fail("the URL has no host");
        for (char c : host) {
            if (!(url_chars::is_alpha(c) || url_chars::is_digit(c) || c == '-' || c == '.' || c == '_'))
                return fail("the host name contains a character that is not allowed");
        }
        if (host.front() == '.' || host.front() == '-') return fail("the host name is malformed");
        out.host_is_ipv4 = is_ipv4_literal(host);
        // A name made only of digits and dots that is not a valid address is a typo, not a name.
        bool digits_and_dots = true;
        for (char c : host) digits_and_dots = digits_and_dots && (url_chars::is_digit(c) || c == '.');
        if (digits_and_dots && !out.host_is_ipv4) return fail("the IPv4 address is malformed");
    }
    for (char c : host) out.host += url_chars::lower(c);

    if (has_port) {
        const auto parsed = port_text.size() <= 5 ? parse_decimal<unsigned>(port_text) : std::nullopt;
        const unsigned value = parsed.value_or(0);
        if (value == 0 || value > 65535) return fail("the port must be a number from 1 to 65535");
        out.port = static_cast<std::uint16_t>(value);
        out.default_port = value == (out.tls ? 443u : 80u);
    }

    if (!path.empty() && (path.front() == '?' || path.front() == '#' ||
                          path.find_first_of("?#") != std::string_view::npos))
        return fail("the base URL must not have a query or fragment");
    for (std::size_t i = 0; i < path.size(); ++i) {
        const char c = path[i];
        if (!url_chars::is_path_char(c)) return fail("the base path contains a character that must be percent-encoded");
        if (c == '%' && (i + 2 >= path.size() || !url_chars::is_hex(path[i + 1]) || !url_chars::is_hex(path[i + 2])))
            return fail("the base path has a malformed percent escape");
    }
    while (!path.empty() && path.back() == '/') path.remove_suffix(1);
    out.base_path = std::string(path);
    failed = {};
    return true;
}

}  // namespace tokmgr::detail
