// tokmgr/transport/impl/asio.hpp — bodies of tokmgr::asio_transport: the
// non-template members here (inline, or compiled once under
// TOKMGR_SEPARATE_COMPILATION), the composed operation in asio_async.hpp.
//
// One request is one composed operation (asio::async_compose), a state
// machine over: reuse or open a connection (resolve, connect, TLS handshake),
// write the whole request, read until the parser has the whole response. The
// blocking `send` runs that same operation on the transport's private
// io_context, so `async_send` is the same code with the caller's handler.
//
// The keep-alive path is kept to few system calls (a loopback round trip is
// a handful of microseconds, each call about one): the idle check is one
// non-blocking peek, a plain request is written with one direct send, and
// the blocking `send` starts inline and bounds its waits itself instead of
// arming a timer.
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
#include <asio/dispatch.hpp>
#include <asio/post.hpp>
#include <asio/strand.hpp>
#include <asio/write.hpp>

#include "asio_async.hpp"
#include "../detail/asio_state.hpp"
#include "../detail/request_writer.hpp"
#include "../detail/response_parser.hpp"

namespace tokmgr {
namespace detail {

/// The state of a new transport, or the state of an unusable one with
/// `construction_error` set: the throwing constructors throw it, the others
/// report it from every `send`, as a failed stream keeps its failure.
inline std::shared_ptr<asio_transport_state> make_transport_state(std::unique_ptr<asio::io_context> context,
                                                                  asio::any_io_executor executor,
                                                                  asio_transport_options options) {
    auto state = std::make_shared<asio_transport_state>(std::move(context), std::move(executor), std::move(options));
    // The proxy URL may carry the proxy's password: whatever this returns
    // with, only the route's secret holds it afterwards.
    struct wipe_on_return {
        std::string& text;
        ~wipe_on_return() { secure_clear(text); }
    } wipe_proxy_url{state->options.proxy};
    error_info& failed = state->construction_error;
    auto refuse = [&](std::string reason) {
        failed = {make_error_code(errc::invalid_configuration), std::move(reason)};
        return state;
    };
    if (!parse_url(state->options.base_url, state->url, failed)) {
        failed.detail = "the base URL is not usable: " + failed.detail;
        return state;
    }
    state->endpoint = state->url.endpoint();
    const auto& o = state->options;
    if (o.connect_timeout.count() <= 0 || o.handshake_timeout.count() <= 0 || o.request_timeout.count() <= 0)
        return refuse("the timeouts for " + state->endpoint + " must be positive");
    if (o.max_idle.count() <= 0) return refuse("max_idle for " + state->endpoint + " must be positive");
    const bool proxy_usable = select_proxy(state->url, o.proxy, o.no_proxy, o.use_environment_proxy,
                                           process_environment, state->proxy, failed);
    if (!proxy_usable) {
        failed.detail = "the transport for " + state->endpoint + ": " + failed.detail;
        return state;
    }
    if (o.max_response_bytes == 0 || o.max_header_bytes == 0)
        return refuse("the response size limits for " + state->endpoint + " must be positive");
    if (state->url.tls) {
        state->verify = !o.insecure_skip_tls_verify;
        state->tls_context.emplace(make_client_tls_context(o.ca_file, state->verify, failed));
        if (failed) return state;
        if (!state->verify) {
            const std::string warning = "TLS certificate verification is OFF for " + state->endpoint +
                                        " (insecure_skip_tls_verify): anyone on the network path can impersonate "
                                        "the server and read the credentials";
            if (o.on_event) state->emit(transport_event_kind::tls_verification_disabled, warning);
            else std::cerr << "tokmgr: warning: " << warning << '\n';
        }
    }
    return state;
}

}  // namespace detail

TOKMGR_TRANSPORT_DECL asio_transport::asio_transport(asio_transport_options options) {
    auto context = std::make_unique<asio::io_context>(1);
    auto executor = asio::any_io_executor(context->get_executor());
    state_ = detail::make_transport_state(std::move(context), std::move(executor), std::move(options));
    if (state_->construction_error) detail::throw_error(state_->construction_error);
}

TOKMGR_TRANSPORT_DECL asio_transport::asio_transport(asio_transport_options options, std::error_code& ec) {
    auto context = std::make_unique<asio::io_context>(1);
    auto executor = asio::any_io_executor(context->get_executor());
    state_ = detail::make_transport_state(std::move(context), std::move(executor), std::move(options));
    state_->last_error = state_->construction_error;
    ec = state_->construction_error.code;
}

namespace detail {

/// The state of a transport given an executor: its I/O runs on a strand of
/// its own on that executor (several threads may run it: an operation's
/// handlers, its timer's and close() must still never run at once), and the
/// executor's context tells it when it shuts down.
inline std::shared_ptr<asio_transport_state> make_executor_transport_state(const asio::any_io_executor& executor,
                                                                           asio_transport_options options) {
    auto state = make_transport_state(nullptr, asio::strand<asio::any_io_executor>(executor), std::move(options));
    asio::use_service<context_watch>(asio::query(executor, asio::execution::context)).watch(state);
    return state;
}

}  // namespace detail

TOKMGR_TRANSPORT_DECL asio_transport::asio_transport(const executor_type& executor, asio_transport_options options) {
    state_ = detail::make_executor_transport_state(executor, std::move(options));
    if (state_->construction_error) detail::throw_error(state_->construction_error);
}

TOKMGR_TRANSPORT_DECL asio_transport::asio_transport(const executor_type& executor, asio_transport_options options,
                                      std::error_code& ec) {
    state_ = detail::make_executor_transport_state(executor, std::move(options));
    state_->last_error = state_->construction_error;
    ec = state_->construction_error.code;
}

TOKMGR_TRANSPORT_DECL asio_transport::~asio_transport() {
    if (!state_) return;
    if (state_->context_gone.load(std::memory_order_acquire)) return;  // its I/O objects went with the context
    // Alone with the state, nothing runs on it: its destructor closes the
    // connection, wherever the last reference goes.
    if (state_.use_count() == 1) return;
    close();
}

TOKMGR_TRANSPORT_DECL http_response asio_transport::send(const http_request& request, std::error_code& ec) {
    if (!state_) {
        ec = make_error_code(errc::invalid_configuration);
        return {};
    }
    if (!state_->owned_context) {
        ec = make_error_code(errc::invalid_configuration);
        state_->last_error = {ec, "this transport runs on the caller's executor; use async_send, not send"};
        return {};
    }
    auto& s = *state_;
    auto& context = *s.owned_context;
    context.restart();
    // While another operation is in flight (an async_send on this private
    // context) this one only collides, and that one keeps its timer.
    struct deadline_scope {
        detail::asio_transport_state& s;
        bool on;
        ~deadline_scope() {
            if (!on) return;
            s.deadline_mode = false;
            s.deadline.reset();
        }
    } scope{s, !s.busy};
    if (scope.on) s.deadline_mode = true;
    http_response response;
    bool completed = false;
    struct blocking_completion final : detail::send_completion {
        std::error_code& ec;
        http_response& response;
        bool& completed;
        blocking_completion(std::error_code& e, http_response& r, bool& c) : ec(e), response(r), completed(c) {}
        void complete(std::error_code result, http_response r) override {
            ec = result;
            response = std::move(r);
            completed = true;
        }
    };
    // Started inline: this call waits for the completion anyway, and a post
    // would cost an extra turn of the event loop (a system call).
    detail::start_send(detail::prepare_send(state_, request, /*start_inline=*/true),
                       std::make_unique<blocking_completion>(ec, response, completed));
    // One handler at a time until this request completes; the phase limit is
    // the wait's bound (see asio_transport_state::deadline_mode).
    while (!completed) {
        std::size_t ran = 0;
        if (s.deadline) {
            ran = context.run_one_until(*s.deadline);
            if (!completed && s.deadline && std::chrono::steady_clock::now() >= *s.deadline) {
                s.deadline.reset();
                s.expire();
                continue;
            }
        } else {
            ran = context.run_one();
        }
        if (ran == 0 && context.stopped()) break;  // out of work: cannot happen without a throwing handler
    }
    if (!completed) {  // cannot happen unless a handler threw; never report success for it
        ec = make_error_code(errc::connection_failed);
        state_->last_error = {ec, "the request to " + state_->endpoint + " did not complete"};
    }
    return response;
}

TOKMGR_TRANSPORT_DECL http_response asio_transport::send(const http_request& request) {
    std::error_code ec;
    http_response response = send(request, ec);
    if (ec) detail::throw_error(last_error());
    return response;
}

TOKMGR_TRANSPORT_DECL std::string asio_transport::endpoint() const { return state_ ? state_->endpoint : std::string(); }

TOKMGR_TRANSPORT_DECL const error_info& asio_transport::last_error() const noexcept {
    static const error_info moved_from{make_error_code(errc::invalid_configuration), "the transport was moved from"};
    return state_ ? state_->last_error : moved_from;
}

TOKMGR_TRANSPORT_DECL void asio_transport::close() noexcept {
    if (!state_) return;
    if (state_->owned_context) {
        state_->close_connection(true);  // the blocking kind: the caller runs its private io_context
        return;
    }
    if (state_->check_context_gone()) return;
    // Serialised with the operation in flight: at once on the transport's
    // strand, else posted to it.
    try {
        asio::dispatch(state_->executor, [state = state_] { state->close_connection(true); });
    } catch (...) {  // out of memory: the phase's timeout ends the operation
    }
}

TOKMGR_TRANSPORT_DECL asio_transport::executor_type asio_transport::get_executor() const noexcept {
    if (!state_ || (!state_->owned_context && state_->check_context_gone())) return executor_type();
    return state_->executor;
}

TOKMGR_TRANSPORT_DECL bool asio_transport::runs_on_executor() const noexcept {
    return state_ && !state_->owned_context;
}

}  // namespace tokmgr
