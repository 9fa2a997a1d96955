// tokmgr/token_manager.hpp — keeps one Textual session authenticated and
// hands its JWT to any number of threads.
//
//   tokmgr::token_manager<> manager(tokmgr::asio_transport({"https://textual.example.com"}),
//                                   tokmgr::credentials{"svc@example.com", tokmgr::secret(password)});
//   request.set("Authorization", manager.authorization().reveal());
//
// How it behaves (the README's design section has the reasons):
// - The first call logs in. Each JWT gets two thresholds from its lifetime
//   (see schedule.hpp): past the soft one, exactly one caller refreshes (or
//   hands the refresh to `manager_options::executor`) while every other
//   caller keeps the current JWT without waiting; past the hard one, nobody is
//   handed that JWT and callers wait for the one refresh in flight.
// - Single flight: however many callers find a refresh or login due, one
//   request is in flight and every waiter receives its result or its error.
//   No lock is held while the transport runs; hooks run without locks.
// - Rotation: a successful refresh replaces both tokens; a replaced refresh
//   token is never sent again. A refresh whose outcome is unknown (the request
//   may have reached the server) retires the refresh token too, and the next
//   attempt logs in instead of risking a reuse that would revoke the family.
// - A refresh answered 400/401 falls back to one login; a refresh token past
//   its lifetime is not sent at all. Rejected credentials are reported to
//   every waiter and not retried for `rejected_credentials_backoff`.
// - After a failure, new attempts wait out an exponential backoff (or the
//   server's Retry-After); meanwhile a JWT before its hard threshold is still
//   served, and callers that need a new one get the last error at once.
//
// Thread safety: every member function may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <system_error>

#include "clock.hpp"
#include "concepts.hpp"
#include "error.hpp"
#include "event.hpp"
#include "fwd.hpp"
#include "options.hpp"
#include "protocol/textual.hpp"
#include "detail/snapshot.hpp"
#include "impl/manager_support.hpp"
#include "secret.hpp"
#include "storage/memory.hpp"
#include "token_handle.hpp"

namespace tokmgr {

/// Read without locks; each value is exact once the manager is quiet.
struct manager_counters {
    std::uint64_t logins = 0;     ///< login requests sent
    std::uint64_t refreshes = 0;  ///< token_refresh requests sent
    std::uint64_t failures = 0;   ///< requests that failed (transport error, non-2xx, bad body)
    std::uint64_t joined = 0;     ///< callers that waited for a request another caller started
    /// Answers that were not the answer of the flight in progress (a
    /// transport that completed one request twice, or answered after the
    /// flight ended): read no further, so they can rotate nothing.
    std::uint64_t ignored_answers = 0;
};

namespace detail {
template <class Transport, class Clock, class Storage, class Json, class Protocol>
class manager_core;
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
class token_manager {
    static_assert(detail::check_policies<Transport, Clock, Storage, Json, Protocol>());

public:
    using transport_type = Transport;
    using clock_type = Clock;
    using storage_type = Storage;
    using json_type = Json;
    using protocol_type = Protocol;

    /// Throws tokmgr::error (errc::invalid_configuration) for invalid options
    /// or SOLAR_* variables; check beforehand with `validate(options)` and
    /// `lifetimes_from_environment(ec)` to avoid the exception. A token set
    /// found in `storage` is used before any login.
    token_manager(Transport transport, credentials login, manager_options options = {}, Clock clock = {},
                  Storage storage = {}, Json json = {}, Protocol protocol = {})
        : core_(std::make_shared<detail::manager_core<Transport, Clock, Storage, Json, Protocol>>(
              std::move(transport), std::move(login), std::move(options), std::move(clock), std::move(storage),
              std::move(json), std::move(protocol))) {}

    token_manager(const token_manager&) = delete;
    token_manager& operator=(const token_manager&) = delete;
    /// No hook, storage or transport call of this manager runs after the
    /// destructor returns. It waits for a synchronous login or refresh in
    /// progress (the transport's timeouts bound it); an asynchronous one is
    /// stopped (its connection is closed on its executor) and its waiters are
    /// answered errc::shut_down. A refresh handed to
    /// `manager_options::executor` and not yet started never runs. Must not be
    /// called from an event hook.
    ~token_manager() { core_->shut_down(); }

