// tokmgr/transport/detail/request_writer.hpp — serialises one HTTP/1.1 request
// into one buffer, so that it leaves in one write.
//
// Asio-free. Refuses anything that could split the request or inject a header
// (line breaks in the method, target or a header), because the caller's
// headers may be built from data it does not control. Error descriptions name
// the offending header but never its value (it may be an Authorization value).
#pragma once

#include <string>
#include <string_view>
#include <system_error>

#include "../../errc.hpp"
#include "../../error.hpp"
#include "../../http.hpp"
#include "../../detail/http_chars.hpp"
#include "url.hpp"

namespace tokmgr::detail {

inline constexpr std::string_view user_agent = "tokmgr/0.1";

/// The request line's target: the base path joined with the request's target.
/// The target must be empty or start with '/'; otherwise sets `failed` to
/// errc::invalid_configuration and a reason.
inline bool join_target(const parsed_url& url, std::string_view target, std::string& out, error_info& failed) {
    auto fail = [&](const char* reason) {
        failed = {make_error_code(errc::invalid_configuration), reason};
        return false;
    };
    if (!target.empty() && target.front() != '/') return fail("the request target must start with '/'");
    for (char c : target) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u == 0x7f) return fail("the request target contains a space or control character");
    }
    out = url.base_path;
    out += target.empty() ? std::string_view("/") : target;
    if (out.empty()) out = "/";
    failed = {};
    return true;
}

/// How a request travels when it goes to an HTTP proxy instead of the server.
struct proxy_request_form {
    /// The request line names the whole URL ("POST http://host:port/path"),
    /// which a proxy needs for a plain-HTTP request.
    bool absolute_target = false;
    /// "Basic ..." for `Proxy-Authorization`, or empty. A secret.
    std::string_view proxy_authorization;
};

/// Writes the whole request into `out`, or sets `failed` to
/// errc::invalid_configuration and a reason. The caller wipes `out` after the
/// write: it holds the body, which may be a password or a refresh token.
inline bool write_request(const parsed_url& url, const http_request& request, bool keep_alive, std::string& out,
                          error_info& failed, const proxy_request_form& via_proxy = {}) {
    auto fail = [&](std::string reason) {
        failed = {make_error_code(errc::invalid_configuration), std::move(reason)};
        return false;
    };
    if (request.method.empty()) return fail("the request method is empty");
    for (char c : request.method)
        if (!http_chars::is_token_char(c)) return fail("the request method contains a character that is not allowed");
    std::string target;
    if (!join_target(url, request.target, target, failed)) return false;
    for (char c : request.content_type)
        if (!http_chars::is_field_value_char(c)) return fail("the content type contains a control character");
    for (const auto& h : request.headers) {
        if (h.name.empty()) return fail("a request header has an empty name");
        for (char c : h.name)
            if (!http_chars::is_token_char(c)) return fail("a request header name contains a character that is not allowed");
        for (char c : h.value)
            if (!http_chars::is_field_value_char(c))
                return fail("the value of request header '" + h.name + "' contains a line break or control character");
        // These describe the framing, which the transport owns.
        if (iequals(h.name, "Content-Length") || iequals(h.name, "Transfer-Encoding") || iequals(h.name, "Host") ||
            iequals(h.name, "Connection") || iequals(h.name, "Proxy-Authorization"))
            return fail("the request header '" + h.name + "' is set by the transport and may not be given");
    }

    const bool has_body = !request.body.empty() || !(request.method == "GET" || request.method == "HEAD");
    // Reserved in full up front: a reallocation would leave a copy of the
    // body (and of an Authorization value) behind in freed memory.
    std::size_t header_bytes = 0;
    for (const auto& h : request.headers) header_bytes += h.name.size() + h.value.size() + 4;
    out.clear();
    out.reserve(256 + target.size() + 2 * url.host_header().size() + request.content_type.size() + header_bytes +
                via_proxy.proxy_authorization.size() + request.body.size());
    out.append(request.method.data(), request.method.size());
    out += ' ';
    if (via_proxy.absolute_target) {
        out += url.tls ? "https://" : "http://";
        out += url.host_header();
    }
    out += target;
    out += " HTTP/1.1\r\nHost: ";
    out += url.host_header();
    out += "\r\n";
    // Defaults the caller may replace with its own.
    if (!find_header(request.headers, "User-Agent")) {
        out += "User-Agent: ";
        out += user_agent;
        out += "\r\n";
    }
    if (!find_header(request.headers, "Accept")) out += "Accept: application/json\r\n";
    if (!keep_alive) out += "Connection: close\r\n";
    if (!via_proxy.proxy_authorization.empty()) {
        out += "Proxy-Authorization: ";
        out.append(via_proxy.proxy_authorization.data(), via_proxy.proxy_authorization.size());
        out += "\r\n";
    }
    if (has_body) {
        if (!request.content_type.empty()) {
            out += "Content-Type: ";
            out.append(request.content_type.data(), request.content_type.size());
            out += "\r\n";
        }
        out += "Content-Length: ";
        out += std::to_string(request.body.size());
        out += "\r\n";
    }
    for (const auto& h : request.headers) {
        out += h.name;
        out += ": ";
        out += h.value;
        out += "\r\n";
    }
    out += "\r\n";
    out.append(request.body.data(), request.body.size());
    failed = {};
    return true;
}

/// The CONNECT request that asks a proxy for a tunnel to the server.
inline void write_connect_request(const parsed_url& url, std::string_view proxy_authorization, std::string& out) {
    const std::string authority = url.host_for_authority() + ":" + std::to_string(url.port);
    out.clear();
    out.reserve(128 + 2 * authority.size() + proxy_authorization.size());
    out += "CONNECT ";
    out += authority;
    out += " HTTP/1.1\r\nHost: ";
    out += authority;
    out += "\r\nUser-Agent: ";
    out += user_agent;
    out += "\r\n";
    if (!proxy_authorization.empty()) {
        out += "Proxy-Authorization: ";
        out.append(proxy_authorization.data(), proxy_authorization.size());
        out += "\r\n";
    }
    out += "\r\n";
}

}  // namespace tokmgr::detail
