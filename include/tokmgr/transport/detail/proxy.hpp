// tokmgr/transport/detail/proxy.hpp — which HTTP proxy (if any) a transport
// goes through: the proxy URL with its credentials, the NO_PROXY matcher, and
// the choice between the options and the environment, following curl.
//
// Asio-free so that the rules are unit-tested without a network, and the
// environment is read through a function the tests replace.
//
// The proxy's user name and password never leave this file except inside the
// `Proxy-Authorization` value, which is a secret: error texts name the proxy
// by scheme, host and port only, and never repeat the text they could not
// parse (it may hold the password).
#pragma once

#include <arpa/inet.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>

#include "../../detail/base64url.hpp"
#include "../../detail/percent.hpp"
#include "../../errc.hpp"
#include "../../error.hpp"
#include "../../http.hpp"
#include "../../secret.hpp"
#include "url.hpp"

namespace tokmgr::detail {

/// The proxy a transport goes through; `enabled` false: a direct connection.
struct proxy_route {
    bool enabled = false;
    parsed_url address;           ///< host and port of the proxy (plain http)
    std::string endpoint;         ///< "http://host:port": what messages and events name
    std::string source;           ///< "the proxy option", "HTTPS_PROXY", ...: where it came from
    secret authorization;         ///< "Basic ..." when the URL carried credentials, else empty
};

namespace proxy_text {

inline std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

/// Standard base64 with padding (RFC 4648 §4), which Basic authentication uses.
inline std::string base64_encode(std::string_view in) {
    std::string out = base64url_encode(in);
    for (char& c : out) {
        if (c == '-') c = '+';
        else if (c == '_') c = '/';
    }
    out.reserve(out.size() + 3);
    while (out.size() % 4 != 0) out += '=';
    return out;
}

}  // namespace proxy_text

/// Parses `http://[user[:password]@]host[:port][/]` (the scheme may be left
/// out; the port defaults to 1080, as curl's does). An `https://` proxy (TLS to
/// the proxy itself) and other schemes are refused. On failure sets
/// `failed` to errc::invalid_configuration and a reason that never repeats `text`.
inline bool parse_proxy_url(std::string_view text, proxy_route& out, error_info& failed) {
    auto fail = [&](std::string reason) {
        failed = {make_error_code(errc::invalid_configuration), std::move(reason)};
        out.authorization.clear();
        return false;
    };
    text = proxy_text::trim(text);
    std::string_view rest = text;
    if (const auto scheme_end = text.find("://"); scheme_end != std::string_view::npos) {
        const std::string_view scheme = text.substr(0, scheme_end);
        if (iequals(scheme, "https"))
            return fail("an https:// proxy (TLS to the proxy itself) is not supported; use an http:// proxy, which "
                        "still carries https:// requests end-to-end encrypted through CONNECT");
        if (!iequals(scheme, "http")) return fail("the proxy scheme must be http://");
        rest = text.substr(scheme_end + 3);
    }
    const std::size_t authority_end = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, authority_end);
    if (authority_end != std::string_view::npos && rest.substr(authority_end) != "/")
        return fail("the proxy URL must not have a path, query or fragment");

