// tokmgr/authorizing_transport.hpp — a Transport that calls the API with the
// manager's JWT, and after a 401 forces one refresh for all callers and sends
// the request once more.
//
//   tokmgr::authorizing_transport api(tokmgr::asio_transport(api_options), manager);
//   tokmgr::http_request request;
//   request.method = "GET";
//   request.target = "/api/datasets";
//   tokmgr::http_response response = api.send(request);
//
// For each request it sets `Authorization` from the manager (a token_manager,
// or an api_key_source) and sends it with the wrapped transport. On a 401 it
// calls `manager.invalidate(<the header it sent>)`: compare-and-invalidate,
// so a crowd of 401s for one JWT forces one refresh between them and a 401
// for a JWT already replaced forces none. Then it takes the current JWT and
// sends the request again, once: a second 401 is the caller's, as it came.
// It does not send again when the manager has no other JWT to offer (the
// refused one is served on through `min_forced_refresh_interval`), when the
// request's body cannot be sent twice (`single_use`), or after any other
// status (a 403 is an answer about permissions, not about the JWT). Responses
// are returned untouched, `WWW-Authenticate` included.
//
// Replaying: a request given to `send` is the caller's for the whole call, so
// its body can be read twice; `async_send` copies the request before it
// returns (the request need not outlive the call), so it owns what it
// replays. A body that can be read once only — it views a buffer the caller
// refills or wipes once sent, or a stream — goes through `single_use(request)`:
// a 401 still invalidates the JWT (the next request gets a new one), but the
// 401 is returned.
//
// It satisfies the Transport concept as its wrapped transport does: `send`
// when that has `send`, `get_executor`/`async_send` when that is
// asynchronous. `async_send` is defined in <tokmgr/async.hpp> (it awaits
// `async_get_token` when the manager's own transport is asynchronous, and
// asks `authorization()` otherwise). Like any transport it carries one
// request at a time; give each thread or connection its own, on one shared
// manager. The manager must outlive it.
#pragma once

#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "concepts.hpp"
#include "detail/snapshot.hpp"
#include "error.hpp"
#include "http.hpp"
#include "secret.hpp"
#include "token_manager.hpp"

namespace tokmgr {

/// A request whose body cannot be sent a second time: never replayed.
struct single_use_request {
    const http_request& request;
};
inline single_use_request single_use(const http_request& request) noexcept { return {request}; }

namespace detail {

inline constexpr std::string_view authorization_header = "Authorization";

/// Why the manager gave no JWT: the manager's own detail when this thread's
/// failure is still recorded (token_manager keeps it per thread), else the code.
inline error_info token_failure(std::error_code ec) {
    if (const thread_cache* cache = thread_cache::local(); cache != nullptr && cache->last_failure.code == ec)
        return cache->last_failure;
    return {ec, "getting a JWT for the request"};
}

/// `sent`, a copy of the caller's request, with `Authorization` replaced.
inline void authorize_request(http_request& sent, std::string_view authorization) {
    auto& headers = sent.headers;
    for (auto it = headers.begin(); it != headers.end();) {
        if (iequals(it->name, authorization_header)) {
            secure_clear(it->value);
            it = headers.erase(it);
        } else {
            ++it;
        }
    }
    headers.push_back({std::string(authorization_header), std::string(authorization)});
}

inline void wipe_authorization(http_request& sent) noexcept {
    for (auto& h : sent.headers)
        if (iequals(h.name, authorization_header)) secure_clear(h.value);
}

/// Wipes a request's header however the send ends: a transport may throw.
struct authorization_wiper {
    http_request& sent;
    ~authorization_wiper() { wipe_authorization(sent); }
};

}  // namespace detail

/// What one authorizing transport did, for tests and load reports.
struct authorizing_counters {
    std::uint64_t requests = 0;  ///< send/async_send calls
    std::uint64_t refused = 0;   ///< 401s answered to the first attempt
    std::uint64_t replayed = 0;  ///< requests sent a second time with another JWT
};

template <class Transport, class Manager>
class authorizing_transport {
    static_assert(is_transport_v<Transport>,
                  "tokmgr: authorizing_transport wraps a Transport policy (see tokmgr/concepts.hpp)");

public:
    using transport_type = Transport;
    using manager_type = Manager;

    authorizing_transport(Transport transport, Manager& manager)
        : transport_(std::move(transport)), manager_(&manager) {}

    // ---- synchronous -------------------------------------------------------

