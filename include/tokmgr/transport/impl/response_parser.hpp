// tokmgr/transport/impl/response_parser.hpp — bodies of detail::response_parser.
#pragma once

#include <algorithm>
#include <limits>

#include "../../detail/decimal.hpp"
#include "../../detail/http_chars.hpp"

namespace tokmgr::detail {

inline bool response_parser::fail(std::error_code& ec, errc code, std::string detail) {
    ec = make_error_code(code);
    last_error_ = {ec, std::move(detail)};
    state_ = state::done;  // nothing more is consumed
    keep_alive_ = false;
    return false;
}

// Moves bytes into line_ up to and including '\n'. `complete` is set when the
// line ended. The status line and header fields may end in a bare LF (RFC
// 9112 §2.2 lets a recipient accept it); the chunked framing may not (§7.1
// spells it CRLF, and strict parsers refuse anything else, so a parser that
// guesses here reads a different message than the proxy in front of it).
inline bool response_parser::take_line(std::string_view data, std::size_t& used, bool& complete,
                                       std::error_code& ec) {
    complete = false;
    const std::size_t newline = data.find('\n');
    const std::size_t take = newline == std::string_view::npos ? data.size() : newline + 1;
    header_bytes_ += take;
    if (header_bytes_ > limits_.max_header_bytes)
        return fail(ec, errc::response_too_large,
                    "the response headers exceed " + std::to_string(limits_.max_header_bytes) + " bytes");
    line_.append(data.data(), take);
    used += take;
    if (newline != std::string_view::npos) {
        line_.pop_back();
        const bool crlf = !line_.empty() && line_.back() == '\r';
        if (crlf) line_.pop_back();
        else if (in_chunked_framing())
            return fail(ec, errc::protocol_error, "a line of the chunked framing ends in a bare LF instead of CR LF");
        complete = true;
    }
    return true;
}

inline std::size_t response_parser::feed(std::string_view data, std::error_code& ec) {
    ec.clear();
    std::size_t used = 0;
    while (used < data.size() && state_ != state::done) {
        const std::string_view rest = data.substr(used);
        switch (state_) {
        case state::status_line:
        case state::header_line:
        case state::chunk_size:
        case state::trailer_line: {
            bool complete = false;
            const std::size_t before = used;
            if (!take_line(rest, used, complete, ec)) return used;
            received_ += used - before;
            if (!complete) break;
            std::string line;
            line.swap(line_);
            bool ok = true;
            if (state_ == state::status_line) ok = on_status_line(line, ec);
            else if (state_ == state::header_line) ok = on_header_line(line, ec);
            else if (state_ == state::chunk_size) ok = on_chunk_size_line(line, ec);
            else ok = on_trailer_line(line, ec);
            if (!ok) return used;
            break;
        }
        case state::body_length:
        case state::chunk_data: {
            const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, rest.size()));
            if (!append_body(rest.substr(0, take), ec)) return used;
            used += take;
            received_ += take;
            remaining_ -= take;
            if (remaining_ == 0) state_ = state_ == state::body_length ? state::done : state::chunk_data_end;
            break;
        }
        case state::chunk_data_end: {
            // Exactly CR LF must follow the chunk's data.
            const char expected = line_.empty() ? '\r' : '\n';
            if (rest.front() != expected) {
                fail(ec, errc::protocol_error,
                     expected == '\r' ? "a chunk is longer than its announced size"
                                      : "a chunk's data is followed by a bare CR instead of CR LF");
                return used;
            }
            ++used;
            ++received_;
            if (expected == '\r') {
                line_ = "\r";
            } else {
                line_.clear();
                state_ = state::chunk_size;
            }
            break;
        }
        case state::body_to_eof: {
            if (!append_body(rest, ec)) return used;
            used += rest.size();
            received_ += rest.size();
            break;
        }
        case state::done:
            break;
        }
    }
    return used;
}

inline void response_parser::finish(std::error_code& ec) {
    ec.clear();
    if (state_ == state::done) return;
    if (state_ == state::body_to_eof) {
        state_ = state::done;
        keep_alive_ = false;
        return;
    }
    // Closed before any byte: the connection failed (the request may or may
    // not have been processed). Closed cleanly after the answer began: the
    // server sent an incomplete answer, a protocol error. Both are "maybe sent".
    if (received_ == 0) {
        fail(ec, errc::connection_failed, "the server closed the connection without answering");
    } else if (state_ == state::body_length) {
        fail(ec, errc::protocol_error,
             "the server closed the connection " + std::to_string(remaining_) + " bytes before the end of the body");
    } else {
        fail(ec, errc::protocol_error, "the server closed the connection in the middle of the response");
    }
}

