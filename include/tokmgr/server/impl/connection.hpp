// tokmgr/server/impl/connection.hpp — one client connection of the reference
// server: read a request, answer it, repeat while keep-alive holds.
//
// Every handler of a connection runs on its own strand, so its socket and
// timers need no lock. One steady_timer bounds whatever the connection waits
// for (handshake, next request, the rest of a request, a write); when it
// fires the socket's operations are cancelled and the handler that sees
// `operation_aborted` decides how to end. A stalled client therefore costs a
// socket and a few kilobytes until its deadline, and never a thread.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

#include "../detail/auth_service.hpp"
#include "../detail/client_limits.hpp"
#include "../detail/reply.hpp"
#include "../detail/request_parser.hpp"
#include "../options.hpp"

namespace tokmgr::server::detail {

using tcp = asio::ip::tcp;
using tls_stream = asio::ssl::stream<tcp::socket>;

inline tcp::socket& tcp_layer(tcp::socket& s) noexcept { return s; }
inline tcp::socket& tcp_layer(tls_stream& s) noexcept { return s.next_layer(); }

template <class Stream>
class connection : public std::enable_shared_from_this<connection<Stream>> {
public:
    static constexpr bool is_tls = std::is_same_v<Stream, tls_stream>;

    /// `slot` is this connection's share of the connection caps, held until
    /// the connection is destroyed; its client address also keys the auth
    /// rate limit.
    connection(Stream stream, auth_service& service, const server_options& options, connection_slot slot)
        : stream_(std::move(stream)),
          deadline_(stream_.get_executor()),
          delay_(stream_.get_executor()),
          service_(service),
          options_(options),
          slot_(std::move(slot)),
          reader_(limits_for(options)) {}

    void start() {
        service_.count_connection();
        if constexpr (is_tls) {
            arm(options_.request_timeout);
            stream_.async_handshake(asio::ssl::stream_base::server,
                                    [self = this->shared_from_this()](std::error_code ec) {
                                        if (ec) return self->close();
                                        self->read_next();
                                    });
        } else {
            read_next();
        }
    }

private:
    static request_limits limits_for(const server_options& options) noexcept {
        request_limits limits;
        limits.max_body_bytes = options.max_body_bytes;
        return limits;
    }

    // ---- Deadlines --------------------------------------------------------

    void arm(std::chrono::milliseconds timeout) {
        const auto generation = ++deadline_generation_;
        timed_out_ = false;
        deadline_.expires_after(timeout);
        deadline_.async_wait([self = this->shared_from_this(), generation](std::error_code ec) {
            if (ec || generation != self->deadline_generation_) return;  // re-armed or disarmed since
            self->timed_out_ = true;
            // The linger after an answer ends on this timer too; that is an
            // ordinary close, not a client that stalled.
            if (!self->closing_) self->service_.count_timeout();
            std::error_code ignored;
            tcp_layer(self->stream_).cancel(ignored);
        });
    }

    void disarm() {
        ++deadline_generation_;
        deadline_.cancel();
    }

    // ---- Reading ----------------------------------------------------------

    void read_next() {
        // The deadline may have fired just after a read completed, too late
        // to cancel it; honour it here rather than wait without one.
        if (timed_out_) return on_read(asio::error::operation_aborted, 0);
        // A pipelining client may already have sent the next request.
        if (!buffer_.empty() && try_parse()) return;
        if (buffer_.empty()) {
            request_deadline_armed_ = false;
            arm(options_.idle_timeout);
        } else if (!request_deadline_armed_) {
            request_deadline_armed_ = true;
            arm(options_.request_timeout);
        }
        stream_.async_read_some(asio::buffer(chunk_),
                                [self = this->shared_from_this()](std::error_code ec, std::size_t n) {
                                    self->on_read(ec, n);
                                });
    }

    void on_read(std::error_code ec, std::size_t n) {
        if (ec) {
            // Timed out in the middle of a request: say so before closing.
            if (timed_out_ && !buffer_.empty()) return answer_and_close(error_reply(408, "the request was not "
                                                                                          "completed in time"));
            return close();
        }
        buffer_.append(chunk_.data(), n);
        if (try_parse()) return;
        read_next();
    }

