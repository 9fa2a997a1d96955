// tokmgr/transport/detail/response_parser.hpp — an incremental HTTP/1.x
// response parser.
//
// Asio-free so that it is unit-tested and fuzzed fast. Bytes are fed as they
// arrive, in pieces of any size; the parser never looks ahead past what it has
// been given, never buffers more than the configured limits (a body announced
// larger than the cap is refused at once, before it is read), and reports every
// malformed input as errc::protocol_error rather than trusting it.
//
// Line ends: CR LF, or a bare LF in the status line and headers (which RFC
// 9112 §2.2 allows); only CR LF inside the chunked framing. A response with
// both Content-Length and Transfer-Encoding is an error (RFC 9112 §6.3).
//
// Handles: the status line, headers (names kept as received, looked up without
// regard to case), Content-Length, Transfer-Encoding: chunked with extensions
// and trailers, bodies delimited by the end of the stream (HTTP/1.0 or neither
// length nor chunking), interim 1xx responses (skipped), and responses that
// have no body (1xx, 204, 304, answers to HEAD).
//
// Error descriptions never repeat header values or body bytes: a response may
// echo a secret.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "../../errc.hpp"
#include "../../error.hpp"
#include "../../http.hpp"

namespace tokmgr::detail {

struct response_limits {
    std::size_t max_body_bytes = 1024 * 1024;   ///< body after de-chunking
    std::size_t max_header_bytes = 64 * 1024;   ///< status line + headers (+ each interim response, + trailers)
};

class response_parser {
public:
    explicit response_parser(response_limits limits = {}, bool head_request = false) noexcept
        : limits_(limits), head_request_(head_request) {}

    /// Consumes bytes from `data` and returns how many it used. Stops at the end
    /// of the response (the rest is not part of it) or at the first error,
    /// which it sets in `ec` (errc::protocol_error or errc::response_too_large).
    std::size_t feed(std::string_view data, std::error_code& ec);

    /// The peer closed the stream. Completes a body that runs to the end of the
    /// stream. Anything else unfinished is errc::protocol_error (an incomplete
    /// answer) once a byte of it arrived, errc::connection_failed before.
    void finish(std::error_code& ec);

    bool done() const noexcept { return state_ == state::done; }
    /// At least one byte of a response arrived.
    bool started() const noexcept { return received_ != 0; }
    /// The body runs to the end of the stream (no length, not chunked).
    bool reads_to_end_of_stream() const noexcept { return state_ == state::body_to_eof; }
    /// The connection may carry another request after this response.
    bool keep_alive() const noexcept { return keep_alive_; }
    /// The error `feed` or `finish` set, with what was wrong; empty when
    /// nothing was.
    const error_info& last_error() const noexcept { return last_error_; }

    http_response& response() noexcept { return response_; }
    http_response release() noexcept { return std::move(response_); }

private:
    enum class state {
        status_line,
        header_line,
        body_length,
        body_to_eof,
        chunk_size,
        chunk_data,
        chunk_data_end,
        trailer_line,
        done,
    };

    bool fail(std::error_code& ec, errc code, std::string detail);
    bool take_line(std::string_view data, std::size_t& used, bool& complete, std::error_code& ec);
    bool on_status_line(std::string_view line, std::error_code& ec);
    bool on_header_line(std::string_view line, std::error_code& ec);
    bool on_headers_complete(std::error_code& ec);
    bool on_chunk_size_line(std::string_view line, std::error_code& ec);
    bool on_trailer_line(std::string_view line, std::error_code& ec);
    bool append_body(std::string_view bytes, std::error_code& ec);
    void reserve_unknown_length_body();
    bool in_chunked_framing() const noexcept {
        return state_ == state::chunk_size || state_ == state::trailer_line;
    }

    response_limits limits_;
    bool head_request_;
    state state_ = state::status_line;
    std::string line_;               // the line being assembled
    std::size_t header_bytes_ = 0;   // of the current head (status + headers) or trailers
    std::uint64_t remaining_ = 0;    // body or chunk bytes still expected
    std::uint64_t received_ = 0;
    bool http10_ = false;
    bool connection_close_ = false;
    bool connection_keep_alive_ = false;
    bool keep_alive_ = false;
    bool have_length_ = false;
    bool chunked_ = false;
    error_info last_error_;
    http_response response_;
};

}  // namespace tokmgr::detail

#include "../impl/response_parser.hpp"