    // The last '@' ends the credentials: a password may contain an unescaped '@'.
    if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
        const std::string_view userinfo = authority.substr(0, at);
        authority = authority.substr(at + 1);
        const auto colon = userinfo.find(':');
        std::string user;
        std::string password;
        const bool decoded = percent_decode(userinfo.substr(0, colon), user) &&
                             (colon == std::string_view::npos ||
                              percent_decode(userinfo.substr(colon + 1), password));
        if (!decoded || user.empty()) {
            secure_clear(user);
            secure_clear(password);
            return fail("the proxy URL's user name or password is malformed (empty, or a bad percent escape)");
        }
        std::string pair = user + ":" + password;
        secure_clear(user);
        secure_clear(password);
        std::string encoded = proxy_text::base64_encode(pair);
        secure_clear(pair);
        out.authorization = secret("Basic " + encoded);
        secure_clear(encoded);
    } else {
        out.authorization.clear();
    }
    if (authority.empty()) return fail("the proxy URL has no host");

    // The host and port follow the base URL's rules; only the default port differs.
    bool explicit_port = false;
    if (authority.front() == '[') {
        const auto close = authority.find(']');
        explicit_port = close != std::string_view::npos && close + 1 < authority.size();
    } else {
        explicit_port = authority.find(':') != std::string_view::npos;
    }
    error_info url_failed;
    if (!parse_url("http://" + std::string(authority), out.address, url_failed))
        return fail("the proxy URL is not usable: " + url_failed.detail);
    if (!explicit_port) {
        out.address.port = 1080;
        out.address.default_port = false;
    }
    out.endpoint = out.address.endpoint();
    out.enabled = true;
    failed = {};
    return true;
}

namespace no_proxy_detail {

/// `text` as an IPv4 or IPv6 address (IPv6 with or without brackets), in
/// network order in `bytes`; the number of bytes (4 or 16), or 0.
inline int parse_ip(std::string_view text, unsigned char (&bytes)[16]) {
    if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
    if (text.empty() || text.size() > 45) return 0;
    char buffer[46];
    std::memcpy(buffer, text.data(), text.size());
    buffer[text.size()] = '\0';
    if (is_ipv4_literal(text) && ::inet_pton(AF_INET, buffer, bytes) == 1) return 4;
    if (is_ipv6_literal(text) && ::inet_pton(AF_INET6, buffer, bytes) == 1) return 16;
    return 0;
}

/// Whether the first `bits` bits of two addresses of `size` bytes agree.
inline bool prefix_equal(const unsigned char* a, const unsigned char* b, int size, int bits) {
    for (int i = 0; i < size && bits > 0; ++i, bits -= 8) {
        const unsigned mask = bits >= 8 ? 0xFFu : (0xFFu << (8 - bits)) & 0xFFu;
        if ((a[i] & mask) != (b[i] & mask)) return false;
    }
    return true;
}

/// One entry of the list without its port: "host:port" → "host",
/// "[::1]:8080" → "::1"; an unbracketed IPv6 address keeps its colons.
inline std::string_view without_port(std::string_view entry) {
    if (!entry.empty() && entry.front() == '[') {
        const auto close = entry.find(']');
        return close == std::string_view::npos ? entry : entry.substr(1, close - 1);
    }
    const auto colon = entry.find(':');
    if (colon != std::string_view::npos && entry.find(':', colon + 1) == std::string_view::npos)
        return entry.substr(0, colon);
    return entry;
}

}  // namespace no_proxy_detail

