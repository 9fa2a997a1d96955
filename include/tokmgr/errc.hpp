// tokmgr/errc.hpp — the library's error codes and their std::error_category.
//
// Every fallible tokmgr call reports one of these through std::error_code (or
// throws tokmgr::error, which carries one). Values are grouped by what a caller
// can do about them; see `is_retryable` and `request_not_sent`.
#pragma once

#include <string>
#include <system_error>

namespace tokmgr {

enum class errc {
    // Configuration: fix the program or its environment.
    invalid_configuration = 1,  ///< an option or environment variable has an invalid value
    invalid_url,                ///< the base URL cannot be parsed
    no_credentials,             ///< a login is needed but no user name / password were given

    // The server's answer: the request reached the server.
    credentials_rejected,  ///< login answered 401/403: wrong user name or password
    refresh_rejected,      ///< token_refresh answered 400/401: token expired, revoked or replaced
    request_rejected,      ///< another 4xx: the request is malformed or not allowed
    rate_limited,          ///< 429: retry after the server's Retry-After
    service_unavailable,   ///< 503: retry after the server's Retry-After
    server_error,          ///< another 5xx: transient, retried with backoff
    unexpected_redirect,   ///< 3xx: not followed, since it could carry credentials elsewhere
    protocol_error,        ///< malformed HTTP, or a 2xx whose body is not the expected JSON
    response_too_large,    ///< the response exceeded the configured size cap

    // The network: the request may or may not have reached the server.
    resolve_failed,                   ///< the host name could not be resolved (not sent)
    connection_refused,               ///< nothing listens at the address (not sent)
    connect_timeout,                  ///< TCP connect did not finish in time (not sent)
    tls_handshake_failed,             ///< TLS could not be negotiated (not sent)
    certificate_verification_failed,  ///< the peer's certificate or host name did not verify (not sent)
    timeout,                          ///< the request did not complete in time (maybe sent)
    connection_failed,                ///< the connection broke during the exchange (maybe sent)

    // The manager itself.
    storage_failed,  ///< the storage policy could not load or store the token set
    shut_down,       ///< the manager is being destroyed
    policy_error,    ///< a policy or the event hook threw during a login or refresh
    would_block,        ///< waiting here could never end: this thread is the one that must run the refresh
    wait_timeout,       ///< a caller waited for a login or refresh longer than manager_options::max_wait
    refresh_abandoned,  ///< the executor dropped the refresh task without running it; the next call retries

    // Storage that persists or shares the token set.
    lease_timeout,        ///< another holder kept the storage lease longer than the wait allowed
    storage_corrupt,      ///< the stored token set is not a readable token-set document (moved aside)
    storage_permissions,  ///< the token file or its directory is readable or writable by others

    // The HTTP proxy between the client and the server (not sent: the proxy did not pass the request on).
    proxy_authentication_required,  ///< the proxy answered 407: its user name or password is missing or wrong
    proxy_tunnel_failed,            ///< the proxy refused CONNECT (non-2xx), answered it malformed or too large, or closed

    // Storage, continued (numbered after the others, which keep their values).
    /// The token storage could not be reached (no connection): nothing was
    /// read or written. A plain storage_failed of a write may have landed.
    storage_unreachable,
    /// The token storage holds a value tokmgr did not write; it was left
    /// alone, and nothing was written.
    storage_foreign,
};

namespace detail {

class errc_category final : public std::error_category {
public:
    const char* name() const noexcept override { return "tokmgr"; }

    std::string message(int value) const override {
        switch (static_cast<errc>(value)) {
        case errc::invalid_configuration: return "invalid configuration";
        case errc::invalid_url: return "invalid URL";
        case errc::no_credentials: return "a login is required but no credentials were configured";
        case errc::credentials_rejected: return "the server rejected the user name or password";
        case errc::refresh_rejected: return "the server rejected the refresh token";
        case errc::request_rejected: return "the server rejected the request";
        case errc::rate_limited: return "the server is rate limiting requests";
        case errc::service_unavailable: return "the service is unavailable";
        case errc::server_error: return "the server failed with a 5xx status";
        case errc::unexpected_redirect: return "the server answered with a redirect, which is not followed";
        case errc::protocol_error: return "the server's answer does not follow the protocol";
        case errc::response_too_large: return "the response is larger than the configured limit";
        case errc::resolve_failed: return "the host name could not be resolved";
        case errc::connection_refused: return "the connection was refused";
        case errc::connect_timeout: return "connecting timed out";
        case errc::tls_handshake_failed: return "the TLS handshake failed";
        case errc::certificate_verification_failed: return "the server's certificate did not verify";
        case errc::timeout: return "the request timed out";
        case errc::connection_failed: return "the connection failed during the request";
        case errc::storage_failed: return "the token storage failed";
        case errc::shut_down: return "the token manager is shutting down";
        case errc::policy_error: return "a policy or event hook threw an exception";
        case errc::would_block: return "waiting would deadlock: this thread must run the login or refresh";
        case errc::wait_timeout: return "waiting for the login or refresh took longer than allowed";
        case errc::refresh_abandoned: return "the executor dropped the refresh task without running it";
        case errc::lease_timeout: return "another holder kept the token storage lease too long";
        case errc::storage_corrupt: return "the stored token set cannot be read";
        case errc::storage_permissions: return "the token storage is accessible to other users";
        case errc::proxy_authentication_required: return "the proxy requires authentication (407)";
        case errc::proxy_tunnel_failed: return "the proxy did not open a tunnel to the server";
        case errc::storage_unreachable: return "the token storage could not be reached";
        case errc::storage_foreign: return "the token storage holds a value tokmgr did not write";
        }
        return "unknown tokmgr error";
    }
};

}  // namespace detail

inline const std::error_category& error_category() noexcept {
    static const detail::errc_category category;
    return category;
}

inline std::error_code make_error_code(errc value) noexcept {
    return {static_cast<int>(value), error_category()};
}

/// True when the failure proves the request never reached the server, so that
/// sending the same refresh token again cannot count as reuse. Errors from other
/// categories are treated as "maybe sent".
inline bool request_not_sent(std::error_code ec) noexcept {
    if (ec.category() != error_category()) return false;
    switch (static_cast<errc>(ec.value())) {
    case errc::invalid_url:
    case errc::resolve_failed:
    case errc::connection_refused:
    case errc::connect_timeout:
    case errc::tls_handshake_failed:
    case errc::certificate_verification_failed:
    case errc::proxy_authentication_required:
    case errc::proxy_tunnel_failed:
        return true;
    default:
        return false;
    }
}

/// True for failures that a later attempt may not repeat (network trouble,
/// 5xx, rate limiting). Rejected credentials and configuration errors are not.
inline bool is_retryable(std::error_code ec) noexcept {
    if (ec.category() != error_category()) return true;
    switch (static_cast<errc>(ec.value())) {
    case errc::invalid_configuration:
    case errc::invalid_url:
    case errc::no_credentials:
    case errc::credentials_rejected:
    case errc::request_rejected:
    case errc::unexpected_redirect:
    case errc::certificate_verification_failed:
    case errc::shut_down:
    case errc::storage_permissions:
    case errc::proxy_authentication_required:
        return false;
    default:
        return true;
    }
}

}  // namespace tokmgr

template <>
struct std::is_error_code_enum<tokmgr::errc> : std::true_type {};
