// tokmgr/impl/token_manager.hpp — the manager's core, which token_manager
// is a handle on: the hot path, waiting and launching. Included by
// token_manager.hpp, not meant to be included directly. The flight's bodies
// are in manager_flight.hpp (performed synchronously) and
// manager_async_driver.hpp (asynchronously).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>

#include "../detail/executor_ops.hpp"
#include "../detail/flight.hpp"
#include "../detail/flight_machine.hpp"
#include "../detail/session.hpp"
#include "../detail/storage_worker.hpp"
#include "../detail/jwt_lifetime.hpp"
#include "../detail/retry_after.hpp"
#include "../detail/snapshot.hpp"
#include "../protocol/textual_api.hpp"
#include "../schedule.hpp"
#include "manager_support.hpp"

namespace tokmgr {
namespace detail {

template <class Transport, class Clock, class Storage, class Json, class Protocol>
class manager_core : public std::enable_shared_from_this<manager_core<Transport, Clock, Storage, Json, Protocol>> {
public:
    manager_core(Transport transport, credentials login, manager_options options, Clock clock, Storage storage,
                 Json json, Protocol protocol)
        : clock_(std::move(clock)),
          options_(checked(std::move(options))),
          lifetimes_(options_.assumed_lifetimes ? *options_.assumed_lifetimes : lifetimes_from_environment()),
          session_(session_options_for(options_, lifetimes_),
                   options_.jitter_seed != 0 ? options_.jitter_seed
                                             : (std::uint64_t(std::random_device{}()) << 32) ^ std::random_device{}(),
                   clock_resolution(clock_, 0)),
          machine_(session_, coordinating, !(login.user_name.empty() && login.password.empty())),
          transport_(std::move(transport)),
          storage_(std::move(storage)),
          json_(std::move(json)),
          protocol_(std::move(protocol)),
          credentials_(std::move(login)),
          asynchronous_(runs_asynchronously(transport_)) {
        std::error_code ec;
        std::optional<token_set> stored;
        try {
            stored = storage_.load(ec);
        } catch (...) {
            ec = make_error_code(errc::storage_failed);
        }
        std::lock_guard<std::mutex> lock(mutex_);
        if (ec) last_load_error_ = {ec, "loading the stored token set" + storage_detail()};
        else session_.on_stored(stored, now_ns(), clock_.wall_now());
    }

    // ---- the hot path ------------------------------------------------------

    /// On failure, this thread's thread_cache::last_failure says why.
    const snapshot* acquire(std::error_code& ec) {
        const std::int64_t now = now_ns();
        if (thread_cache* cache = thread_cache::local()) {
            const cache_slot& slot = cache->front;
            if (slot.owner == id_ && slot.publication == publication_.load(std::memory_order_acquire) &&
                now < slot.serve_until_ns) {
                ec.clear();
                return slot.current.get();
            }
        }
        return slow_path_(*this, now, ec);
    }

    std::shared_ptr<const snapshot> acquire_shared(std::error_code& ec) {
        const snapshot* served = acquire(ec);
        if (served == nullptr) return nullptr;
        if (thread_cache* cache = thread_cache::local()) return cache->front.current;  // acquire left it there
        std::lock_guard<std::mutex> lock(pinned_mutex_);
        for (const auto& pinned : pinned_for_exiting_threads_)
            if (pinned.get() == served) return pinned;
        return nullptr;  // unreachable: acquire pins what it serves when the cache is gone
    }

    // ---- the rest ----------------------------------------------------------

    void invalidate(secret_view jwt) {
        std::uint64_t generation = 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!session_.invalidate(jwt, now_ns())) return;
            generation = session_.generation();
            publication_.fetch_add(1, std::memory_order_release);
        }
        emit({event_kind::invalidated, {}, generation, {}});
    }

    manager_counters counters() const noexcept {
        return {logins_.load(std::memory_order_relaxed), refreshes_.load(std::memory_order_relaxed),
                failures_.load(std::memory_order_relaxed), joined_.load(std::memory_order_relaxed),
                ignored_answers_.load(std::memory_order_relaxed)};
    }

    error_info last_error() const {
        std::lock_guard<std::mutex> lock(mutex_);
        if (session_.last_error()) return session_.last_error();
        return last_load_error_;
    }

    const Clock& clock() const noexcept { return clock_; }