inline bool response_parser::on_status_line(std::string_view line, std::error_code& ec) {
    // HTTP-version SP status-code SP [reason-phrase]; the reason may be absent entirely.
    if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ')
        return fail(ec, errc::protocol_error, "the status line is not HTTP/1.0 or HTTP/1.1");
    int status = 0;
    for (std::size_t i = 9; i < 12; ++i) {
        if (line[i] < '0' || line[i] > '9') return fail(ec, errc::protocol_error, "the status code is not three digits");
        status = status * 10 + (line[i] - '0');
    }
    if (status < 100) return fail(ec, errc::protocol_error, "the status code is out of range");
    if (line.size() > 12) {
        if (line[12] != ' ') return fail(ec, errc::protocol_error, "the status code is not three digits");
        for (char c : line.substr(13))
            if (!http_chars::is_field_value_char(c))
                return fail(ec, errc::protocol_error, "the reason phrase contains a control character");
    }
    http10_ = line[7] == '0';
    response_.status = status;
    response_.headers.clear();
    state_ = state::header_line;
    return true;
}

inline bool response_parser::on_header_line(std::string_view line, std::error_code& ec) {
    if (line.empty()) return on_headers_complete(ec);
    if (line.front() == ' ' || line.front() == '\t')
        return fail(ec, errc::protocol_error, "a header is folded over several lines (obsolete and refused)");
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0)
        return fail(ec, errc::protocol_error, "a header line has no name");
    const std::string_view name = line.substr(0, colon);
    for (char c : name)
        if (!http_chars::is_token_char(c))
            return fail(ec, errc::protocol_error, "a header name contains a character that is not allowed");
    const std::string_view value = http_chars::trim_ows(line.substr(colon + 1));
    for (char c : value)
        if (!http_chars::is_field_value_char(c))
            return fail(ec, errc::protocol_error, "the value of header '" + std::string(name) + "' contains a control character");
    response_.headers.push_back(http_header{std::string(name), std::string(value)});
    return true;
}

inline bool response_parser::on_headers_complete(std::error_code& ec) {
    const int status = response_.status;
    if (status >= 100 && status < 200) {
        if (status == 101)
            return fail(ec, errc::protocol_error, "the server switched protocols, which was not asked for");
        // An interim response (100 Continue, 103 Early Hints): the real one follows.
        // Its bytes still count against the header limit, so an endless stream
        // of interim responses ends in response_too_large.
        response_.headers.clear();
        state_ = state::status_line;
        return true;
    }

    connection_close_ = false;
    connection_keep_alive_ = false;
    have_length_ = false;
    chunked_ = false;
    bool has_transfer_encoding = false;
    std::uint64_t length = 0;
    for (const auto& h : response_.headers) {
        if (iequals(h.name, "Connection")) {
            http_chars::for_each_list_element(h.value, [&](std::string_view option) {
                if (iequals(option, "close")) connection_close_ = true;
                if (iequals(option, "keep-alive")) connection_keep_alive_ = true;
            });
        } else if (iequals(h.name, "Transfer-Encoding")) {
            has_transfer_encoding = true;
            chunked_ = false;  // only a final "chunked" counts
            http_chars::for_each_list_element(h.value, [&](std::string_view coding) { chunked_ = iequals(coding, "chunked"); });
        } else if (iequals(h.name, "Content-Length")) {
            bool bad = false;
            bool empty = true;
            http_chars::for_each_list_element(h.value, [&](std::string_view text) {
                empty = false;
                const auto parsed = parse_decimal<std::uint64_t>(text);
                if (!parsed) {
                    bad = true;
                    return;
                }
                const std::uint64_t value = *parsed;
                if (have_length_ && value != length) bad = true;  // differing lengths: refuse to guess
                have_length_ = true;
                length = value;
            });
            if (bad || empty) return fail(ec, errc::protocol_error, "the Content-Length header is malformed");
        }
    }
    if (has_transfer_encoding && !chunked_)
        return fail(ec, errc::protocol_error, "the response uses a transfer coding other than chunked");
    // RFC 9112 §6.3: both headers "ought to be handled as an error"; the
    // message may be a smuggling attempt, so nothing of it is trusted and the
    // connection (fail() clears keep-alive) is never reused.
    if (has_transfer_encoding && have_length_)
        return fail(ec, errc::protocol_error, "the response has both Transfer-Encoding and Content-Length");

    const bool no_body = head_request_ || status == 204 || status == 304;
    // HTTP/1.0 is read to the end of the stream and never reused; so is a
    // response that says Connection: close.
    keep_alive_ = !http10_ && !connection_close_;
    header_bytes_ = 0;
    if (no_body) {
        state_ = state::done;
    } else if (chunked_) {
        reserve_unknown_length_body();
        state_ = state::chunk_size;
    } else if (have_length_) {
        if (length > limits_.max_body_bytes)
            return fail(ec, errc::response_too_large,
                        "the response announces " + std::to_string(length) + " body bytes, more than the limit of " +
                            std::to_string(limits_.max_body_bytes));
        remaining_ = length;
        response_.body.reserve(static_cast<std::size_t>(length));
        state_ = length == 0 ? state::done : state::body_length;
    } else {
        keep_alive_ = false;
        reserve_unknown_length_body();
        state_ = state::body_to_eof;
    }
    return true;
}

