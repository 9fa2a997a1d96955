// tokmgr/transport/asio_options.hpp — how an asio_transport is configured,
// and the events it reports. Free of Asio, so a program can build its options
// (from a configuration file, say) without paying for Asio in that unit.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

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
    proxy_tunnel_opened,        ///< the proxy accepted CONNECT; TLS to the server runs through the tunnel
    idle_connection_closed,     ///< the kept-alive connection was idle longer than `max_idle`; a new one is opened
    /// The execution context the transport was given (its io_context) shut
    /// down while the transport still existed, and the transport was used
    /// again (by a token_manager destroyed after its io_context, say): it
    /// touches nothing of the context and sends nothing more. Reported once;
    /// written to stderr when no `on_event` is set. See docs/async.md.
    execution_context_gone,
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

    /// A kept-alive connection idle for longer than this is closed before the
    /// next request instead of being reused. Servers and load balancers close
    /// idle connections (often after 60 s); a request written while they do
    /// may have arrived, so it cannot be sent again, and for a refresh that
    /// costs a login. Keep it below the server's idle timeout.
    std::chrono::milliseconds max_idle = std::chrono::seconds(30);

    /// An HTTP proxy: "http://[user:password@]host[:port]" (port 1080 when
    /// left out; user name and password percent-encoded, sent as Basic
    /// authentication and never shown). https:// requests go through a
    /// CONNECT tunnel, with TLS end-to-end to the server; http:// requests
    /// are sent to the proxy in absolute form. Empty: the environment decides
    /// (see `use_environment_proxy`).
    std::string proxy;
    /// Hosts reached without the proxy, in NO_PROXY's syntax: comma-separated
    /// names (each matches itself and its subdomains, with or without a
    /// leading dot), IP addresses or CIDR ranges, or "*" for all; ports are
    /// ignored. Empty: the environment decides.
    std::string no_proxy;
    /// When `proxy` (or `no_proxy`) is empty, take it from the environment as
    /// curl does: `https_proxy`/`HTTPS_PROXY` for an https:// base URL,
    /// `http_proxy` for http://, then `all_proxy`/`ALL_PROXY`; and
    /// `no_proxy`/`NO_PROXY`. Read once, when the transport is constructed.
    bool use_environment_proxy = true;

    /// Called from inside `send` (or the async operation's handlers) for each
    /// transport_event; must not call back into the transport.
    std::function<void(const transport_event&)> on_event;
};

}  // namespace tokmgr
