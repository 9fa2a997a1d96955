// tokmgr/server/detail/reply.hpp — the reference server's answers: a status,
// a JSON body, a few headers, and their HTTP/1.1 wire form. No Asio.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "../../detail/json_text.hpp"
#include "../../http.hpp"
#include "../../protocol/textual_api.hpp"

namespace tokmgr::server::detail {

struct reply {
    int status = 200;
    std::string body;                  ///< JSON
    std::vector<http_header> headers;  ///< beyond Content-Type, Content-Length and Connection
    bool close = false;                ///< close the connection after this answer
};

inline std::string_view reason_phrase(int status) noexcept {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

using tokmgr::detail::append_json_string;

/// `{"title": "<reason phrase>", "detail": "<detail>"}` — the detail is always
/// the server's own text, never a part of the request, so nothing a client
/// sent (a password, a token) can come back in an error.
inline reply error_reply(int status, std::string_view detail) {
    reply r;
    r.status = status;
    r.body = protocol::error_json(reason_phrase(status), detail);
    return r;
}

/// The wire form: status line, headers, blank line, body.
inline std::string serialize(const reply& r, bool keep_alive) {
    std::string out;
    out.reserve(160 + r.body.size());
    out += "HTTP/1.1 ";
    out += std::to_string(r.status);
    out += ' ';
    out += reason_phrase(r.status);
    out += "\r\nContent-Type: application/json\r\nContent-Length: ";
    out += std::to_string(r.body.size());
    out += keep_alive && !r.close ? "\r\nConnection: keep-alive" : "\r\nConnection: close";
    for (const auto& h : r.headers) {
        out += "\r\n";
        out += h.name;
        out += ": ";
        out += h.value;
    }
    out += "\r\n\r\n";
    out += r.body;
    return out;
}

}  // namespace tokmgr::server::detail
