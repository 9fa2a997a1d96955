// tokmgr/transport/detail/asio_state.hpp — what an asio_transport owns: the
// options, the parsed URL, the TLS context, the kept-alive connection, the
// timer bounding the current phase, and the session to resume; and the
// service that tells it when the execution context it was given shuts down.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <sys/types.h>

#include <asio/execution_context.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl.hpp>
#include <asio/steady_timer.hpp>

#include "../../error.hpp"
#include "../../secret.hpp"
#include "../asio_options.hpp"
#include "proxy.hpp"
#include "tls.hpp"
#include "url.hpp"

namespace tokmgr::detail {

/// One TCP connection, with TLS over it for https.
struct asio_connection {
    std::optional<asio::ip::tcp::socket> plain;
    std::optional<asio::ssl::stream<asio::ip::tcp::socket>> tls;

    asio::ip::tcp::socket& socket() noexcept { return tls ? tls->next_layer() : *plain; }

    /// Calls f with the stream requests are written to and read from.
    template <class F>
    void with_stream(F&& f) {
        if (tls) f(*tls);
        else f(*plain);
    }
};

struct asio_transport_state : std::enable_shared_from_this<asio_transport_state> {
    // Declared first so that it is destroyed last, after every I/O object on it.
    std::unique_ptr<asio::io_context> owned_context;
    // For a transport given an executor, a strand on it: the operation's
    // handlers, its timer's and close() are never run at once, whatever
    // number of threads runs the executor.
    asio::any_io_executor executor;
    // Set when the execution context shut down while this state lived (see
    // context_watch): its I/O objects are gone, and nothing may touch the
    // context any more.
    std::atomic<bool> context_gone{false};
    mutable std::atomic<bool> context_gone_reported{false};

    asio_transport_options options;
    parsed_url url;
    std::string endpoint;
    proxy_route proxy;  // enabled: every connection goes to the proxy
    bool verify = true;
    std::optional<asio::ssl::context> tls_context;
    error_info construction_error;

    // Optional so that context_watch can destroy them while the context's
    // services still exist.
    std::optional<asio::ip::tcp::resolver> resolver;
    std::optional<asio::steady_timer> timer;
    std::optional<asio_connection> connection;
    bool connection_reusable = false;
    std::chrono::steady_clock::time_point idle_since;  // when the kept-alive connection's last response ended
    tls_session_ptr session;

    std::uint64_t timer_generation = 0;  // a timer handler acts only if it is still current
    bool timed_out = false;
    // Set while the blocking `send` runs the private io_context: it then
    // enforces the phase's limit itself (run_one_until `deadline`, then
    // `expire`), which saves the timer's system calls (timerfd_settime to
    // arm it, a cancelled wait to dispatch) on every request.
    bool deadline_mode = false;
    std::optional<std::chrono::steady_clock::time_point> deadline;
    bool busy = false;
    error_info last_error;

    std::string write_buffer;  // the serialised request: wiped after every write
    std::string tunnel_buffer;  // the CONNECT request (with the proxy's credentials): wiped after its write
    std::array<char, 16 * 1024> read_buffer{};

    asio_transport_state(std::unique_ptr<asio::io_context> context, asio::any_io_executor ex,
                         asio_transport_options opts)
        : owned_context(std::move(context)),
          executor(std::move(ex)),
          options(std::move(opts)),
          resolver(std::in_place, executor),
          timer(std::in_place, executor) {}

    ~asio_transport_state() {
        secure_clear(write_buffer);
        secure_clear(tunnel_buffer);
    }

    /// A throwing hook must not leave the transport half-way through a
    /// request (busy, with a connection in an unknown state), so its
    /// exceptions stop here.
    void emit(transport_event_kind kind, std::string_view detail) const noexcept {
        if (!options.on_event) return;
        try {
            options.on_event(transport_event{kind, endpoint, detail});
        } catch (...) {
        }
    }

    /// Bounds the phase that starts now. When the timer fires it cancels the
    /// resolver and closes the socket, so the pending operation completes at
    /// once with an error that the operation reads as `timed_out`.
    void arm_timer(std::chrono::milliseconds limit) {
        timed_out = false;
        const std::uint64_t generation = ++timer_generation;
        if (deadline_mode) {
            deadline = std::chrono::steady_clock::now() + limit;
            return;
        }
        timer->expires_after(limit);
        timer->async_wait([weak = weak_from_this(), generation](const std::error_code& ec) {
            if (ec) return;  // cancelled: the phase ended in time
            const auto self = weak.lock();
            if (!self || self->timer_generation != generation) return;
            self->expire();
        });
    }

