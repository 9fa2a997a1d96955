// tokmgr/transport/impl/asio_async.hpp — the composed operation behind
// asio_transport's send and async_send. It is instantiated once, for the
// type-erased handler send_handler (see detail/send_completion.hpp), and
// reached only through impl/asio.hpp: inline header-only, compiled once in
// the file that includes <tokmgr/src.hpp> under TOKMGR_SEPARATE_COMPILATION.
#pragma once

#include <cerrno>
#include <chrono>
#include <iostream>
#include <optional>
#include <utility>

#include <sys/socket.h>
#include <sys/types.h>

#include <asio/compose.hpp>
#include <asio/connect.hpp>
#include <asio/post.hpp>
#include <asio/write.hpp>

#include "../detail/asio_state.hpp"
#include "../detail/request_writer.hpp"
#include "../detail/response_parser.hpp"
#include "../detail/send_completion.hpp"

namespace tokmgr {
namespace detail {

/// A limit as people write it: "5 s" when it is whole seconds, else "1500 ms".
inline std::string duration_text(std::chrono::milliseconds d) {
    const auto ms = d.count();
    if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
    return std::to_string(ms) + " ms";
}

/// An operation's claim on its transport (one request at a time), moved with
/// the operation. Releasing it wipes the requests the operation wrote (they
/// may hold a password or a refresh token; only a claim holder writes them)
/// and frees the transport. The operation's finish() releases it; an
/// operation destroyed unfinished (an awaitable never awaited, an allocation
/// that failed between preparing and starting, an io_context destroyed first)
/// releases it here.
class busy_claim {
public:
    busy_claim() = default;
    busy_claim(busy_claim&& other) noexcept : state_(std::exchange(other.state_, nullptr)) {}
    busy_claim& operator=(busy_claim&&) = delete;
    ~busy_claim() { release(); }

    void claim(asio_transport_state& state) noexcept {
        state.busy = true;
        state_ = &state;
    }
    void release() noexcept {
        if (state_ == nullptr) return;
        secure_clear(state_->write_buffer);
        secure_clear(state_->tunnel_buffer);
        state_->busy = false;
        state_ = nullptr;
    }

private:
    asio_transport_state* state_ = nullptr;
};

/// The composed operation behind send and async_send.
class send_op {
public:
    /// `start_inline`: begin at once, inside the initiating call. Only the
    /// blocking `send` asks for it (it waits for the completion anyway);
    /// `async_send` posts the first step, so that it never completes inside
    /// the call.
    send_op(std::shared_ptr<asio_transport_state> shared_state, const http_request& request,
            bool start_inline = false)
        : state_(std::move(shared_state)), start_inline_(start_inline) {
        auto& state = *state_;
        // Everything taken from the request is copied here, at initiation, so
        // that the caller's request (and the memory its body views) need not
        // outlive the call.
        head_request_ = request.method == "HEAD";
        what_ = std::string(request.method) + " " + state.endpoint + state.url.base_path +
                std::string(target_for_messages(request.target));
        if (state.construction_error) {
            pending_ = state.construction_error;
            return;
        }
        if (state.busy) {
            pending_ = {make_error_code(errc::invalid_configuration),
                        what_ + ": another request is still in flight on this transport (send one at a time)"};
            collides_ = true;
            return;
        }
        // A plain-HTTP request goes to the proxy whole; an https:// one goes
        // through a CONNECT tunnel and is written as if to the server.
        proxy_request_form form;
        if (state.proxy.enabled && !state.url.tls) {
            form.absolute_target = true;
            form.proxy_authorization = state.proxy.authorization.reveal();
        }
        if (!write_request(state.url, request, state.options.keep_alive, state.write_buffer, pending_, form)) {
            secure_clear(state.write_buffer);
            pending_.detail = what_ + ": " + pending_.detail;
            return;
        }
        claim_.claim(state);
    }