    /// Called by ~token_manager(). After it returns no hook, storage or
    /// transport call of this manager starts, and none is still running: it
    /// waits for a synchronous flight in progress (its transport's timeouts
    /// bound that); an asynchronous one is told to stop (its connection is
    /// closed on its executor) and its waiters are answered errc::shut_down
    /// now. A flight handed to manager_options::executor and not yet started
    /// never starts.
    void shut_down() noexcept;

    // ---- asynchronous waiters (async_get_token) -------------------------------

    bool asynchronous() const noexcept { return asynchronous_; }
    decltype(auto) transport_executor() { return transport_.get_executor(); }
    /// For a waiter's completion, which checks the hard threshold again when
    /// it runs: the manager's clock, and how long it may ask again.
    std::int64_t async_now_ns() const noexcept { return now_ns(); }
    std::chrono::milliseconds max_wait() const noexcept { return options_.max_wait; }

    /// Either answers at once — `served` set (or an error) — or registers
    /// `waiter` with the flight that will answer it; in the latter case the
    /// returned flight is where a cancellation removes it from.
    std::shared_ptr<flight> acquire_async(const std::shared_ptr<async_waiter>& waiter,
                                          std::shared_ptr<const snapshot>& served, error_info& failed);

private:
    using executor_type_or_void = typename ::tokmgr::detail::transport_executor<Transport>::type;
    static constexpr bool coordinating = is_coordinating_storage_v<Storage>;
    static constexpr bool storage_is_async = is_async_storage_v<Storage>;
    using lease_type = typename storage_lease<Storage, coordinating>::type;

    /// A storage step, performed by blocking, under policy_gate_ (the
    /// caller holds it).
    step_outcome perform_storage(const flight_step& step) noexcept;

    void storage_failure(step_outcome& done, std::error_code ec) noexcept;

    static error_info failure_info(errc code, const char* what) noexcept;

    static manager_options checked(manager_options options) {
        if (error_info invalid = validate(options)) throw error(invalid);
        return options;
    }