    void disarm_timer() noexcept {
        ++timer_generation;
        if (deadline_mode) {
            deadline.reset();
            return;
        }
        if (timer) timer->cancel();
    }

    /// The current phase's limit has passed: ends the pending operation.
    void expire() noexcept {
        timed_out = true;
        if (resolver) resolver->cancel();
        close_connection(false);
    }

    /// The execution context is shutting down (its destructor runs) while
    /// this state lives: the I/O objects go now, while the services they use
    /// still exist. Called by context_watch, when no thread runs the context.
    void context_shut_down() noexcept {
        context_gone.store(true, std::memory_order_release);
        connection_reusable = false;
        connection.reset();
        timer.reset();
        resolver.reset();
        // The strand too: its implementation unlinks itself from the
        // context's strand service when it goes, and a tracked executor in
        // it would count work off the context's scheduler.
        executor = asio::any_io_executor();
    }

    /// The context shut down before the transport was destroyed: says so
    /// once (the order docs/async.md requires was not kept), through
    /// on_event, or on stderr when there is none, so that it is never silent.
    bool check_context_gone() const noexcept {
        if (!context_gone.load(std::memory_order_acquire)) return false;
        if (!context_gone_reported.exchange(true)) {
            try {
                const std::string why = "the execution context (io_context) of the transport for " + endpoint +
                                        " was shut down before the transport was destroyed; the transport sends "
                                        "nothing more: destroy the token_manager or asio_transport before its "
                                        "io_context";
                if (options.on_event) emit(transport_event_kind::execution_context_gone, why);
                else std::cerr << "tokmgr: error: " << why << '\n';
            } catch (...) {
            }
        }
        return true;
    }

    /// `graceful`: the connection ended normally, so its TLS session stays
    /// resumable (OpenSSL invalidates the session of a connection freed
    /// without a shutdown). No close_notify is sent: waiting for the peer
    /// could hang, and nothing more is read from it.
    void close_connection(bool graceful) noexcept {
        connection_reusable = false;
        if (!connection) return;
        if (connection->tls && graceful) {
            SSL* ssl = connection->tls->native_handle();
            SSL_set_quiet_shutdown(ssl, 1);
            SSL_shutdown(ssl);
        }
        std::error_code ignored;
        connection->socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
        connection->socket().close(ignored);
    }

    void drop_connection(bool graceful) noexcept {
        close_connection(graceful);
        connection.reset();
    }

    /// Whether the idle kept-alive connection can still carry a request: the
    /// server has not closed it (end of stream), reset it, or sent anything
    /// unasked (which would be read as the next answer). Looks without
    /// blocking and without consuming.
    bool idle_connection_usable() {
        if (!connection || !connection_reusable) return false;
        auto& socket = connection->socket();
        if (!socket.is_open()) return false;
        // One recv on the native handle, non-blocking for this call only
        // (MSG_DONTWAIT): switching the socket's blocking mode around the
        // peek cost three more system calls per request, and Asio's own
        // async operations would switch it back again.
        char byte = 0;
        ssize_t n;
        do {
            n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        // Usable only while nothing is waiting: 0 is end of stream, > 0 is
        // unasked data, and any error but "would block" is a reset or worse.
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
};

/// A service in the execution context of every transport given an
/// executor. The context's destructor shuts every service down before it
/// destroys any: this one then destroys the I/O objects of each transport
/// still alive and marks it (`context_gone`), so that a
/// transport (or manager) destroyed after its io_context touches none of the
/// context's memory. Checking the mark costs one atomic load; without it, a
/// dead io_context cannot be told from a live one without reading freed memory.
class context_watch final : public asio::execution_context::service {
public:
    using key_type = context_watch;
    inline static asio::execution_context::id id;

    explicit context_watch(asio::execution_context& context) : asio::execution_context::service(context) {}

    void watch(const std::shared_ptr<asio_transport_state>& state) {
        std::lock_guard<std::mutex> lock(mutex_);
        states_.erase(std::remove_if(states_.begin(), states_.end(), [](const auto& w) { return w.expired(); }),
                      states_.end());
        states_.push_back(state);
    }

private:
    void shutdown() override {
        std::vector<std::shared_ptr<asio_transport_state>> alive;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            for (const auto& weak : states_)
                if (auto state = weak.lock()) alive.push_back(std::move(state));
            states_.clear();
        }
        for (const auto& state : alive) state->context_shut_down();
    }

    std::mutex mutex_;
    std::vector<std::weak_ptr<asio_transport_state>> states_;
};

}  // namespace tokmgr::detail