/// Whether `host` (a name, or an IP literal without brackets, as parsed_url
/// keeps it) is exempt from the proxy under `list`, by curl's rules: entries
/// separated by commas (and spaces); "*" alone exempts every host; a name
/// matches itself and every name under it ("example.com" and ".example.com"
/// both match "example.com" and "api.example.com", never "badexample.com");
/// case and a trailing dot are ignored; an IP address matches only an equal
/// address or a CIDR range ("10.0.0.0/8", "fd00::/8"), never a name suffix;
/// a port in an entry is ignored.
inline bool no_proxy_matches(std::string_view list, std::string_view host) {
    if (!host.empty() && host.back() == '.') host.remove_suffix(1);
    if (host.empty()) return false;
    unsigned char host_ip[16];
    const int host_ip_size = no_proxy_detail::parse_ip(host, host_ip);
    std::size_t start = 0;
    while (start <= list.size()) {
        std::size_t end = list.find_first_of(", \t", start);
        if (end == std::string_view::npos) end = list.size();
        std::string_view entry = list.substr(start, end - start);
        start = end + 1;
        if (entry.empty()) continue;
        if (entry == "*") return true;
        if (host_ip_size != 0) {
            int bits = host_ip_size * 8;
            std::string_view address = entry;
            if (const auto slash = entry.find('/'); slash != std::string_view::npos) {
                address = entry.substr(0, slash);
                const std::string_view length = entry.substr(slash + 1);
                const auto value = length.size() <= 3 ? parse_decimal<int>(length) : std::nullopt;
                if (!value || *value > host_ip_size * 8) continue;
                bits = *value;
            } else {
                address = no_proxy_detail::without_port(entry);
            }
            unsigned char entry_ip[16];
            if (no_proxy_detail::parse_ip(address, entry_ip) == host_ip_size &&
                no_proxy_detail::prefix_equal(host_ip, entry_ip, host_ip_size, bits))
                return true;
            continue;
        }
        entry = no_proxy_detail::without_port(entry);
        if (!entry.empty() && entry.front() == '.') entry.remove_prefix(1);
        if (!entry.empty() && entry.back() == '.') entry.remove_suffix(1);
        if (entry.empty()) continue;
        if (entry.size() == host.size()) {
            if (iequals(entry, host)) return true;
        } else if (entry.size() < host.size() && host[host.size() - entry.size() - 1] == '.' &&
                   iequals(entry, host.substr(host.size() - entry.size()))) {
            return true;
        }
    }
    return false;
}

/// Reads an environment variable; empty when unset. Replaced in tests.
using environment_reader = std::function<std::string(const char*)>;

inline std::string process_environment(const char* name) {
    const char* value = std::getenv(name);
    return value ? std::string(value) : std::string();
}

/// The proxy for requests to `origin`, curl's way:
///  1. the proxy: `proxy_option` when not empty; else, if `use_environment`,
///     `https_proxy` then `HTTPS_PROXY` for an https:// origin, `http_proxy`
///     (lower case only) for an http:// one, then `all_proxy`, `ALL_PROXY`;
///  2. the exemptions: `no_proxy_option` when not empty; else, if
///     `use_environment`, `no_proxy` then `NO_PROXY`. They apply to the proxy
///     from either source.
/// An empty variable counts as unset. `HTTP_PROXY` in upper case is not read
/// for http:// (curl does not either): a CGI program receives a request's
/// `Proxy:` header as that variable ("httpoxy").
/// Sets `failed` to errc::invalid_configuration, with a reason naming the
/// source, for a proxy URL that cannot be used; `out.enabled` is false for a
/// direct connection.
inline bool select_proxy(const parsed_url& origin, std::string_view proxy_option, std::string_view no_proxy_option,
                         bool use_environment, const environment_reader& environment, proxy_route& out,
                         error_info& failed) {
    out = proxy_route{};
    failed = {};
    std::string chosen;
    std::string source;
    if (!proxy_option.empty()) {
        chosen = std::string(proxy_option);
        source = "the proxy option";
    } else if (use_environment) {
        const char* const https_names[] = {"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
        const char* const http_names[] = {"http_proxy", "all_proxy", "ALL_PROXY"};
        const auto try_names = [&](auto& names) {
            for (const char* name : names) {
                chosen = environment(name);
                if (!chosen.empty()) {
                    source = name;
                    return;
                }
            }
        };
        if (origin.tls) try_names(https_names);
        else try_names(http_names);
    }
    if (chosen.empty()) return true;

    std::string exemptions(no_proxy_option);
    if (exemptions.empty() && use_environment) {
        exemptions = environment("no_proxy");
        if (exemptions.empty()) exemptions = environment("NO_PROXY");
    }
    if (no_proxy_matches(exemptions, origin.host)) {
        secure_clear(chosen);
        return true;
    }
    const bool parsed = parse_proxy_url(chosen, out, failed);
    secure_clear(chosen);
    if (!parsed) {
        failed.detail = "the proxy URL (from " + source + ") cannot be used: " + failed.detail;
        out = proxy_route{};
        return false;
    }
    out.source = source;
    return true;
}

}  // namespace tokmgr::detail
