// tokmgr/transport/asio.hpp — the default Transport policy: HTTP/1.1 over
// standalone Asio, with TLS through asio::ssl (OpenSSL).
//
// The transport posts one request and returns the status, headers and body; it
// knows nothing of tokens. It keeps one connection alive across requests,
// verifies TLS by default (system trust store or a named CA file, SNI,
// host-name check, TLS 1.2 or newer), resumes TLS sessions on reconnection,
// goes through an HTTP proxy when told to or when the environment says so
// (CONNECT tunnels for https://, absolute-form requests for http://),
// closes connections idle longer than max_idle instead of reusing them,
// bounds every phase with a timeout and every response with a size cap, and
// maps each failure to a tokmgr::errc whose text names the host and never a
// secret.
//
// This is the only tokmgr header (with its impl/ and detail/ parts) that
// includes Asio and OpenSSL.
#pragma once

#include <memory>
#include <string>
#include <system_error>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>

#include "../error.hpp"
#include "../http.hpp"
#include "asio_options.hpp"
#include "detail/asio_executor_ops.hpp"
#include "detail/send_completion.hpp"

namespace tokmgr {

namespace detail {
struct asio_transport_state;
}

/// HTTP/1.1 client for one server (the base URL's scheme, host and port).
///
/// Thread safety: one request at a time. `token_manager` guarantees this for
/// `send`; a second request started while one is in flight fails with
/// errc::invalid_configuration. The transport is movable, not copyable. A
/// transport given an executor runs its I/O on a strand of its own on it, so
/// an io_context run by several threads needs no strand from the caller, and
/// `close()` may be called from any thread.
///
/// Retry rule: a request is sent again on a new connection only when it
/// provably never reached the server — the kept-alive connection was found
/// closed by the server before writing, or writing to a reused connection
/// failed with zero bytes accepted. A request whose bytes may have arrived
/// (the connection broke after the write, or while reading the answer) is
/// never repeated here: it fails with errc::connection_failed or
/// errc::timeout ("maybe sent"), and the caller decides (the manager never
/// replays a token_refresh blindly).
class asio_transport {
public:
    using executor_type = asio::any_io_executor;

    /// A transport that runs `send` on a private io_context.
    /// Throws tokmgr::error: errc::invalid_url for a bad base URL,
    /// errc::invalid_configuration for an unreadable CA file or a bad option.
    explicit asio_transport(asio_transport_options options = {});
    /// As above; on failure sets `ec` and `last_error()`, and every `send`
    /// reports the same error.
    asio_transport(asio_transport_options options, std::error_code& ec);

    /// A transport whose I/O runs on `executor`, for `async_send`. Its `send`
    /// fails with errc::invalid_configuration (blocking on an executor the
    /// caller may be running would deadlock).
    asio_transport(const executor_type& executor, asio_transport_options options);
    asio_transport(const executor_type& executor, asio_transport_options options, std::error_code& ec);

    /// A moved-from transport may only be destroyed or assigned to; its
    /// `send` reports errc::invalid_configuration.
    asio_transport(asio_transport&&) noexcept = default;
    asio_transport& operator=(asio_transport&&) noexcept = default;
    ~asio_transport();

    /// Sends `request` and waits for the whole response. On failure sets `ec`
    /// (a tokmgr::errc; see `request_not_sent`) and `last_error()`. Any
    /// complete response is a success, whatever its status: the transport
    /// never follows a redirect nor turns a status (3xx, 4xx, 5xx) into an
    /// error; the caller judges the status. The one exception is not the
    /// server's: through a proxy, a 407 to a plain-HTTP request is the
    /// proxy's answer (errc::proxy_authentication_required, not sent).
    http_response send(const http_request& request, std::error_code& ec);
    /// As above; throws tokmgr::error whose text names the host and the failure.
    http_response send(const http_request& request);

    /// Starts sending `request`; completes with `void(std::error_code, http_response)`
    /// with the same errors as `send`. The request is serialised before this
    /// returns, so it need not outlive the call. Cancelling: close() or
    /// destroying the transport closes the connection, and the operation
    /// completes with errc::connection_failed (or, before the request was
    /// written, a "not sent" error); the timeouts bound it in any case.
    /// Completes through the token's associated executor, never inside this
    /// call; the request's own steps run on the transport's executor. Use it
    /// on a transport constructed with an executor.
    template <ASIO_COMPLETION_TOKEN_FOR(void(std::error_code, http_response))
                  CompletionToken ASIO_DEFAULT_COMPLETION_TOKEN_TYPE(executor_type)>
    auto async_send(const http_request& request,
                    CompletionToken&& token ASIO_DEFAULT_COMPLETION_TOKEN(executor_type));

    /// "https://host:port" (IPv6 in brackets): no path, never credentials.
    std::string endpoint() const;

    /// The last failure (of construction, `send` or `async_send`), with a
    /// sentence naming the host; empty after a success.
    const error_info& last_error() const noexcept;

    /// Closes the kept-alive connection, if any (the next request opens a new
    /// one). On a transport given an executor it is closed on the
    /// transport's strand: at once when called there, else as soon as the
    /// strand runs it, never while one of the operation's steps runs.
    void close() noexcept;

    /// The executor the transport's I/O and handlers run on: for a transport
    /// given an executor, its strand on that executor. Empty once that
    /// executor's context has shut down (transport_event_kind::execution_context_gone).
    executor_type get_executor() const noexcept;

    /// True for a transport constructed with an executor (its `async_send`
    /// works, its `send` refuses); false for one with a private io_context
    /// (its `send` works). Lets a caller choose at run time between the
    /// blocking and the asynchronous way (token_manager runs its logins and
    /// refreshes asynchronously when it is true). False for a moved-from
    /// transport.
    bool runs_on_executor() const noexcept;

private:
    std::shared_ptr<detail::asio_transport_state> state_;
};

template <ASIO_COMPLETION_TOKEN_FOR(void(std::error_code, http_response)) CompletionToken>
auto asio_transport::async_send(const http_request& request, CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(std::error_code, http_response)>(
        detail::initiate_send{detail::prepare_send(state_, request), get_executor()}, token);
}

}  // namespace tokmgr

// Header-only, the bodies come with the declarations (see TOKMGR_TRANSPORT_DECL).
#if !defined(TOKMGR_SEPARATE_COMPILATION)
#include "impl/asio.hpp"
#endif
