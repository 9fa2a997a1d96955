// tokmgr/server/detail/request_parser.hpp — the reference server's HTTP/1.1
// request parser. Plain code over bytes, no Asio, so every malformed input can
// be unit-tested (and fuzzed) without a socket.
//
// The connection appends what it reads to a buffer and asks `request_reader`
// again. The reader remembers how far it has checked the buffer, so each byte
// is looked at once however the request is split across reads (a client that
// trickles a 16 KiB head byte by byte costs 16 KiB of work, not 16 KiB
// squared), and its verdict depends only on the bytes, never on how they
// arrived. The head (any empty lines before the request line, the request
// line, the headers and the blank line) is capped as a whole; the body's size
// is known from Content-Length before any of it is read, which is what lets
// the server answer 413 without reading an oversized body.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../../detail/decimal.hpp"
#include "../../detail/http_chars.hpp"
#include "../../http.hpp"

namespace tokmgr::server::detail {

struct request_limits {
    /// The whole head: empty lines before the request line, the request line,
    /// the headers and the blank line that ends them, CR LF included.
    std::size_t max_header_bytes = 16 * 1024;
    /// RFC 9112 §2.2 asks a server to ignore "at least one" empty line before
    /// the request line; a few cover clients that add CR LF after a body.
    std::size_t max_leading_empty_lines = 4;
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
    const auto length = tokmgr::detail::parse_decimal<std::uint64_t>(s);
    if (length) out = *length;
    return length.has_value();
}

}  // namespace parser_detail

/// Finds one request at the start of a buffer that grows between calls.
/// After `complete` or `failed` it starts afresh, so the caller drops the
/// consumed bytes and calls again for a pipelined request.
class request_reader {
public:
    explicit request_reader(request_limits limits = {}) noexcept : limits_(limits) {}

    /// `buffer` holds every byte of the request received so far, from its
    /// first; it may hold more (a pipelined request) and must not change
    /// except by growing at the end between calls.
    parse_outcome parse(std::string_view buffer, parsed_request& out) {
        if (!head_done_) {
            const auto outcome = scan_head(buffer);
            if (outcome.state != parse_state::complete) return finish(outcome);
            const auto parsed = parse_head(buffer.substr(request_start_, head_end_ - 2 - request_start_), out);
            if (parsed.state == parse_state::failed) return finish(parsed);
            head_done_ = true;
        }
        if (buffer.size() - head_end_ < content_length_) return {};
        out.body.assign(buffer.substr(head_end_, static_cast<std::size_t>(content_length_)));
        parse_outcome done;
        done.state = parse_state::complete;
        done.consumed = head_end_ + static_cast<std::size_t>(content_length_);
        return finish(done);
    }

private:
    parse_outcome finish(const parse_outcome& outcome) noexcept {
        if (outcome.state != parse_state::incomplete) *this = request_reader(limits_);
        return outcome;
    }

    /// Checks each new byte once: lines end in CR LF only (RFC 9112 §2.2: a
    /// bare CR must be refused, and a bare LF is refused here too, since a
    /// server that guesses where a line ends is how requests get smuggled).
    /// Complete when the blank line ending the head has arrived.
    parse_outcome scan_head(std::string_view buffer) {
        using parser_detail::fail;
        for (std::size_t i = scanned_; i < buffer.size(); ++i) {
            // Byte i belongs to the head, so the head is longer than i bytes.
            if (i >= limits_.max_header_bytes) return fail(431, "the request line and headers are too large");
            const char c = buffer[i];
            if (i > 0 && buffer[i - 1] == '\r' && c != '\n')
                return fail(400, "a CR not followed by LF: end every line with CR LF");
            if (c != '\n') continue;
            if (i == 0 || buffer[i - 1] != '\r') return fail(400, "a line ends in a bare LF: end every line with CR LF");
            const bool empty_line = i - 1 == line_start_;
            line_start_ = i + 1;
            if (!empty_line) continue;
            if (line_start_ - 2 == request_start_) {  // nothing but empty lines so far
                if (++empty_lines_ > limits_.max_leading_empty_lines)
                    return fail(400, "too many empty lines before the request line");
                request_start_ = line_start_;
                continue;
            }
            scanned_ = i + 1;
            head_end_ = i + 1;
            parse_outcome found;
            found.state = parse_state::complete;
            return found;
        }
        scanned_ = buffer.size();
        return {};
    }

    /// The request line and headers, CR LF separated, without the blank line.
    parse_outcome parse_head(std::string_view head, parsed_request& out) {
        using namespace parser_detail;
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
                if (c == '\0') return fail(400, "a header value is malformed");
            if (out.headers.size() == limits_.max_header_count) return fail(431, "the request has too many headers");
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
        if (content_length > limits_.max_body_bytes) return fail(413, "the request body is too large");
        content_length_ = content_length;
        parse_outcome parsed;
        parsed.state = parse_state::complete;
        return parsed;
    }

    request_limits limits_;
    std::size_t scanned_ = 0;        ///< bytes of the buffer already checked
    std::size_t line_start_ = 0;     ///< first byte of the line being scanned
    std::size_t request_start_ = 0;  ///< first byte after the leading empty lines
    std::size_t empty_lines_ = 0;
    std::size_t head_end_ = 0;       ///< one past the blank line's LF
    bool head_done_ = false;
    std::uint64_t content_length_ = 0;
};

/// Looks for one complete request at the start of `buffer`, in one call.
inline parse_outcome parse_request(std::string_view buffer, parsed_request& out, const request_limits& limits) {
    request_reader reader(limits);
    return reader.parse(buffer, out);
}

}  // namespace tokmgr::server::detail