    // Start, write completion and read completion.
    template <class Self>
    void operator()(Self& self, std::error_code ec = {}, std::size_t bytes = 0) {
        switch (step_) {
        case step::start:
            step_ = step::begin;
            if (!start_inline_) {
                // Never complete inside the initiating call.
                asio::post(state_->executor, std::move(self));
                return;
            }
            [[fallthrough]];
        case step::begin:
            if (pending_) return finish(self, pending_.code, pending_.detail);
            return open_or_reuse(self);
        case step::connecting:  // a single endpoint (an IP literal)
            return on_connected(self, ec);
        case step::writing:
            return on_written(self, ec, bytes);
        case step::reading:
            return on_read(self, ec, bytes);
        case step::handshaking:
            return on_handshake(self, ec);
        case step::tunnel_writing:
            return on_tunnel_written(self, ec);
        case step::tunnel_reading:
            return on_tunnel_read(self, ec, bytes);
        default:
            return finish(self, make_error_code(errc::protocol_error), what_ + ": internal state error");
        }
    }

    template <class Self>
    void operator()(Self& self, std::error_code ec, asio::ip::tcp::resolver::results_type results) {
        auto& s = *state_;
        const std::string what_resolved = (s.proxy.enabled ? "the proxy's host " : "") + first_hop().host;
        if (s.timed_out)
            return fail_connect(self, errc::connect_timeout,
                                "resolving " + what_resolved + " did not finish within " + duration_text(s.options.connect_timeout));
        if (ec) return fail_connect(self, errc::resolve_failed, "could not resolve " + what_resolved + " (" + ec.message() + ")");
        new_connection();
        step_ = step::connecting;
        asio::async_connect(s.connection->socket(), results, std::move(self));
    }

    template <class Self>
    void operator()(Self& self, std::error_code ec, const asio::ip::tcp::endpoint&) {
        on_connected(self, ec);
    }

    const asio::any_io_executor& executor() const noexcept { return state_->executor; }
    bool context_gone() const noexcept { return state_->check_context_gone(); }

private:
    enum class step { start, begin, resolving, connecting, tunnel_writing, tunnel_reading, handshaking, writing, reading, done };

    /// Where connections go: the proxy when there is one, else the server.
    const parsed_url& first_hop() const noexcept {
        return state_->proxy.enabled ? state_->proxy.address : state_->url;
    }
    /// The first hop for messages: "the proxy http://host:port" or the server's endpoint.
    std::string first_hop_name() const {
        return state_->proxy.enabled ? "the proxy " + state_->proxy.endpoint : state_->endpoint;
    }
    /// " through the proxy http://host:port", or nothing for a direct connection.
    std::string via_proxy() const {
        return state_->proxy.enabled ? " through the proxy " + state_->proxy.endpoint : std::string();
    }
    std::string tunnel_target() const {
        return state_->url.host_for_authority() + ":" + std::to_string(state_->url.port);
    }

    template <class Self>
    void on_connected(Self& self, std::error_code ec) {
        auto& s = *state_;
        if (s.timed_out)
            return fail_connect(self, errc::connect_timeout,
                                "connecting to " + first_hop_name() + " did not finish within " +
                                    duration_text(s.options.connect_timeout));
        if (ec)
            return fail_connect(self, errc::connection_refused,
                                "could not connect to " + first_hop_name() + " (" + ec.message() + ")");
        std::error_code ignored;
        s.connection->socket().set_option(asio::ip::tcp::no_delay(true), ignored);
        if (!s.connection->tls) {
            s.emit(transport_event_kind::connected, s.proxy.enabled ? "connected to the proxy " + s.proxy.endpoint : "connected");
            return write(self);
        }
        if (s.proxy.enabled) return open_tunnel(self);
        handshake(self);
    }

    template <class Self>
    void handshake(Self& self) {
        auto& s = *state_;
        // SNI and the name checked are the server's, also through a tunnel: the proxy is never the peer.
        prepare_tls_connection(s.connection->tls->native_handle(), s.url, s.verify, s.session.get());
        s.arm_timer(s.options.handshake_timeout);
        step_ = step::handshaking;
        s.connection->tls->async_handshake(asio::ssl::stream_base::client, std::move(self));
    }