    /// True when the buffer held a whole request (or a fatal error) and an
    /// answer is on its way.
    bool try_parse() {
        const auto outcome = reader_.parse(buffer_, request_);
        if (outcome.state == parse_state::incomplete) return false;
        if (outcome.state == parse_state::failed) {
            // The rest of the stream cannot be framed any more: answer and close.
            service_.count_malformed();
            answer_and_close(error_reply(outcome.status, outcome.reason));
            return true;
        }
        // The consumed bytes may hold a password or a token: wipe before dropping.
        tokmgr::detail::secure_wipe(&buffer_[0], outcome.consumed);
        buffer_.erase(0, outcome.consumed);
        request_deadline_armed_ = false;
        disarm();
        kind_ = kind_of(request_);
        service_.request_started(kind_);
        if (kind_ != request_kind::other && options_.auth_delay.count() > 0) {
            delay_.expires_after(options_.auth_delay);
            delay_.async_wait([self = this->shared_from_this()](std::error_code) { self->respond(); });
        } else {
            respond();
        }
        return true;
    }

    // ---- Answering --------------------------------------------------------

    void respond() {
        reply r;
        try {
            r = service_.handle(request_, slot_.client());
        } catch (const std::exception&) {
            r = error_reply(500, "the server failed to answer this request");
            r.close = true;
        }
        tokmgr::detail::secure_clear(request_.body);
        const bool keep_alive = request_.keep_alive && !r.close;
        service_.count_answer();
        tokmgr::detail::secure_clear(out_);
        out_ = serialize(r, keep_alive);
        arm(options_.request_timeout);
        asio::async_write(stream_, asio::buffer(out_),
                          [self = this->shared_from_this(), keep_alive](std::error_code ec, std::size_t) {
                              self->service_.request_finished(self->kind_);
                              self->kind_ = request_kind::other;
                              tokmgr::detail::secure_clear(self->out_);
                              if (ec) return self->close();
                              if (!keep_alive) return self->shut_down();
                              self->read_next();
                          });
    }

    /// Answers a request that will not be read further (bad framing, too
    /// large, timed out), then closes.
    void answer_and_close(const reply& r) {
        service_.count_answer();
        out_ = serialize(r, false);
        arm(std::min(options_.request_timeout, std::chrono::milliseconds(2000)));
        asio::async_write(stream_, asio::buffer(out_), [self = this->shared_from_this()](std::error_code ec, std::size_t) {
            if (ec) return self->close();
            self->shut_down();
        });
    }

    // ---- Ending -----------------------------------------------------------

    /// Ends the connection so that the client still reads the last answer:
    /// closing a socket with unread input makes the kernel send RST, which can
    /// destroy the answer in flight (e.g. a 413 sent before the body was read).
    /// So stop sending, discard what still arrives for a moment, then close.
    void shut_down() {
        closing_ = true;
        arm(std::chrono::milliseconds(1000));
        if constexpr (is_tls) {
            stream_.async_shutdown([self = this->shared_from_this()](std::error_code) { self->close(); });
        } else {
            std::error_code ignored;
            stream_.shutdown(tcp::socket::shutdown_send, ignored);
            drain();
        }
    }

    void drain() {
        stream_.async_read_some(asio::buffer(chunk_), [self = this->shared_from_this()](std::error_code ec, std::size_t) {
            if (ec) return self->close();
            self->drain();
        });
    }

    void close() {
        disarm();
        delay_.cancel();
        if (kind_ != request_kind::other) {
            service_.request_finished(kind_);
            kind_ = request_kind::other;
        }
        std::error_code ignored;
        tcp_layer(stream_).close(ignored);
        tokmgr::detail::secure_clear(buffer_);
    }

    Stream stream_;
    asio::steady_timer deadline_;
    asio::steady_timer delay_;
    auth_service& service_;
    const server_options& options_;
    connection_slot slot_;
    request_reader reader_;

    std::array<char, 8192> chunk_{};
    std::string buffer_;  ///< bytes read and not yet consumed by a request
    std::string out_;     ///< the answer being written
    parsed_request request_;
    request_kind kind_ = request_kind::other;

    std::uint64_t deadline_generation_ = 0;
    bool timed_out_ = false;
    bool request_deadline_armed_ = false;
    bool closing_ = false;
};

}  // namespace tokmgr::server::detail
