// tokmgr/server/detail/request_parser.hpp — the reference server's HTTP/1.1
// request parser. Plain functions over bytes, no Asio, so every malformed
// input can be unit-tested without a socket.
//
// The parser is stateless: the connection appends what it reads to a buffer
// and asks again. Headers are capped (16 KiB), so re-scanning them while the
// body arrives costs little, and the body's size is known from Content-Length
// before any of it is read, which is what lets the server answer 413 without
// reading an oversized body.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../../detail/http_chars.hpp"
#include "../../http.hpp"

namespace tokmgr::server::detail {

struct request_limits {
    std::size_t max_header_bytes = 16 * 1024;  ///< request line plus headers
    std::size_t max_header_count = 100;
    std::size_t max_body_bytes = 64 * 1024;
};

struct parsed_request {
    std::string method;
    std::string target;  ///< origin-form, e.g. "/api/auth/login?x=1"
    int version_minor = 1;
    std::vector<http_header> headers;
    std::string body;
    bool keep_alive = true;

    /// The target without its query string.
    std::string_view path() const noexcept {
        std::string_view t(target);
        return t.substr(0, t.find('?'));
    }
};

enum class parse_state {
    incomplete,  ///< read more bytes and call again
    complete,    ///< `out` holds the request; drop `consumed` bytes from the buffer
    failed,      ///< answer `status` and close the connection
};

struct parse_outcome {
    parse_state state = parse_state::incomplete;
    std::size_t consumed = 0;     ///< bytes of the buffer that the request used
    int status = 0;               ///< HTTP status to answer when failed
    std::string_view reason;      ///< what was wrong, for the error body (no request content)
};

namespace parser_detail {

using namespace tokmgr::detail::http_chars;

inline parse_outcome fail(int status, std::string_view reason) noexcept {
    parse_outcome o;
    o.state = parse_state::failed;
    o.status = status;
    o.reason = reason;
    return o;
}

/// Content-Length: digits only, no sign, no overflow.
inline bool parse_length(std::string_view s, std::uint64_t& out) noexcept {
    if (s.empty() || s.size() > 18) return false;
    std::uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + std::uint64_t(c - '0');
    }
    out = v;
    return true;
}

}  // namespace parser_detail

/// Looks for one complete request at the start of `buffer`.
inline parse_outcome parse_request(std::string_view buffer, parsed_request& out, const request_limits& limits) {
    using namespace parser_detail;

    // RFC 9112 §2.2: a server should ignore empty lines before the request line.
    std::size_t start = 0;
    while (start + 1 < buffer.size() && buffer[start] == '\r' && buffer[start + 1] == '\n') start += 2;

    const auto header_end = buffer.find("\r\n\r\n", start);
    if (header_end == std::string_view::npos) {
        if (buffer.size() - start > limits.max_header_bytes)
            return fail(431, "the request line and headers are too large");
        return {};
    }
    if (header_end - start > limits.max_header_bytes) return fail(431, "the request line and headers are too large");

    std::string_view head = buffer.substr(start, header_end - start);
    const auto line_end = head.find("\r\n");
    std::string_view request_line = head.substr(0, line_end);
    head = line_end == std::string_view::npos ? std::string_view{} : head.substr(line_end + 2);

    // request-line = method SP request-target SP HTTP-version
    const auto sp1 = request_line.find(' ');
    const auto sp2 = sp1 == std::string_view::npos ? sp1 : request_line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || request_line.find(' ', sp2 + 1) != std::string_view::npos)
        return fail(400, "the request line is malformed");
    const auto method = request_line.substr(0, sp1);
    const auto target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
    const auto version = request_line.substr(sp2 + 1);
    if (!is_token(method)) return fail(400, "the request method is malformed");
    if (target.empty() || target.front() != '/') return fail(400, "the request target must be an absolute path");
    for (char c : target)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return fail(400, "the request target is malformed");
    if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' || version[5] < '0' ||
        version[5] > '9' || version[7] < '0' || version[7] > '9')
        return fail(400, "the HTTP version is malformed");
    if (version[5] != '1') return fail(505, "only HTTP/1.x is supported");

    out.method.assign(method);
    out.target.assign(target);
    out.version_minor = version[7] - '0';
    out.headers.clear();
    out.body.clear();

    bool have_length = false, have_host = false;
    std::uint64_t content_length = 0;
    bool close = false, keep_alive_token = false;
    while (!head.empty()) {
        const auto eol = head.find("\r\n");
        const auto line = head.substr(0, eol);
        head = eol == std::string_view::npos ? std::string_view{} : head.substr(eol + 2);
        if (line.front() == ' ' || line.front() == '\t') return fail(400, "folded header lines are not accepted");
        const auto colon = line.find(':');
        if (colon == std::string_view::npos || !is_token(line.substr(0, colon)))
            return fail(400, "a header line is malformed");
        const auto name = line.substr(0, colon);
        const auto value = trim_ows(line.substr(colon + 1));
        for (char c : value)
            if (c == '\r' || c == '\n' || c == '\0') return fail(400, "a header value is malformed");
        if (out.headers.size() == limits.max_header_count) return fail(431, "the request has too many headers");
        out.headers.push_back({std::string(name), std::string(value)});

        if (tokmgr::detail::iequals(name, "content-length")) {
            std::uint64_t n = 0;
            if (!parse_length(value, n)) return fail(400, "the Content-Length header is malformed");
            if (have_length && n != content_length) return fail(400, "the Content-Length headers disagree");
            have_length = true;
            content_length = n;
        } else if (tokmgr::detail::iequals(name, "transfer-encoding")) {
            // Chunked bodies are not needed by any client of this API; refusing
            // them keeps request smuggling (TE + CL) impossible by construction.
            return fail(501, "Transfer-Encoding is not supported: send the body with Content-Length");
        } else if (tokmgr::detail::iequals(name, "host")) {
            have_host = true;
        } else if (tokmgr::detail::iequals(name, "connection")) {
            close = close || list_contains(value, "close");
            keep_alive_token = keep_alive_token || list_contains(value, "keep-alive");
        }
    }
    if (out.version_minor >= 1 && !have_host) return fail(400, "an HTTP/1.1 request needs a Host header");
    out.keep_alive = out.version_minor >= 1 ? !close : (keep_alive_token && !close);

    if (content_length > limits.max_body_bytes) return fail(413, "the request body is too large");
    const std::size_t body_start = header_end + 4;
    if (buffer.size() - body_start < content_length) return {};
    out.body.assign(buffer.substr(body_start, static_cast<std::size_t>(content_length)));

    parse_outcome done;
    done.state = parse_state::complete;
    done.consumed = body_start + static_cast<std::size_t>(content_length);
    return done;
}

}  // namespace tokmgr::server::detail