    /// Asks the proxy for a tunnel to the server. Its answer is bounded by
    /// connect_timeout and max_header_bytes, like the rest of connecting.
    template <class Self>
    void open_tunnel(Self& self) {
        auto& s = *state_;
        write_connect_request(s.url, s.proxy.authorization.reveal(), s.tunnel_buffer);
        s.arm_timer(s.options.connect_timeout);
        step_ = step::tunnel_writing;
        asio::async_write(s.connection->socket(), asio::buffer(s.tunnel_buffer), std::move(self));
    }

    template <class Self>
    void on_tunnel_written(Self& self, std::error_code ec) {
        auto& s = *state_;
        secure_clear(s.tunnel_buffer);
        if (s.timed_out)
            return fail_connect(self, errc::connect_timeout,
                                first_hop_name() + " did not take the CONNECT request within " +
                                    duration_text(s.options.connect_timeout));
        if (ec)
            return fail_connect(self, errc::proxy_tunnel_failed,
                                "sending CONNECT to " + first_hop_name() + " failed (" + ec.message() + ")");
        // Read as the answer to a HEAD: a 2xx to CONNECT has no body, and
        // the body of any other answer is never read (it is the proxy's, not the server's).
        parser_.emplace(response_limits{s.options.max_response_bytes, s.options.max_header_bytes}, /*head_request=*/true);
        read_tunnel_answer(self);
    }

    template <class Self>
    void read_tunnel_answer(Self& self) {
        auto& s = *state_;
        step_ = step::tunnel_reading;
        s.connection->socket().async_read_some(asio::buffer(s.read_buffer), std::move(self));
    }

    template <class Self>
    void on_tunnel_read(Self& self, std::error_code ec, std::size_t bytes) {
        auto& s = *state_;
        auto& parser = *parser_;
        std::size_t used = 0;
        if (bytes != 0) {
            std::error_code parse_ec;
            used = parser.feed(std::string_view(s.read_buffer.data(), bytes), parse_ec);
            if (parse_ec) {
                const bool too_large = parse_ec == errc::response_too_large;
                return fail_connect(self, errc::proxy_tunnel_failed,
                                    "the answer of " + first_hop_name() + " to CONNECT " +
                                        (too_large ? "is larger than max_header_bytes" : "is not valid HTTP") + " (" +
                                        parser.last_error().detail + ")");
            }
        }
        if (!parser.done()) {
            if (s.timed_out)
                return fail_connect(self, errc::connect_timeout,
                                    first_hop_name() + " did not answer CONNECT within " +
                                        duration_text(s.options.connect_timeout));
            if (ec)
                return fail_connect(self, errc::proxy_tunnel_failed,
                                    first_hop_name() + " closed the connection before answering CONNECT (" +
                                        ec.message() + ")");
            return read_tunnel_answer(self);
        }
        const int status = parser.response().status;
        const std::string answered = first_hop_name() + " answered " + std::to_string(status) + " to CONNECT " +
                                     tunnel_target();
        // A 401 to CONNECT is the proxy's too (the server never sees CONNECT):
        // tinyproxy, for one, answers wrong credentials with 401, not 407.
        if (status == 407 || status == 401)
            return fail_connect(self, errc::proxy_authentication_required,
                                answered + (s.proxy.authorization.empty()
                                                ? "; give its user name and password in the proxy URL"
                                                : "; it refused the user name and password in the proxy URL"));
        if (status < 200 || status >= 300) return fail_connect(self, errc::proxy_tunnel_failed, answered);
        // Nothing may come before the client's TLS hello: bytes here would
        // be read as the server's and are not from it.
        if (used < bytes)
            return fail_connect(self, errc::proxy_tunnel_failed,
                                first_hop_name() + " sent data after its answer to CONNECT, before TLS began");
        parser_.reset();
        s.emit(transport_event_kind::proxy_tunnel_opened,
               "opened a tunnel to " + tunnel_target() + " through the proxy " + s.proxy.endpoint);
        handshake(self);
    }

