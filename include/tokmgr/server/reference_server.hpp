// tokmgr/server/reference_server.hpp — an in-process Textual auth server.
//
// A real HTTP/1.1 server on standalone Asio that implements the protocol of
// the Textual API's JWT authentication (see the spec in the project's docs):
//
//   POST /api/auth/login          {"userName", "password"} → {"jwt", "refreshToken"}
//   POST /api/auth/token_refresh  {"refreshToken"}         → {"jwt", "refreshToken"}
//   any other /api/... path       200 with `Authorization: Bearer <jwt>` or the API key, else 401
//
// JWTs are HS256 with `sub`, `iat`, `exp` and `jti`; refresh tokens are
// opaque, single use and rotate on every refresh; presenting a retired one
// revokes its whole family (RFC 9700 §4.14.2). Many connections at once,
// keep-alive, timeouts on idle and stalled clients, TLS when given a
// certificate. Every decision is counted in `stats()`, so tests and demos can
// prove that a client never reused a refresh token or presented an expired JWT.
//
//     tokmgr::server::server_options options;
//     options.users.emplace("alice", tokmgr::secret("wonderland"));
//     options.jwt_ttl = std::chrono::seconds(5);
//     tokmgr::server::reference_server server(std::move(options));
//     server.start();                        // binds 127.0.0.1 on a free port
//     std::string base = server.url();       // "http://127.0.0.1:<port>"
//     ...
//     server.stop();
//
// Meant for tests and demos on loopback: it keeps its state in memory and is
// not hardened or tuned for the open internet.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "../error.hpp"
#include "options.hpp"

namespace tokmgr::server {

class reference_server {
public:
    /// Stores the options; nothing is bound until `start`.
    explicit reference_server(server_options options = {});
    /// Stops the server if it runs.
    ~reference_server();

    reference_server(const reference_server&) = delete;
    reference_server& operator=(const reference_server&) = delete;

    /// Resolves the settings (options, then SOLAR_* variables, then defaults),
    /// loads the TLS certificate if any, binds, listens and starts the
    /// server's threads. When it returns without error, connections are
    /// accepted. A server starts at most once.
    ///
    /// Errors: errc::invalid_configuration (a lifetime, an environment
    /// variable, the TLS files), errc::resolve_failed (the host), or the
    /// system's error for binding (e.g. address in use). `last_error()` says
    /// which and where.
    void start(std::error_code& ec);
    /// As above, throwing tokmgr::error.
    void start();

    /// Stops the event loop, joins the threads and closes the listener; no
    /// request is answered after it returns. Open sockets are released when
    /// the server is destroyed. Idempotent; statistics stay readable.
    void stop() noexcept;

    /// The bound port (the chosen one when options.port was 0); 0 before start.
    unsigned short port() const noexcept;
    /// "http://127.0.0.1:<port>" or "https://...": the base URL for clients.
    std::string url() const;
    bool uses_tls() const noexcept;

    server_stats stats() const;

    /// A test hook, not reachable over HTTP: from now on the resource
    /// endpoints answer `jwt` 401, as a server that revoked the session
    /// would. False (nothing done) before `start`.
    bool revoke_jwt(std::string_view jwt);

    /// What the last failed `start` reported; empty otherwise.
    error_info last_error() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace tokmgr::server

#include "impl/reference_server.hpp"
