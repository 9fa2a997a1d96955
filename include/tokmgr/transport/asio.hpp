// tokmgr/transport/asio.hpp — the default Transport policy: HTTP/1.1 over
// standalone Asio, with TLS through asio::ssl (OpenSSL).
//
// The transport posts one request and returns the status, headers and body; it
// knows nothing of tokens. It keeps one connection alive across requests,
// verifies TLS by default (system trust store or a named CA file, SNI,
// host-name check, TLS 1.2 or newer), resumes TLS sessions on reconnection,
// bounds every phase with a timeout and every response with a size cap, and
// maps each failure to a tokmgr::errc whose text names the host and never a
// secret.
//
// This is the only tokmgr header (with its impl/ and detail/ parts) that
// includes Asio and OpenSSL.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>

#include "../error.hpp"
#include "../http.hpp"

namespace tokmgr {

/// What the transport reports through `asio_transport_options::on_event`.
enum class transport_event_kind {
    /// Certificate verification is off (`insecure_skip_tls_verify`). Reported
    /// once, when the transport is constructed; written to stderr when no
    /// `on_event` is set, so that it is never silent.
    tls_verification_disabled,
    connected,                  ///< a new connection is ready (after the TLS handshake, if any)
    tls_session_resumed,        ///< the new TLS connection resumed an earlier session
    connection_reused,          ///< the request goes out on the kept-alive connection
    stale_connection_replaced,  ///< the server had closed the idle connection; a new one is opened before sending
    request_resent,             ///< writing to a reused connection failed before any byte left; sent on a new one
};

struct transport_event {
    transport_event_kind kind;
    std::string_view endpoint;  ///< "https://host:port"
    std::string_view detail;    ///< a human-readable sentence; never a secret
};

/// How an asio_transport connects. Every member has a usable default except
/// `base_url` for a server other than Textual's cloud.
struct asio_transport_options {
    /// `http://` or `https://`, a host name or IP literal (IPv6 in brackets), an
    /// optional port and an optional base path: "https://textual.example.com/textual".
    /// Request targets are appended to the path. No user name or password in it.
    std::string base_url = "https://textual.tonic.ai";

    /// PEM file of the CA certificates to trust instead of the system trust
    /// store (a self-hosted server with a private CA). Empty: the system store.
    std::string ca_file;

    /// Skips certificate and host-name verification, so that anyone on the path
    /// can impersonate the server and read the password. For a throw-away test
    /// server only. Reported once through `on_event` (or stderr).
    bool insecure_skip_tls_verify = false;

    /// Resolving the host and establishing TCP (errc::connect_timeout).
    std::chrono::milliseconds connect_timeout = std::chrono::seconds(10);
    /// The TLS handshake (errc::connect_timeout: nothing was sent yet).
    std::chrono::milliseconds handshake_timeout = std::chrono::seconds(10);
    /// Writing the request and reading the whole response (errc::timeout).
    std::chrono::milliseconds request_timeout = std::chrono::seconds(30);

    /// The largest response body accepted (errc::response_too_large); larger
    /// ones are refused without reading the rest.
    std::size_t max_response_bytes = 1024 * 1024;
    /// The largest status line plus headers (and interim responses, trailers).
    std::size_t max_header_bytes = 64 * 1024;

    /// Reuse one connection across requests. Off: every request sends
    /// `Connection: close` and opens a new connection.
    bool keep_alive = true;

    /// Called from inside `send` (or the async operation's handlers) for each
    /// transport_event; must not call back into the transport.
    std::function<void(const transport_event&)> on_event;
};

namespace detail {
struct asio_transport_state;
}

/// HTTP/1.1 client for one server (the base URL's scheme, host and port).
///
/// Thread safety: one request at a time. `token_manager` guarantees this for
/// `send`; a second request started while one is in flight fails with
/// errc::invalid_configuration. The transport is movable, not copyable.
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
    /// As above; on failure sets `ec`, and every `send` reports the same error.
    asio_transport(asio_transport_options options, std::error_code& ec);

    /// A transport whose I/O runs on `executor`, for `async_send`. Its `send`
    /// fails with errc::invalid_configuration (blocking on an executor the
    /// caller may be running would deadlock).
    asio_transport(const executor_type& executor, asio_transport_options options);
    asio_transport(const executor_type& executor, asio_transport_options options, std::error_code& ec);

    asio_transport(asio_transport&&) noexcept = default;
    asio_transport& operator=(asio_transport&&) noexcept = default;
    ~asio_transport();

    /// Sends `request` and waits for the whole response. On failure sets `ec`
    /// (a tokmgr::errc; see `request_not_sent`) and `last_error()`. A 3xx sets
    /// errc::unexpected_redirect (the response is still returned); other
    /// statuses are not errors.
    http_response send(const http_request& request, std::error_code& ec);
    /// As above; throws tokmgr::error whose text names the host and the failure.
    http_response send(const http_request& request);

    /// Starts sending `request`; completes with `void(std::error_code, http_response)`
    /// with the same errors as `send`. The request is serialised before this
    /// returns, so it need not outlive the call; the transport must outlive
    /// the operation. Cancelling: close() or destroying the transport aborts
    /// it (errc::connection_failed or the operation's timeout). Completes
    /// through the token's associated executor, never inside this call.
    template <ASIO_COMPLETION_TOKEN_FOR(void(std::error_code, http_response))
                  CompletionToken ASIO_DEFAULT_COMPLETION_TOKEN_TYPE(executor_type)>
    auto async_send(const http_request& request,
                    CompletionToken&& token ASIO_DEFAULT_COMPLETION_TOKEN(executor_type));

    /// "https://host:port" (IPv6 in brackets): no path, never credentials.
    std::string endpoint() const;

    /// The last failure of `send`/`async_send`, with a sentence naming the
    /// host; empty after a success.
    const error_info& last_error() const noexcept;

    /// Closes the kept-alive connection, if any (the next request opens a new one).
    void close() noexcept;

    executor_type get_executor() const noexcept;

private:
    std::shared_ptr<detail::asio_transport_state> state_;
};

}  // namespace tokmgr

#include "impl/asio.hpp"