// A token response fits in this, so growing the body never leaves a copy of a
// JWT or refresh token behind in freed memory.
inline void response_parser::reserve_unknown_length_body() {
    response_.body.reserve(std::min<std::size_t>(limits_.max_body_bytes, 16 * 1024));
}

inline bool response_parser::on_chunk_size_line(std::string_view line, std::error_code& ec) {
    // chunk-size [ chunk-ext ]; the size is hex, extensions are ignored.
    const std::size_t end = line.find_first_of("; \t");
    const std::string_view digits = line.substr(0, end);
    if (digits.empty()) return fail(ec, errc::protocol_error, "a chunk size is missing");
    if (digits.size() > 15) return fail(ec, errc::protocol_error, "a chunk size is too long");
    std::uint64_t size = 0;
    for (char c : digits) {
        int v = -1;
        if (c >= '0' && c <= '9') v = c - '0';
        else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
        if (v < 0) return fail(ec, errc::protocol_error, "a chunk size is not hexadecimal");
        size = size * 16 + static_cast<std::uint64_t>(v);
    }
    if (end != std::string_view::npos) {
        const std::string_view ext = http_chars::trim_ows(line.substr(end));
        if (!ext.empty() && ext.front() != ';')
            return fail(ec, errc::protocol_error, "a chunk size is followed by something other than an extension");
        for (char c : ext)
            if (!http_chars::is_field_value_char(c))
                return fail(ec, errc::protocol_error, "a chunk extension contains a control character");
    }
    if (size > limits_.max_body_bytes || response_.body.size() + size > limits_.max_body_bytes)
        return fail(ec, errc::response_too_large,
                    "the chunked body grows beyond the limit of " + std::to_string(limits_.max_body_bytes) + " bytes");
    header_bytes_ = 0;
    if (size == 0) {
        state_ = state::trailer_line;
    } else {
        remaining_ = size;
        state_ = state::chunk_data;
    }
    return true;
}

inline bool response_parser::on_trailer_line(std::string_view line, std::error_code& ec) {
    if (line.empty()) {
        state_ = state::done;
        return true;
    }
    // Trailers are checked for well-formedness and dropped: merging them into the
    // headers could let a late field override one the caller already trusted.
    if (line.front() == ' ' || line.front() == '\t') return fail(ec, errc::protocol_error, "a trailer is folded");
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return fail(ec, errc::protocol_error, "a trailer line has no name");
    for (char c : line.substr(0, colon))
        if (!http_chars::is_token_char(c)) return fail(ec, errc::protocol_error, "a trailer name is malformed");
    for (char c : line.substr(colon + 1))
        if (!http_chars::is_field_value_char(c)) return fail(ec, errc::protocol_error, "a trailer value contains a control character");
    return true;
}

inline bool response_parser::append_body(std::string_view bytes, std::error_code& ec) {
    if (response_.body.size() + bytes.size() > limits_.max_body_bytes)
        return fail(ec, errc::response_too_large,
                    "the response body exceeds the limit of " + std::to_string(limits_.max_body_bytes) + " bytes");
    response_.body.append(bytes.data(), bytes.size());
    return true;
}

}  // namespace tokmgr::detail