    std::int64_t now_ns() const noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_.now().time_since_epoch()).count();
    }

    std::string storage_detail() const {
        const std::string said = transport_detail(storage_);
        return said.empty() ? std::string() : " (" + said + ")";
    }

    /// Stores what this thread may serve, and until when, in its cache slot,
    /// looked up anew: a flight may have run code (hooks, policies) that used
    /// other managers on this thread and moved this manager's slot.
    const snapshot* remember(std::shared_ptr<const snapshot> served, std::uint64_t publication,
                             std::int64_t serve_until) {
        thread_cache* cache = thread_cache::local();
        if (cache == nullptr) {
            // The thread is exiting and its cache is gone: the manager keeps
            // what it hands out alive instead, until it is destroyed. (Its
            // own mutex: callers may hold mutex_ here.)
            std::lock_guard<std::mutex> lock(pinned_mutex_);
            if (pinned_for_exiting_threads_.empty() || pinned_for_exiting_threads_.back() != served)
                pinned_for_exiting_threads_.push_back(served);
            return served.get();
        }
        cache_slot& slot = cache->slot_for(id_, liveness_);
        slot.current = std::move(served);
        slot.publication = publication;
        slot.serve_until_ns = serve_until;
        return slot.current.get();
    }

    const snapshot* acquire_slow(std::int64_t now, std::error_code& ec) {
        auto fail = [&](const error_info& why) -> const snapshot* {
            ec = why.code;
            if (thread_cache* cache = thread_cache::local()) cache->last_failure = why;
            return nullptr;
        };
        ec.clear();
        const auto deadline = std::chrono::steady_clock::now() + options_.max_wait;
        try {
            // A waiter whose result is already past its hard threshold when it
            // wakes (a slow hook or storage) asks again, until the deadline.
            for (;;) {
                std::unique_lock<std::mutex> lock(mutex_);
                if (closed_.load(std::memory_order_acquire))
                    return fail({make_error_code(errc::shut_down), "the token manager was destroyed"});
                const verdict said = session_.on_demand(now);
                const std::uint64_t publication = publication_.load(std::memory_order_relaxed);
                std::shared_ptr<flight> pending;
                switch (said.what) {
                case demand::serve:
                    return remember(session_.current(), publication, said.serve_until);
                case demand::fail:
                    return fail(session_.last_error());
                case demand::serve_and_start: {
                    std::shared_ptr<const snapshot> current = session_.current();
                    pending = start_flight_locked();
                    lock.unlock();
                    if (!pending) return remember(current, publication, said.serve_until);
                    if (asynchronous_ || options_.executor) {
                        launch(pending);
                        // An executor that refused the task left it to run here.
                        if (!pending->ready() || !pending->result() || now_ns() >= pending->result()->hard_ns)
                            return remember(current, publication, said.serve_until);
                        return remember(pending->result(), 0, never);
                    }
                    run_flight(pending);
                    if (pending->result() && now_ns() < pending->result()->hard_ns)
                        return remember(pending->result(), 0, never);
                    // Failed: this JWT is still served until its hard threshold.
                    lock.lock();
                    if (session_.current() == current && now_ns() < current->hard_ns)
                        return remember(current, publication_.load(std::memory_order_relaxed), never);
                    lock.unlock();
                    return fail(pending->result() ? expired_meanwhile() : pending->error());
                }
                case demand::start_and_wait:
                    pending = start_flight_locked();
                    lock.unlock();
                    if (!pending)
                        return fail({make_error_code(errc::policy_error), "out of memory starting a login or refresh"});
                    if (asynchronous_) {
                        if (executor_ops<executor_type_or_void>::running_in_this_thread(executor_or_none()))
                            return would_block(pending, fail);
                        launch(pending);
                    } else {
                        run_flight(pending);
                    }
                    break;
                case demand::join:
                    pending = in_flight_;
                    joined_.fetch_add(1, std::memory_order_relaxed);
                    lock.unlock();
                    if (flight_runner_mark::inside(id_)) return would_block(nullptr, fail);
                    if (asynchronous_ &&
                        executor_ops<executor_type_or_void>::running_in_this_thread(executor_or_none()))
                        return would_block(nullptr, fail);
                    // A flight handed to an executor that has not started it
                    // (a stopped io_context, or a queue behind this very
                    // caller) is run here instead of waited for.
                    if (!asynchronous_ && options_.executor && pending->claim()) run_flight_claimed(pending);
                    break;
                }
                if (!pending->wait_until(deadline))
                    return fail({make_error_code(errc::wait_timeout),
                                 "waited " + std::to_string(options_.max_wait.count()) +
                                     " ms for a login or refresh (manager_options::max_wait)"});
                if (!pending->result()) return fail(pending->error());
                now = now_ns();
                if (now < pending->result()->hard_ns) return remember(pending->result(), 0, never);
                if (std::chrono::steady_clock::now() >= deadline)
                    return fail({make_error_code(errc::wait_timeout), "the new JWT expired before it could be served"});
            }
        } catch (const std::bad_alloc&) {
            return fail({make_error_code(errc::policy_error), "out of memory in get_token"});
        }
    }

    template <class Fail>
    const snapshot* would_block(const std::shared_ptr<flight>& started, Fail& fail) {
        if (started) launch(started);  // still started: it runs once this thread returns to the executor
        return fail({make_error_code(errc::would_block),
                     "get_token would wait for a login or refresh that only this thread can run (an executor thread, "
                     "or an event hook inside the flight): use async_get_token there"});
    }

    decltype(auto) executor_or_none() {
        if constexpr (has_executor_v<Transport>) return transport_.get_executor();
        else return 0;
    }

    /// Under mutex_, right after the session said to start: the flight
    /// object, or nullptr (allocation failed; the session is told, so that
    /// no flight is left that nobody completes).
    std::shared_ptr<flight> start_flight_locked() noexcept {
        try {
            in_flight_ = std::make_shared<flight>();
        } catch (...) {
            session_.on_abandoned();
            return nullptr;
        }
        return in_flight_;
    }

    bool in_progress(const std::shared_ptr<flight>& pending) const {
        std::lock_guard<std::mutex> lock(mutex_);
        return in_flight_ == pending;
    }

    /// Runs a started flight elsewhere: on the transport's executor for an
    /// asynchronous transport, else on manager_options::executor. If neither
    /// takes it, it runs here.
    void launch(const std::shared_ptr<flight>& pending) noexcept {
        if (asynchronous_) {
            if constexpr (executor_ops<executor_type_or_void>::known) {
                try {
                    auto self = this->shared_from_this();
                    executor_ops<executor_type_or_void>::post(transport_.get_executor(),
                                                              [self, pending] { self->async_begin(pending); });
                    return;
                } catch (...) {
                    end_flight(pending, error_info{make_error_code(errc::policy_error),
                                                   "could not post the refresh to the transport's executor"});
                    return;
                }
            }
        }
        if (options_.executor) {
            std::shared_ptr<ticket> handed;
            try {
                handed = std::make_shared<ticket>();
                handed->core = this->shared_from_this();
                handed->pending = pending;
                options_.executor([handed] {
                    if (!handed->pending->claim()) return;  // a waiter ran it already
                    if (auto self = handed->core.lock()) self->run_flight_claimed(handed->pending);
                });
                return;
            } catch (...) {
                // The executor (or building the task) threw before the task
                // started: run it here, unless it already started somewhere.
                // Claimed before `handed` goes, so its destructor does not
                // take the throw for a dropped task.
                if (pending->claim()) run_flight_claimed(pending);
                return;
            }
        }
        if (pending->claim()) run_flight_claimed(pending);
    }

    /// A refresh handed to manager_options::executor. If the executor
    /// destroys it unrun, the flight is abandoned, so nobody waits for it.
    struct ticket {
        std::weak_ptr<manager_core> core;
        std::shared_ptr<flight> pending;
        ~ticket() {
            if (!pending || !pending->abandon()) return;
            if (auto owner = core.lock()) owner->abandoned(pending);
            else pending->complete(nullptr, {make_error_code(errc::shut_down), "refresh"});
        }
    };

    void abandoned(const std::shared_ptr<flight>& pending) noexcept {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (in_flight_ == pending) {
                in_flight_.reset();
                session_.on_abandoned();
            }
            publication_.fetch_add(1, std::memory_order_release);
        }
        pending->complete(nullptr, {make_error_code(errc::refresh_abandoned),
                                    "refresh: manager_options::executor destroyed the task without running it"});
    }

    // ---- the flight: detail::flight_machine decides, the drivers perform ----
    // (the synchronous driver in manager_flight.hpp)

    void run_flight(const std::shared_ptr<flight>& pending) noexcept {
        if (pending->claim()) run_flight_claimed(pending);
    }

    /// The machine's first step of a flight just claimed.
    flight_step started() noexcept;

    /// The machine's next step after `done`.
    flight_step advanced(step_outcome done) noexcept;

    /// Not wait_timeout: nobody waited past max_wait; the flight's JWT
    /// expired before it ended (as before, when it was reported as none).
    static error_info expired_meanwhile() noexcept;

    flight_step shut_down_step() noexcept;

    /// The synchronous driver: every step on this thread, holding the policy
    /// gate so that ~token_manager() waits for it.
    void run_flight_claimed(const std::shared_ptr<flight>& pending) noexcept;

    step_outcome send_blocking(const flight_step& step) noexcept;

    /// The request of a send step (the Protocol policy builds it).
    outgoing prepare(const flight_step& step);

    step_outcome judged(const outgoing& sent, std::uint64_t request, std::error_code ec,
                        http_response& response) noexcept;

    /// Before a step is performed: its events and counts.
    void account(const flight_step& step) noexcept;

    void emit_note(const flight_note& note) const noexcept {
        emit({note.kind, note.code, note.generation, note.took});
    }

    /// Ends the flight with what the machine's finish step says, answers its
    /// waiters, then tells the step's events.
    void finish_flight(const std::shared_ptr<flight>& pending, const flight_step& step) noexcept;

    // ---- the asynchronous driver (manager_async_driver.hpp) --------------------

    void async_begin(const std::shared_ptr<flight>& pending) noexcept;

    void async_perform(const std::shared_ptr<flight>& pending, flight_step step) noexcept;

    /// An outcome, back on the transport's executor.
    void async_advance(const std::shared_ptr<flight>& pending, step_outcome done) noexcept;

    void post_back(const std::shared_ptr<flight>& pending, step_outcome done) noexcept;

    void async_storage_step(const std::shared_ptr<flight>& pending, flight_step step) noexcept;

    /// A blocking store call on the storage thread, under the policy gate; a
    /// wait for the lease in slices, the gate let go between them, so that
    /// ~token_manager() never waits for another process's lease. False when
    /// the manager shut down.
    bool perform_storage_gated(flight_step& step, step_outcome& done) noexcept;

    /// Held by a store call out on another thread: see work_tracking.
    auto outstanding_work();

    /// Hands a blocking store call to manager_options::storage_executor, or
    /// to the manager's own storage thread.
    bool to_storage(std::function<void()> task) noexcept;

    /// A store call handed to manager_options::storage_executor: if the
    /// executor destroys it unrun, the flight ends instead of waiting forever.
    struct storage_ticket;

    /// A store with the asynchronous form: started under the policy gate (so
    /// ~token_manager() waits for the call), completed by posting back.
    void async_storage_native(const std::shared_ptr<flight>& pending, flight_step step) noexcept;

    /// A lease taken asynchronously becomes the flight's on the executor,
    /// under the gate (the store may have completed inline, under it).
    void post_lease_back(const std::shared_ptr<flight>& pending, lease_type lease) noexcept;

    /// post_back from where the policy gate may be held: only the post.
    void post_back_unlocked_later(const std::shared_ptr<flight>& pending, step_outcome done) noexcept;
    /// A store call that failed (`ec`), posted back likewise.
    void post_storage_failure_later(const std::shared_ptr<flight>& pending, std::error_code ec) noexcept;

    /// Releases the flight's lease without blocking this thread: on the
    /// storage thread, or by the store's asynchronous release.
    void release_lease_async() noexcept;

    void async_send_step(const std::shared_ptr<flight>& pending, flight_step step) noexcept;

    /// The request `request` of flight `pending` is the one its machine waits for.
    bool awaits(const std::shared_ptr<flight>& pending, std::uint64_t request) const;

    /// The one place an HTTP answer becomes an outcome: transport errors,
    /// status → errc, the body, the JWT's lifetime.
    answer judge(const outgoing& sent, std::error_code ec, http_response& response);

    const lifetimes& session_lifetimes() const noexcept { return lifetimes_; }

    /// Ends the flight and answers its waiters: with `why`, or else with
    /// what the session holds (its last error when it holds no JWT).
    void end_flight(const std::shared_ptr<flight>& pending, const error_info& failure) noexcept;

    /// Copies a failure without throwing: out of memory, its code alone.
    static void copy_failure(error_info& to, const error_info& from) noexcept;

    /// Hooks are told, never obeyed: an exception from one is swallowed so it
    /// cannot end a flight halfway.
    void emit(const event& happened) const noexcept {
        if (!options_.on_event || closed_.load(std::memory_order_acquire)) return;
        try {
            options_.on_event(happened);
        } catch (...) {
        }
    }

    // Read by every caller of the hot path; written only when something is
    // published, so the line stays shared-clean between refreshes.
    alignas(64) std::atomic<std::uint64_t> publication_{1};
    const std::uint64_t id_ = next_manager_id();
    // The hot path reaches the slow path through this pointer, set where the
    // manager is constructed: a file that only calls get_token() then does
    // not instantiate the flight, the transport's operation or the JSON
    // policy (half its compile time; BENCHMARKS.md §4). One indirect call,
    // on the slow path only.
    const snapshot* (*const slow_path_)(manager_core&, std::int64_t, std::error_code&) =
        [](manager_core& self, std::int64_t now, std::error_code& ec) { return self.acquire_slow(now, ec); };
    Clock clock_;
    const manager_options options_;
    const lifetimes lifetimes_;

    // The slow path's state, guarded by mutex_.
    alignas(64) mutable std::mutex mutex_;
    session session_;
    flight_machine machine_;
    std::shared_ptr<flight> in_flight_;
    error_info last_load_error_;
    std::mutex pinned_mutex_;  // guards the list below only
    std::vector<std::shared_ptr<const snapshot>> pinned_for_exiting_threads_;

    // Held across every call into the storage, the hooks and (synchronously)
    // the transport, so that shut_down() can wait for the one in progress.
    std::mutex policy_gate_;
    std::atomic<bool> closed_{false};
    // The storage lease of the flight in progress (one flight at a time),
    // taken and released under policy_gate_.
    std::optional<lease_type> lease_;

    Transport transport_;
    Storage storage_;
    Json json_;
    Protocol protocol_;
    const credentials credentials_;
    const bool asynchronous_;
    const std::shared_ptr<const int> liveness_ = std::make_shared<const int>(0);
    // Runs a blocking store for the asynchronous driver; declared last, so
    // destroyed first.
    storage_worker storage_worker_;

    alignas(64) std::atomic<std::uint64_t> logins_{0};
    std::atomic<std::uint64_t> refreshes_{0};
    std::atomic<std::uint64_t> failures_{0};
    std::atomic<std::uint64_t> joined_{0};
    std::atomic<std::uint64_t> ignored_answers_{0};
};

}  // namespace detail

}  // namespace tokmgr

#include "manager_flight.hpp"
#include "manager_async_driver.hpp"