    template <class Self>
    void open_or_reuse(Self& self) {
        auto& s = *state_;
        if (s.connection && s.connection_reusable &&
            std::chrono::steady_clock::now() - s.idle_since > s.options.max_idle) {
            // The server may be closing it at this very moment; a request
            // written now could arrive and still fail, and could not be sent again.
            const auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - s.idle_since);
            s.emit(transport_event_kind::idle_connection_closed,
                   "closed the kept-alive connection after " + std::to_string(idle.count()) + " ms idle (max_idle " +
                       duration_text(s.options.max_idle) + "); opening a new one before sending");
            s.drop_connection(true);
        }
        if (s.connection) {
            if (s.idle_connection_usable()) {
                reused_ = true;
                s.emit(transport_event_kind::connection_reused, "reusing the kept-alive connection");
                return write(self);
            }
            if (s.connection_reusable)
                s.emit(transport_event_kind::stale_connection_replaced,
                       "the server closed the idle connection; opening a new one before sending");
            // Nothing was read or written on it since its last complete
            // response, so its TLS session stays resumable.
            s.drop_connection(true);
        }
        reused_ = false;
        s.arm_timer(s.options.connect_timeout);
        const parsed_url& hop = first_hop();
        if (hop.host_is_ip()) {
            // An IP literal needs no resolver (whose asynchronous form runs on
            // a helper thread even for a numeric host).
            std::error_code address_ec;
            const auto address = asio::ip::make_address(hop.host, address_ec);
            if (!address_ec) {
                new_connection();
                step_ = step::connecting;
                s.connection->socket().async_connect(asio::ip::tcp::endpoint(address, hop.port), std::move(self));
                return;
            }
        }
        step_ = step::resolving;
        auto flags = asio::ip::tcp::resolver::numeric_service;
        if (hop.host_is_ip()) flags |= asio::ip::tcp::resolver::numeric_host;
        s.resolver->async_resolve(hop.host, std::to_string(hop.port), flags, std::move(self));
    }

    void new_connection() {
        auto& s = *state_;
        s.connection.emplace();
        if (s.url.tls) s.connection->tls.emplace(s.executor, *s.tls_context);
        else s.connection->plain.emplace(s.executor);
    }

    template <class Self>
    void on_handshake(Self& self, std::error_code ec) {
        auto& s = *state_;
        if (s.timed_out)
            return fail_connect(self, errc::connect_timeout,
                                "the TLS handshake with " + s.endpoint + via_proxy() + " did not finish within " +
                                    duration_text(s.options.handshake_timeout));
        if (ec) {
            const error_info why = classify_handshake_failure(s.connection->tls->native_handle(), s.verify, ec);
            if (why.code == errc::certificate_verification_failed)
                return fail_connect(self, errc::certificate_verification_failed,
                                    "the certificate of " + s.endpoint + via_proxy() + " did not verify (" +
                                        why.detail +
                                        "); set ca_file to the CA that issued it if the server uses a private CA");
            return fail_connect(self, errc::tls_handshake_failed,
                                "the TLS handshake with " + s.endpoint + via_proxy() + " failed (" + why.detail + ")");
        }
        s.emit(transport_event_kind::connected, s.proxy.enabled ? "connected with TLS" + via_proxy() : "connected with TLS");
        if (SSL_session_reused(s.connection->tls->native_handle()))
            s.emit(transport_event_kind::tls_session_resumed, "resumed the previous TLS session");
        write(self);
    }