    /// The current JWT; logs in or refreshes when due (see above).
    ///
    /// The view rule: the view stays valid until the calling thread calls
    /// get_token, authorization or get_token_handle on *this* manager again,
    /// or the manager is destroyed — calls on any number of other managers do
    /// not end it. Copy it, or use get_token_handle, to keep it across a
    /// coroutine suspension or hand it to another thread. A fresh token costs
    /// one clock read and one acquire load; no memory another caller reads is
    /// written.
    ///
    /// A caller that must wait waits at most `manager_options::max_wait`
    /// (errc::wait_timeout). A caller that would wait for a flight only its
    /// own thread can run — an event hook inside the flight, or a thread
    /// running the asynchronous transport's executor — gets
    /// errc::would_block at once.
    secret_view get_token(std::error_code& ec) {
        const detail::snapshot* current = core_->acquire(ec);
        return current != nullptr ? current->jwt() : secret_view();
    }
    secret_view get_token() {
        std::error_code ec;
        const detail::snapshot* current = core_->acquire(ec);
        if (current == nullptr) detail::throw_last_failure(ec, "get_token");
        return current->jwt();
    }

    /// "<scheme> <jwt>" (scheme from the options, "Bearer" by default), with
    /// the same validity as get_token's view.
    secret_view authorization(std::error_code& ec) {
        const detail::snapshot* current = core_->acquire(ec);
        return current != nullptr ? current->authorization_header() : secret_view();
    }
    secret_view authorization() {
        std::error_code ec;
        const detail::snapshot* current = core_->acquire(ec);
        if (current == nullptr) detail::throw_last_failure(ec, "authorization");
        return current->authorization_header();
    }

    /// The current JWT with shared ownership: valid for as long as it is held.
    token_handle get_token_handle(std::error_code& ec) { return token_handle(core_->acquire_shared(ec)); }
    token_handle get_token_handle() {
        std::error_code ec;
        token_handle handle(core_->acquire_shared(ec));
        if (!handle) detail::throw_last_failure(ec, "get_token_handle");
        return handle;
    }

    /// A service was answered 401 for `jwt` (the JWT, or the whole
    /// "<scheme> <jwt>" that authorization() returned). If it is still the
    /// current JWT it is not handed out again, and the next caller starts one
    /// (deduplicated) refresh; if it was already replaced, nothing happens.
    /// At most one such forced refresh per
    /// `manager_options::min_forced_refresh_interval`: a JWT rejected again
    /// sooner is still served until that interval is over.
    void invalidate(secret_view jwt) { core_->invalidate(jwt); }

    /// Asynchronous get_token, for a manager whose transport runs on an Asio
    /// executor (asio_transport constructed with one). Completion signature
    /// `void(std::error_code, tokmgr::token_handle)`. Needs
    /// <tokmgr/async.hpp> (the umbrella <tokmgr/tokmgr.hpp> includes it).
    ///
    /// A fresh JWT completes at once (posted to the token's associated
    /// executor, never inside this call). Otherwise the operation waits for
    /// the one login or refresh, which runs as an asynchronous operation on
    /// the transport's executor: no thread is blocked. Cancellation (the
    /// token's associated cancellation slot, any type): the waiter completes
    /// at once with asio::error::operation_aborted; the refresh goes on for
    /// the others and is never cancelled by one waiter.
    template <class CompletionToken>
    auto async_get_token(CompletionToken&& token);

    manager_counters counters() const noexcept { return core_->counters(); }

    /// The most recent failure, with a detail that names the operation, the
    /// endpoint and what the server said; empty after a success.
    error_info last_error() const { return core_->last_error(); }

    const Clock& clock() const noexcept { return core_->clock(); }

    /// For <tokmgr/async.hpp>.
    const std::shared_ptr<detail::manager_core<Transport, Clock, Storage, Json, Protocol>>& core() const noexcept {
        return core_;
    }

private:
    std::shared_ptr<detail::manager_core<Transport, Clock, Storage, Json, Protocol>> core_;
};

}  // namespace tokmgr

#include "impl/token_manager.hpp"