    /// Sends `request` with the manager's JWT (see the top of this file).
    /// Fails with the manager's error when it has no JWT, or with the
    /// transport's; any HTTP status is a response, as for every transport.
    template <class T = Transport, class = detail::send_result<T>>
    http_response send(const http_request& request, error_info& failed) {
        return send_authorized(request, true, failed);
    }
    template <class T = Transport, class = detail::send_result<T>>
    http_response send(const http_request& request, std::error_code& ec) {
        return detail::code_only(ec, [&](error_info& failed) { return send_authorized(request, true, failed); });
    }
    template <class T = Transport, class = detail::send_result<T>>
    http_response send(const http_request& request) {
        return detail::throw_on_failure([&](error_info& failed) { return send_authorized(request, true, failed); });
    }

    /// As above, never sent twice.
    template <class T = Transport, class = detail::send_result<T>>
    http_response send(single_use_request once, error_info& failed) {
        return send_authorized(once.request, false, failed);
    }
    template <class T = Transport, class = detail::send_result<T>>
    http_response send(single_use_request once, std::error_code& ec) {
        return detail::code_only(ec, [&](error_info& failed) { return send_authorized(once.request, false, failed); });
    }
    template <class T = Transport, class = detail::send_result<T>>
    http_response send(single_use_request once) {
        return detail::throw_on_failure(
            [&](error_info& failed) { return send_authorized(once.request, false, failed); });
    }

    // ---- asynchronous (defined in <tokmgr/async.hpp>) ------------------------

    template <class T = Transport, class = detail::executor_result<T>>
    decltype(auto) get_executor() {
        return transport_.get_executor();
    }

    template <class T = Transport, class = detail::runs_on_executor_result<T>>
    bool runs_on_executor() const noexcept {
        return transport_.runs_on_executor();
    }

    /// Completes with `void(std::error_code, http_response)` through the
    /// token's associated executor (the transport's when it has none), never
    /// inside this call. The request is copied before this returns.
    template <class CompletionToken>
    auto async_send(const http_request& request, CompletionToken&& token);
    template <class CompletionToken>
    auto async_send(single_use_request once, CompletionToken&& token);

    // ---- the rest ------------------------------------------------------------

    /// The last failure of `send` (the manager's, or the transport's), or
    /// empty after a success. Never holds the header.
    const error_info& last_error() const noexcept { return last_error_; }

    template <class T = Transport, class = decltype(std::declval<const T&>().endpoint())>
    std::string endpoint() const {
        return std::string(transport_.endpoint());
    }

    const authorizing_counters& counters() const noexcept { return counters_; }

    Transport& next_layer() noexcept { return transport_; }
    const Transport& next_layer() const noexcept { return transport_; }
    Manager& manager() const noexcept { return *manager_; }

    /// For the asynchronous operation.
    void record(const error_info& failed) { last_error_ = failed; }
    authorizing_counters& mutable_counters() noexcept { return counters_; }

    /// What the transport said about `ec`, without the request's header.
    error_info transport_failure(std::error_code ec, const http_request& request) const {
        std::string text = std::string(request.method) + " " + std::string(detail::target_for_messages(request.target)) + " at " +
                           detail::endpoint_of(transport_);
        const std::string said = detail::transport_detail(transport_);
        if (!said.empty()) text += " (" + said + ")";
        return {ec, std::move(text)};
    }

private:
    /// The current "<scheme> <jwt>" (or the key), copied: the manager's view
    /// lasts only until this thread calls it again.
    bool authorization(secret& header, error_info& failed) {
        failed = {};
        std::error_code ec;
        const secret_view view = manager_->authorization(ec);
        if (ec || view.empty()) {
            failed = detail::token_failure(ec ? ec : make_error_code(errc::protocol_error));
            return false;
        }
        header.assign(view.reveal());
        return true;
    }

    http_response send_once(const http_request& request, const secret& header, error_info& failed) {
        http_request sent = request;
        const detail::authorization_wiper wipe{sent};
        detail::authorize_request(sent, header.reveal());
        std::error_code ec;
        http_response response = transport_.send(sent, ec);
        if (ec) failed = transport_failure(ec, request);
        return response;
    }

    http_response send_authorized(const http_request& request, bool replayable, error_info& failed) {
        ++counters_.requests;
        http_response response;
        secret sent;
        if (authorization(sent, failed)) response = send_once(request, sent, failed);
        if (!failed && response.status == 401) {
            ++counters_.refused;
            manager_->invalidate(sent.view());
            secret fresh;
            // The same JWT again would be refused again: the manager keeps
            // serving it until its forced-refresh interval is over.
            if (replayable && authorization(fresh, failed) && fresh != sent) {
                ++counters_.replayed;
                response = send_once(request, fresh, failed);
            }
        }
        last_error_ = failed;
        if (failed) return {};
        return response;
    }

    Transport transport_;
    Manager* manager_;
    error_info last_error_;
    authorizing_counters counters_;
};

}  // namespace tokmgr