    template <class Self>
    void write(Self& self) {
        auto& s = *state_;
        s.arm_timer(s.options.request_timeout);
        step_ = step::writing;
        written_inline_ = 0;
        if (!s.connection->tls) {
            // Plain TCP: one non-blocking send first. A request fits the
            // socket's buffer, so this finishes the write without a trip
            // through the event loop; otherwise Asio writes the rest.
            auto& socket = *s.connection->plain;
            ssize_t n;
            do {
                n = ::send(socket.native_handle(), s.write_buffer.data(), s.write_buffer.size(),
                           MSG_DONTWAIT | MSG_NOSIGNAL);
            } while (n < 0 && errno == EINTR);
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                return on_written(self, std::error_code(errno, asio::error::get_system_category()), 0);
            if (n > 0) written_inline_ = static_cast<std::size_t>(n);
            if (written_inline_ == s.write_buffer.size()) return on_written(self, {}, 0);
            asio::async_write(socket, asio::buffer(s.write_buffer.data() + written_inline_,
                                                   s.write_buffer.size() - written_inline_),
                              std::move(self));
            return;
        }
        asio::async_write(*s.connection->tls, asio::buffer(s.write_buffer), std::move(self));
    }

    template <class Self>
    void on_written(Self& self, std::error_code ec, std::size_t bytes) {
        auto& s = *state_;
        bytes += written_inline_;  // accepted by the direct send before Asio took over
        if (s.timed_out) return fail_exchange(self, errc::timeout, "sending the request timed out");
        if (ec) {
            if (reused_ && bytes == 0 && !resent_) {
                // The reused connection broke before it accepted one byte: the
                // server cannot have seen any of this request.
                resent_ = true;
                s.emit(transport_event_kind::request_resent,
                       "the kept-alive connection failed before any byte was sent; sending on a new connection");
                s.drop_connection(false);
                return open_or_reuse(self);
            }
            return fail_exchange(self, errc::connection_failed, "sending the request failed (" + ec.message() + ")");
        }
        secure_clear(s.write_buffer);
        parser_.emplace(response_limits{s.options.max_response_bytes, s.options.max_header_bytes}, head_request_);
        read(self);
    }

    template <class Self>
    void read(Self& self) {
        auto& s = *state_;
        step_ = step::reading;
        s.connection->with_stream(
            [&](auto& stream) { stream.async_read_some(asio::buffer(s.read_buffer), std::move(self)); });
    }

    template <class Self>
    void on_read(Self& self, std::error_code ec, std::size_t bytes) {
        auto& s = *state_;
        auto& parser = *parser_;
        bool surplus = false;
        if (bytes != 0) {
            std::error_code parse_ec;
            const std::size_t used = parser.feed(std::string_view(s.read_buffer.data(), bytes), parse_ec);
            if (parse_ec)
                return fail_exchange(self, static_cast<errc>(parse_ec.value()), parser.last_error().detail);
            surplus = used < bytes;  // bytes beyond this response: the connection cannot be trusted
        }
        if (!parser.done()) {
            if (s.timed_out)
                return fail_exchange(self, errc::timeout,
                                     "no complete response within " + duration_text(s.options.request_timeout));
            if (ec == asio::error::eof || (s.connection->tls && ec == asio::ssl::error::stream_truncated)) {
                if (ec != asio::error::eof && parser.reads_to_end_of_stream())
                    return fail_exchange(self, errc::connection_failed,
                                         "the TLS connection ended without close_notify, so the body may be truncated");
                std::error_code finish_ec;
                parser.finish(finish_ec);
                if (finish_ec)
                    return fail_exchange(self, static_cast<errc>(finish_ec.value()), parser.last_error().detail);
            } else if (ec) {
                return fail_exchange(self, errc::connection_failed,
                                     (parser.started() ? "the connection broke while reading the response ("
                                                       : "the connection broke before the response began (") +
                                         ec.message() + ")");
            } else {
                return read(self);
            }
        }
        // The whole response is here.
        s.disarm_timer();
        if (s.connection->tls) {
            if (auto session = take_resumable_session(s.connection->tls->native_handle())) s.session = std::move(session);
        }
        const bool reusable = parser.keep_alive() && !surplus && !ec && s.options.keep_alive;
        if (reusable) {
            s.connection_reusable = true;
            s.idle_since = std::chrono::steady_clock::now();
        } else {
            s.drop_connection(true);
        }
        // A 407 to a plain-HTTP request through a proxy is the proxy's
        // answer, not the server's (servers do not send 407): the request
        // was not passed on. The only status the transport judges.
        if (s.proxy.enabled && !s.url.tls && parser.response().status == 407)
            return finish(self, make_error_code(errc::proxy_authentication_required),
                          what_ + ": the proxy " + s.proxy.endpoint + " answered 407" +
                              (s.proxy.authorization.empty() ? "; give its user name and password in the proxy URL"
                                                             : "; it refused the user name and password in the proxy URL"));
        // Every status, 3xx included, is an answer: the caller judges
        // statuses (the manager maps them to errors in one place).
        finish(self, {}, {}, parser.release());
    }

