// tokmgr/server/options.hpp — how the reference server is configured and what
// it counts. Plain data, no Asio: tests and the command-line program fill it in.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "../secret.hpp"

namespace tokmgr::server {

struct server_options {
    /// Address to listen on. Loopback by default: the reference server is for
    /// tests and demos, and is not hardened for the open internet.
    std::string host = "127.0.0.1";
    /// 0 picks a free port; read it back with `reference_server::port()`.
    unsigned short port = 0;

    /// Accounts that may log in: user name → password.
    std::map<std::string, secret, std::less<>> users;
    /// When not empty, `Authorization: <api_key>` also opens protected resources.
    secret api_key;

    /// JWT lifetime (`exp - iat`), 1 s to a century. Unset:
    /// SOLAR_JWT_EXPIRATION_IN_MINUTES, else 30 minutes (the variables' rule
    /// is the client's: protocol/lifetime_variables.hpp).
    std::optional<std::chrono::seconds> jwt_ttl;
    /// Refresh-token lifetime, 1 s to a century. Unset:
    /// SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES, else 10,000 minutes.
    std::optional<std::chrono::seconds> refresh_ttl;

    /// Both set: serve HTTPS with this PEM certificate chain and private key.
    std::string tls_cert_file;
    std::string tls_key_file;

    /// HS256 key. Empty: the bytes of TOKMGR_SERVER_SECRET, else 32 random
    /// bytes for this server (its JWTs then die with it).
    secret signing_secret;

    /// Threads running the server's event loop.
    unsigned threads = 2;
    /// Bodies above this answer 413 before they are read.
    std::size_t max_body_bytes = 64 * 1024;
    /// A keep-alive connection with no request started for this long is closed.
    std::chrono::milliseconds idle_timeout{30'000};
    /// A request (or TLS handshake, or response write) that takes longer than
    /// this is abandoned, so a stalled or slow client holds nothing for long.
    std::chrono::milliseconds request_timeout{10'000};
    /// Login + token_refresh requests one client address may make per
    /// minute (a burst of this many, then one every 60 s / limit); over it
    /// the answer is 429 with Retry-After. 0: no limit. Unset:
    /// SOLAR_AUTH_RPM_LIMIT, else 600.
    std::optional<std::uint32_t> auth_rpm_limit;
    /// Connections open at once, from one client address and in all. A
    /// connection over either cap is answered 503 and closed unread. 0: no cap.
    std::size_t max_connections_per_client = 128;
    std::size_t max_connections = 512;
    /// Logins whose refresh tokens the server remembers at once. A family is
    /// forgotten only once its refresh tokens are past reuse detection (or,
    /// under pressure, once its newest token has expired); a login that would
    /// exceed the cap while every family is alive answers 503.
    std::size_t max_token_families = 100'000;

    /// Artificial latency before answering login and token_refresh. Tests use
    /// it to widen the window in which two refreshes could overlap.
    std::chrono::milliseconds auth_delay{0};

    /// The wall clock the server issues and checks tokens by. Tests set a
    /// manually advanced one; unset means std::chrono::system_clock.
    std::function<std::chrono::system_clock::time_point()> clock;
};

/// What the server has seen since it started. Every field only grows, except
/// the current in-flight figures.
struct server_stats {
    std::uint64_t connections = 0;           ///< connections accepted
    std::uint64_t connections_timed_out = 0; ///< closed for idling or stalling (not ordinary closes)
    std::uint64_t connections_refused = 0;   ///< over the per-client or global connection cap
    std::uint64_t requests = 0;              ///< requests answered, any status

    std::uint64_t logins = 0;                ///< successful logins
    std::uint64_t logins_rejected = 0;       ///< wrong user name or password
    std::uint64_t logins_refused_full = 0;   ///< 503: every remembered token family still alive
    std::uint64_t auth_requests_limited = 0; ///< login / token_refresh answered 429 (SOLAR_AUTH_RPM_LIMIT)
    std::uint64_t requests_malformed = 0;    ///< answered 4xx/5xx for framing and closed (400, 413, 431, 501, 505)
    std::uint64_t unsupported_media_type = 0;///< auth POSTs without Content-Type: application/json (415)
    std::uint64_t refreshes = 0;             ///< successful token_refresh calls
    std::uint64_t refreshes_rejected = 0;    ///< token_refresh answered 401, any reason
    std::uint64_t refresh_tokens_reused = 0; ///< a retired refresh token was presented (its family is revoked)
    std::uint64_t refresh_tokens_expired = 0;///< an expired refresh token was presented
    std::uint64_t refresh_tokens_unknown = 0;///< a refresh token never issued (or long forgotten) was presented
    std::uint64_t refresh_tokens_revoked = 0;///< a token of a revoked family was presented
    std::uint64_t families_revoked = 0;

    std::uint64_t resources_served = 0;      ///< protected resources answered 200
    std::uint64_t api_key_requests = 0;      ///< of which authorised by the API key
    std::uint64_t unauthorized = 0;          ///< protected resources answered 401
    std::uint64_t expired_jwts_presented = 0;///< well-signed JWTs presented after their exp
    std::uint64_t invalid_jwts_presented = 0;///< malformed, wrongly signed or non-HS256 JWTs
    std::uint64_t revoked_jwts_presented = 0;///< valid JWTs revoked by `reference_server::revoke_jwt`

    std::uint64_t max_refreshes_in_flight = 0;   ///< most token_refresh requests open at once
    std::uint64_t max_auth_requests_in_flight = 0; ///< most login + token_refresh requests open at once
};

}  // namespace tokmgr::server