    /// Failure before any byte of the request was written.
    template <class Self>
    void fail_connect(Self& self, errc code, const std::string& detail) {
        state_->drop_connection(false);
        finish(self, make_error_code(code), what_ + ": " + detail);
    }

    /// Failure after the request was (maybe) written: the connection's state
    /// is unknown, so it is never reused.
    template <class Self>
    void fail_exchange(Self& self, errc code, const std::string& detail) {
        state_->drop_connection(false);
        finish(self, make_error_code(code), what_ + ": " + detail + via_proxy());
    }

    template <class Self>
    void finish(Self& self, std::error_code ec, std::string detail, http_response response = {}) {
        auto& s = *state_;
        step_ = step::done;
        // An operation refused because another is in flight must not touch
        // the timer, buffer or error of the one that is.
        if (!collides_) {
            s.disarm_timer();
            // The requests (wiped by the claim's release) and the tail of a
            // response that carried a JWT and a refresh token.
            claim_.release();
            secure_wipe(s.read_buffer.data(), s.read_buffer.size());
            s.last_error = error_info{ec, ec ? std::move(detail) : std::string()};
        }
        self.complete(ec, std::move(response));
    }

    // Shared, so that destroying the transport while an async_send is pending
    // (which closes the connection and so ends the operation) cannot leave
    // the operation with a dangling state.
    std::shared_ptr<asio_transport_state> state_;
    busy_claim claim_;  // after state_: released while the state is still held
    step step_ = step::start;
    error_info pending_;
    std::string what_;  // "POST https://host:443/textual/api/auth/login", for messages
    bool head_request_ = false;
    bool collides_ = false;
    bool reused_ = false;
    bool resent_ = false;
    bool start_inline_ = false;
    std::size_t written_inline_ = 0;  // bytes of the request the direct send wrote
    std::optional<response_parser> parser_;
};

/// The one completion handler type of send_op: the caller's, erased. It
/// offers the caller's cancellation slot, so Asio's steps honour it as before.
class send_handler {
public:
    using cancellation_slot_type = asio::cancellation_slot;

    explicit send_handler(std::unique_ptr<send_completion> completion) noexcept
        : slot_(completion->cancellation_slot()), completion_(std::move(completion)) {}

    cancellation_slot_type get_cancellation_slot() const noexcept { return slot_; }

    void operator()(std::error_code ec, http_response response) { completion_->complete(ec, std::move(response)); }

private:
    asio::cancellation_slot slot_;
    std::unique_ptr<send_completion> completion_;
};

TOKMGR_TRANSPORT_DECL void send_op_deleter::operator()(send_op* op) const noexcept { delete op; }

TOKMGR_TRANSPORT_DECL send_op_ptr prepare_send(const std::shared_ptr<asio_transport_state>& state,
                                               const http_request& request, bool start_inline) {
    return send_op_ptr(new send_op(state, request, start_inline));
}

TOKMGR_TRANSPORT_DECL void start_send(send_op_ptr op, std::unique_ptr<send_completion> completion) {
    // Nothing can run on a context that shut down, and its memory may be gone.
    if (op->context_gone())
        throw_error({make_error_code(errc::invalid_configuration),
                     "async_send: the transport's execution context (io_context) was shut down"});
    send_handler handler(std::move(completion));
    const asio::any_io_executor executor = op->executor();
    asio::async_compose<send_handler, void(std::error_code, http_response)>(std::move(*op), handler, executor);
}

}  // namespace detail
}  // namespace tokmgr
