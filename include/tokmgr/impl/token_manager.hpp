// tokmgr/impl/token_manager.hpp — bodies of token_manager; included by
// token_manager.hpp, not meant to be included directly.
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

namespace tokmgr {
namespace detail {

template <class T, class = void>
struct has_endpoint : std::false_type {};
template <class T>
struct has_endpoint<T, std::void_t<decltype(std::declval<const T&>().endpoint())>> : std::true_type {};

/// Where a request went, for error text: the transport's own description if
/// it offers one.
template <class Transport>
std::string endpoint_of(const Transport& transport) {
    if constexpr (has_endpoint<Transport>::value) return std::string(transport.endpoint());
    else return "the server";
}

template <class T, class = void>
struct has_last_error : std::false_type {};
template <class T>
struct has_last_error<T, std::void_t<decltype(std::declval<const T&>().last_error().detail)>> : std::true_type {};

/// What the transport itself said about its last failure, if it keeps such a
/// description (asio_transport does: "certificate verify failed for host ...").
template <class Transport>
std::string transport_detail(const Transport& transport) {
    if constexpr (has_last_error<Transport>::value) return std::string(transport.last_error().detail);
    else return {};
}

/// Server-supplied text made safe to show: no control characters, at most 200
/// bytes, and no secret the manager knows of, even if the server echoed one.
inline std::string sanitize_server_message(std::string text, std::initializer_list<std::string_view> secrets) {
    for (std::string_view s : secrets) {
        if (s.empty()) continue;
        if (s.size() < 4) {
            // Redacting so short a secret would mangle ordinary words, and
            // leaving it could show it: drop the server's text altogether.
            if (text.find(s) != std::string::npos) return {};
            continue;
        }
        // Resume after the placeholder: a secret that occurs in the
        // placeholder itself would otherwise be found there again, forever.
        const std::string_view placeholder(redacted_text);
        for (auto at = text.find(s); at != std::string::npos; at = text.find(s, at + placeholder.size()))
            text.replace(at, s.size(), placeholder);
    }
    // The placeholder's end and the text after it can spell a secret again
    // ("]abc" + "abc..."): whatever still contains one is dropped whole.
    for (std::string_view s : secrets)
        if (!s.empty() && text.find(s) != std::string::npos) return {};
    for (char& c : text)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    if (text.size() > 200) text.resize(200);
    return text;
}

/// Kept out of line and cold, so the throwing overloads' success path is the
/// error_code overload's.
[[noreturn]] inline void throw_last_failure(std::error_code ec, const char* call) {
    const thread_cache* cache = thread_cache::local();
    if (cache != nullptr && cache->last_failure.code == ec) throw error(cache->last_failure);
    throw error(error_info{ec, call});
}

inline std::uint64_t next_manager_id() noexcept {
    static std::atomic<std::uint64_t> last{0};
    return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

// ---- asynchronous transports -------------------------------------------------

template <class T>
using transport_executor_t = decltype(std::declval<T&>().get_executor());
template <class T>
using runs_on_executor_result = decltype(std::declval<const T&>().runs_on_executor());

template <class T>
inline constexpr bool has_executor_v = detect<T, transport_executor_t>::value;

template <class T, bool = has_executor_v<T>>
struct transport_executor {
    using type = void;
};
template <class T>
struct transport_executor<T, true> {
    using type = std::decay_t<transport_executor_t<T>>;
};

template <class T>
using close_result = decltype(std::declval<T&>().close());

/// Keeps the transport's execution context running (an io_context's run()
/// from returning) while a store call made for it is out on another thread;
/// nothing for executors that cannot say so.
template <class E, class = void>
struct work_tracking {
    static int keep(const E&) noexcept { return 0; }
};
template <class E>
struct work_tracking<E, std::void_t<decltype(executor_ops<E>::tracked(std::declval<const E&>()))>> {
    static auto keep(const E& executor) { return executor_ops<E>::tracked(executor); }
};

template <class S, bool = is_coordinating_storage_v<S>>
struct storage_lease {
    using type = int;  // no lease: a placeholder that is never engaged
};
template <class S>
struct storage_lease<S, true> {
    using type = storage_lease_t<S>;
};

/// The manager runs its flights asynchronously, on the transport's executor,
/// when the transport says it works that way (asio_transport constructed with
/// an executor), or when it can only send asynchronously.
template <class Transport>
bool runs_asynchronously(const Transport& transport) noexcept {
    if constexpr (!has_executor_v<Transport>) {
        return false;
    } else if constexpr (detect<Transport, runs_on_executor_result>::value) {
        return transport.runs_on_executor();
    } else {
        return !detect<Transport, send_result>::value;
    }
}

/// Marks the thread running a manager's flight, so that a call from a hook
/// that would wait for that very flight fails instead of deadlocking. Marks
/// nest (a hook of A runs B's flight, whose hook calls A): every flight the
/// thread is inside counts, not only the innermost.
class flight_runner_mark {
public:
    explicit flight_runner_mark(std::uint64_t id) noexcept : id_(id), outer_(top()) { top() = this; }
    ~flight_runner_mark() { top() = outer_; }
    flight_runner_mark(const flight_runner_mark&) = delete;
    flight_runner_mark& operator=(const flight_runner_mark&) = delete;

    /// Whether this thread is inside a flight of manager `id`.
    static bool inside(std::uint64_t id) noexcept {
        for (const flight_runner_mark* mark = top(); mark != nullptr; mark = mark->outer_)
            if (mark->id_ == id) return true;
        return false;
    }

private:
    static const flight_runner_mark*& top() noexcept {
        static thread_local const flight_runner_mark* innermost = nullptr;
        return innermost;
    }
    std::uint64_t id_;
    const flight_runner_mark* outer_;
};

/// One request the flight sends, and how to read its answer.
struct outgoing {
    http_request request;
    secret body;  // the request's body views this
    bool by_login = false;
    secret sent_secret;  // redacted from whatever the server says back
    std::chrono::steady_clock::time_point started{};
};

/// An asynchronous request and whether its answer came: only the first
/// completion is an answer (read and written under the policy gate).
struct sent_request {
    outgoing sent;
    std::uint64_t request = 0;  // the machine's number for it
    bool answered = false;
};

template <class Transport, class Clock, class Storage, class Json>
class manager_core : public std::enable_shared_from_this<manager_core<Transport, Clock, Storage, Json>> {
public:
    manager_core(Transport transport, credentials login, manager_options options, Clock clock, Storage storage,
                 Json json)
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
    void shut_down() noexcept {
        std::shared_ptr<flight> pending;
        {
            std::lock_guard<std::mutex> gate(policy_gate_);  // waits for a policy call in progress
            closed_.store(true, std::memory_order_release);
            lease_.reset();  // an asynchronous request may still be out: its token is already marked spent
        }
        {
            std::lock_guard<std::mutex> lock(mutex_);
            pending = in_flight_;
        }
        if (pending) {
            pending->abandon();  // an executor task not yet started now never runs
            pending->complete(nullptr, {make_error_code(errc::shut_down), "the token manager was destroyed"});
        }
        if constexpr (executor_ops<executor_type_or_void>::known && detect<Transport, close_result>::value) {
            if (asynchronous_) {
                try {
                    auto self = this->shared_from_this();
                    executor_ops<executor_type_or_void>::post(transport_.get_executor(),
                                                              [self] { self->transport_.close(); });
                } catch (...) {  // nothing to post with: the request ends by its timeout
                }
            }
        }
        storage_worker_.stop();  // a store call it was running has returned (the gate above)
    }

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
                                          std::shared_ptr<const snapshot>& served, error_info& failed) {
        const std::int64_t now = now_ns();
        std::shared_ptr<flight> pending;
        bool start = false;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (closed_.load(std::memory_order_acquire)) {
                failed = {make_error_code(errc::shut_down), "async_get_token: the token manager was destroyed"};
                return nullptr;
            }
            const verdict said = session_.on_demand(now);
            switch (said.what) {
            case demand::serve:
                served = session_.current();
                return nullptr;
            case demand::fail:
                failed = session_.last_error();
                return nullptr;
            case demand::join:
                pending = in_flight_;
                joined_.fetch_add(1, std::memory_order_relaxed);
                break;
            case demand::serve_and_start:
            case demand::start_and_wait:
                pending = start_flight_locked();
                if (!pending) {
                    failed = {make_error_code(errc::policy_error), "async_get_token: out of memory starting a refresh"};
                    return nullptr;
                }
                start = true;
                if (said.what == demand::serve_and_start) served = session_.current();
                break;
            }
        }
        if (start) launch(pending);
        if (served) return nullptr;
        if (!pending->add_waiter(waiter)) {
            if (pending->result() && now_ns() < pending->result()->hard_ns) served = pending->result();
            else if (pending->result()) failed = expired_meanwhile();
            else failed = pending->error();
            return nullptr;
        }
        return pending;
    }

private:
    using executor_type_or_void = typename ::tokmgr::detail::transport_executor<Transport>::type;
    static constexpr bool coordinating = is_coordinating_storage_v<Storage>;
    static constexpr bool storage_is_async = is_async_storage_v<Storage>;
    using lease_type = typename storage_lease<Storage, coordinating>::type;

    /// A storage step, performed by blocking, under policy_gate_ (the
    /// caller holds it).
    step_outcome perform_storage(const flight_step& step) noexcept {
        step_outcome done;
        std::error_code ec;
        try {
            switch (step.kind) {
            case step_kind::take_lease:
                if constexpr (coordinating) {
                    lease_.emplace(storage_.lock(step.lease_wait, ec));
                    if (!ec && !static_cast<bool>(*lease_)) ec = make_error_code(errc::lease_timeout);
                    if (ec) lease_.reset();
                }
                done.yes = true;
                break;
            case step_kind::load:
                done.stored = storage_.load(ec);
                break;
            case step_kind::store_mark:
            case step_kind::persist:
                // For a coordinating store a compare-and-swap on the
                // generation this flight last saw, so nothing newer is
                // overwritten; the flight's last write may release the lease
                // with it (the lease is then empty).
                if constexpr (releases_with_write_v<Storage>) {
                    if (step.kind == step_kind::persist && step.last && lease_ && *lease_) {
                        done.yes = storage_.store_if_and_release(*step.set, step.expected_generation, *lease_, ec);
                        break;
                    }
                }
                if constexpr (coordinating) {
                    done.yes = storage_.store_if(*step.set, step.expected_generation, ec);
                } else {
                    storage_.store(*step.set, ec);
                    done.yes = true;
                }
                break;
            case step_kind::check_lease:
                if constexpr (coordinating) done.yes = lease_ && storage_.holds(*lease_, ec);
                else done.yes = true;
                break;
            case step_kind::send:
            case step_kind::finish:
                break;
            }
        } catch (...) {
            if constexpr (coordinating) {
                if (step.kind == step_kind::take_lease) lease_.reset();
            }
            ec = make_error_code(errc::storage_failed);
        }
        if (ec) storage_failure(done, ec);
        return done;
    }

    void storage_failure(step_outcome& done, std::error_code ec) noexcept {
        done.yes = false;
        done.stored.reset();
        done.failure.code = ec;
        try {
            done.failure.detail = storage_detail();
        } catch (...) {
        }
    }

    static error_info failure_info(errc code, const char* what) noexcept {
        error_info why;
        why.code = make_error_code(code);
        try {
            why.detail = what;
        } catch (...) {
        }
        return why;
    }

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

    void run_flight(const std::shared_ptr<flight>& pending) noexcept {
        if (pending->claim()) run_flight_claimed(pending);
    }

    /// The machine's first step of a flight just claimed.
    flight_step started() noexcept {
        const std::int64_t now = now_ns();
        std::lock_guard<std::mutex> lock(mutex_);
        try {
            return machine_.start(options_.lease_wait);
        } catch (...) {
            return machine_.fail(failure_info(errc::policy_error, "out of memory starting a login or refresh"), now);
        }
    }

    /// The machine's next step after `done`.
    flight_step advanced(step_outcome done) noexcept {
        const std::int64_t now = now_ns();
        const auto wall = clock_.wall_now();
        std::lock_guard<std::mutex> lock(mutex_);
        try {
            return machine_.advance(std::move(done), now, wall);
        } catch (...) {
            return machine_.fail(failure_info(errc::policy_error, "a policy threw during the login or refresh"), now);
        }
    }

    /// Not wait_timeout: nobody waited past max_wait; the flight's JWT
    /// expired before it ended (as before, when it was reported as none).
    static error_info expired_meanwhile() noexcept {
        return failure_info(errc::protocol_error,
                            "the login or refresh produced a JWT that expired before it could be served");
    }

    flight_step shut_down_step() noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        return machine_.fail(failure_info(errc::shut_down, "the token manager was destroyed"), now_ns());
    }

    /// The synchronous driver: every step on this thread, holding the policy
    /// gate so that ~token_manager() waits for it.
    void run_flight_claimed(const std::shared_ptr<flight>& pending) noexcept {
        flight_runner_mark mark(id_);
        std::lock_guard<std::mutex> gate(policy_gate_);
        flight_step step = started();
        for (;;) {
            if (closed_.load(std::memory_order_acquire)) step = shut_down_step();
            if (step.kind == step_kind::finish) break;
            account(step);
            step = advanced(step.kind == step_kind::send ? send_blocking(step) : perform_storage(step));
        }
        finish_flight(pending, step);
        lease_.reset();
    }

    step_outcome send_blocking(const flight_step& step) noexcept {
        std::optional<outgoing> sending;
        try {
            sending.emplace(prepare(step));
        } catch (...) {
            step_outcome done;
            done.failure = failure_info(errc::policy_error, "a policy threw before the login or refresh was sent");
            return done;
        }
        std::error_code ec;
        http_response response;
        try {
            if constexpr (detect<Transport, send_result>::value) response = transport_.send(sending->request, ec);
            else ec = make_error_code(errc::invalid_configuration);
        } catch (...) {
            ec = make_error_code(errc::policy_error);
        }
        return judged(*sending, step.request, ec, response);
    }

    /// The request of a send step (the Json policy writes its body).
    outgoing prepare(const flight_step& step) {
        outgoing sending;
        sending.by_login = step.by_login;
        if (step.by_login) {
            logins_.fetch_add(1, std::memory_order_relaxed);
            sending.body = secret(json_.login_body(credentials_.user_name, credentials_.password.reveal()));
            sending.sent_secret = credentials_.password;
        } else {
            refreshes_.fetch_add(1, std::memory_order_relaxed);
            sending.body = secret(json_.refresh_body(step.refresh_token.reveal()));
            sending.sent_secret = step.refresh_token;
        }
        sending.request.method = "POST";
        sending.request.target = step.by_login ? options_.login_path : options_.refresh_path;
        sending.request.body = sending.body.reveal();
        sending.started = std::chrono::steady_clock::now();
        return sending;
    }

    step_outcome judged(const outgoing& sent, std::uint64_t request, std::error_code ec,
                        http_response& response) noexcept {
        step_outcome done;
        done.request = request;
        try {
            done.reply = judge(sent, ec, response);
            done.took = std::chrono::steady_clock::now() - sent.started;
        } catch (...) {
            secure_clear(response.body);
            done.reply.reset();
            done.failure = failure_info(errc::policy_error, sent.by_login
                                                                ? "login: a policy threw while its answer was read"
                                                                : "refresh: a policy threw while its answer was read");
        }
        return done;
    }

    /// Before a step is performed: its events and counts.
    void account(const flight_step& step) noexcept {
        if (step.counts_failure) failures_.fetch_add(1, std::memory_order_relaxed);
        for (std::size_t i = 0; i < step.note_count; ++i) emit_note(step.notes[i]);
    }

    void emit_note(const flight_note& note) const noexcept {
        emit({note.kind, note.code, note.generation, note.took});
    }

    /// Ends the flight with what the machine's finish step says, answers its
    /// waiters, then tells the step's events.
    void finish_flight(const std::shared_ptr<flight>& pending, const flight_step& step) noexcept {
        if (step.counts_failure) failures_.fetch_add(1, std::memory_order_relaxed);
        end_flight(pending, step.failure);
        for (std::size_t i = 0; i < step.note_count; ++i) emit_note(step.notes[i]);
    }

    // ---- the asynchronous driver ------------------------------------------------
    //
    // Performs the same steps as asynchronous operations: the request through
    // the transport's async_send, the store through its asynchronous form or,
    // for a blocking store, on storage_worker_'s thread. Each outcome is
    // posted back to the transport's executor, where the machine is advanced:
    // no policy call that can block runs on that executor.

    void async_begin(const std::shared_ptr<flight>& pending) noexcept {
        if (!pending->claim()) return;
        async_perform(pending, started());
    }

    void async_perform(const std::shared_ptr<flight>& pending, flight_step step) noexcept {
        if (closed_.load(std::memory_order_acquire)) step = shut_down_step();
        if (step.kind == step_kind::finish) {
            // The lease goes back before the waiters are answered: a flight
            // one of them starts then finds it released (the storage thread
            // runs tasks in order).
            release_lease_async();
            std::lock_guard<std::mutex> gate(policy_gate_);  // ~token_manager() waits for its hooks
            finish_flight(pending, step);
            return;
        }
        {
            std::lock_guard<std::mutex> gate(policy_gate_);
            account(step);
        }
        if (step.kind == step_kind::send) async_send_step(pending, std::move(step));
        else async_storage_step(pending, std::move(step));
    }

    /// An outcome, back on the transport's executor.
    void async_advance(const std::shared_ptr<flight>& pending, step_outcome done) noexcept {
        if (!in_progress(pending)) return;  // shut down meanwhile: its waiters were answered
        async_perform(pending, advanced(std::move(done)));
    }

    void post_back(const std::shared_ptr<flight>& pending, step_outcome done) noexcept {
        if constexpr (executor_ops<executor_type_or_void>::known) {
            try {
                auto self = this->shared_from_this();
                auto box = std::make_shared<step_outcome>(std::move(done));
                executor_ops<executor_type_or_void>::post(
                    transport_.get_executor(), [self, pending, box] { self->async_advance(pending, std::move(*box)); });
                return;
            } catch (...) {
            }
        }
        std::lock_guard<std::mutex> gate(policy_gate_);
        finish_flight(pending, [&] {
            std::lock_guard<std::mutex> lock(mutex_);
            return machine_.fail(failure_info(errc::policy_error,
                                              "could not post the storage's answer to the transport's executor"),
                                 now_ns());
        }());
        lease_.reset();
    }

    void async_storage_step(const std::shared_ptr<flight>& pending, flight_step step) noexcept {
        if constexpr (storage_is_async) {
            async_storage_native(pending, std::move(step));
        } else {
            bool queued = false;
            try {
                auto self = this->shared_from_this();
                auto kept = std::make_shared<flight_step>(std::move(step));
                auto ticket = std::make_shared<storage_ticket>(self, pending);
                auto work = outstanding_work();
                queued = to_storage([self, pending, kept, ticket, work] {
                    ticket->ran = true;
                    step_outcome done;
                    if (!self->perform_storage_gated(*kept, done)) return;  // shut down: its waiters were answered
                    self->post_back(pending, std::move(done));
                });
                if (!queued) ticket->ran = true;  // answered below, not by the ticket
            } catch (...) {
            }
            if (!queued) {
                step_outcome failed;
                failed.failure = failure_info(errc::storage_failed, " (no thread to run the store on)");
                post_back(pending, std::move(failed));
            }
        }
    }

    /// A blocking store call on the storage thread, under the policy gate; a
    /// wait for the lease in slices, the gate let go between them, so that
    /// ~token_manager() never waits for another process's lease. False when
    /// the manager shut down.
    bool perform_storage_gated(flight_step& step, step_outcome& done) noexcept {
        using namespace std::chrono;
        flight_runner_mark mark(id_);
        const auto deadline = std::chrono::steady_clock::now() + step.lease_wait;
        const milliseconds total = step.lease_wait;
        for (;;) {
            {
                std::lock_guard<std::mutex> gate(policy_gate_);
                if (closed_.load(std::memory_order_acquire)) return false;
                if (step.kind == step_kind::take_lease)
                    step.lease_wait = std::clamp(duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now()),
                                                 milliseconds(0), std::min(total, milliseconds(100)));
                done = perform_storage(step);
            }
            if (step.kind != step_kind::take_lease || done.failure.code != errc::lease_timeout ||
                std::chrono::steady_clock::now() >= deadline)
                return true;
        }
    }

    /// Held by a store call out on another thread: see work_tracking.
    auto outstanding_work() {
        if constexpr (executor_ops<executor_type_or_void>::known)
            return work_tracking<executor_type_or_void>::keep(transport_.get_executor());
        else
            return 0;
    }

    /// Hands a blocking store call to manager_options::storage_executor, or
    /// to the manager's own storage thread.
    bool to_storage(std::function<void()> task) noexcept {
        if (!options_.storage_executor) return storage_worker_.post(std::move(task));
        try {
            options_.storage_executor(std::move(task));
            return true;
        } catch (...) {
            return false;
        }
    }

    /// A store call handed to manager_options::storage_executor: if the
    /// executor destroys it unrun, the flight ends instead of waiting forever.
    struct storage_ticket {
        std::weak_ptr<manager_core> core;
        std::shared_ptr<flight> pending;
        bool ran = false;
        storage_ticket(std::weak_ptr<manager_core> owner, std::shared_ptr<flight> flight_of)
            : core(std::move(owner)), pending(std::move(flight_of)) {}
        ~storage_ticket() {
            if (ran) return;
            if (auto owner = core.lock(); owner && !owner->closed_.load(std::memory_order_acquire)) {
                step_outcome dropped;
                dropped.failure =
                    failure_info(errc::storage_failed, " (manager_options::storage_executor dropped the call unrun)");
                owner->post_back(pending, std::move(dropped));
            }
        }
    };

    /// A store with the asynchronous form: started under the policy gate (so
    /// ~token_manager() waits for the call), completed by posting back.
    void async_storage_native(const std::shared_ptr<flight>& pending, flight_step step) noexcept {
        if constexpr (storage_is_async) {
            std::lock_guard<std::mutex> gate(policy_gate_);
            if (closed_.load(std::memory_order_acquire)) return;
            try {
                auto self = this->shared_from_this();
                auto work = outstanding_work();
                auto failed = [self, pending, work](std::error_code ec) {
                    step_outcome done;
                    self->storage_failure(done, ec ? ec : make_error_code(errc::storage_failed));
                    self->post_back_unlocked_later(pending, std::move(done));
                };
                auto decided = [self, pending, failed, work](std::error_code ec, bool yes) {
                    if (ec) return failed(ec);
                    step_outcome done;
                    done.yes = yes;
                    self->post_back_unlocked_later(pending, std::move(done));
                };
                switch (step.kind) {
                case step_kind::take_lease:
                    if constexpr (coordinating) {
                        storage_.async_lock(step.lease_wait, [self, pending, failed, work](std::error_code ec, lease_type lease) {
                            if (!ec && !static_cast<bool>(lease)) ec = make_error_code(errc::lease_timeout);
                            if (ec) return failed(ec);
                            self->post_lease_back(pending, std::move(lease));
                        });
                    }
                    break;
                case step_kind::load:
                    storage_.async_load([self, pending, failed, work](std::error_code ec, std::optional<token_set> stored) {
                        if (ec) return failed(ec);
                        step_outcome done;
                        done.stored = std::move(stored);
                        self->post_back_unlocked_later(pending, std::move(done));
                    });
                    break;
                case step_kind::store_mark:
                case step_kind::persist:
                    if constexpr (coordinating) {
                        storage_.async_store_if(*step.set, step.expected_generation, decided);
                    } else {
                        storage_.async_store(*step.set, [decided](std::error_code ec) { decided(ec, true); });
                    }
                    break;
                case step_kind::check_lease:
                    if constexpr (coordinating) {
                        if (lease_) storage_.async_holds(*lease_, decided);
                        else decided({}, false);
                    }
                    break;
                case step_kind::send:
                case step_kind::finish:
                    break;
                }
            } catch (...) {
                step_outcome done;
                storage_failure(done, make_error_code(errc::storage_failed));
                // Posted, not advanced here: the policy gate is held.
                post_back_unlocked_later(pending, std::move(done));
            }
        }
    }

    /// A lease taken asynchronously becomes the flight's on the executor,
    /// under the gate (the store may have completed inline, under it).
    void post_lease_back(const std::shared_ptr<flight>& pending, lease_type lease) noexcept {
        if constexpr (coordinating && executor_ops<executor_type_or_void>::known) {
            try {
                auto self = this->shared_from_this();
                auto box = std::make_shared<std::optional<lease_type>>(std::move(lease));
                executor_ops<executor_type_or_void>::post(transport_.get_executor(), [self, pending, box] {
                    step_outcome done;
                    {
                        std::lock_guard<std::mutex> gate(self->policy_gate_);
                        if (self->closed_.load(std::memory_order_acquire)) return;
                        self->lease_ = std::move(*box);
                        done.yes = true;
                    }
                    self->async_advance(pending, std::move(done));
                });
                return;
            } catch (...) {
            }
            step_outcome done;
            storage_failure(done, make_error_code(errc::storage_failed));
            post_back_unlocked_later(pending, std::move(done));
        }
    }

    /// post_back from where the policy gate may be held: only the post.
    void post_back_unlocked_later(const std::shared_ptr<flight>& pending, step_outcome done) noexcept {
        if constexpr (executor_ops<executor_type_or_void>::known) {
            try {
                auto self = this->shared_from_this();
                auto box = std::make_shared<step_outcome>(std::move(done));
                executor_ops<executor_type_or_void>::post(
                    transport_.get_executor(), [self, pending, box] { self->async_advance(pending, std::move(*box)); });
            } catch (...) {  // no memory to post with: the flight ends at shut-down, its waiters by max_wait
            }
        }
    }

    /// Releases the flight's lease without blocking this thread: on the
    /// storage thread, or by the store's asynchronous release.
    void release_lease_async() noexcept {
        if constexpr (coordinating) {
            std::optional<lease_type> held;
            {
                std::lock_guard<std::mutex> gate(policy_gate_);
                if (!lease_) return;
                if (!static_cast<bool>(*lease_)) {  // released with the flight's last write
                    lease_.reset();
                    return;
                }
                held = std::move(lease_);
                lease_.reset();
                if constexpr (storage_is_async) {
                    if (closed_.load(std::memory_order_acquire)) return;
                    try {
                        storage_.async_release(std::move(*held), [](std::error_code) {});  // else it expires
                    } catch (...) {
                    }
                    return;
                }
            }
            if constexpr (!storage_is_async) {
                try {
                    auto self = this->shared_from_this();
                    auto box = std::make_shared<std::optional<lease_type>>(std::move(held));
                    if (to_storage([self, box, work = outstanding_work()] {
                            std::lock_guard<std::mutex> gate(self->policy_gate_);
                            box->reset();
                        }))
                        return;
                } catch (...) {
                }
                // No thread to release it on: here, rather than hold it to its expiry.
                std::lock_guard<std::mutex> gate(policy_gate_);
                held.reset();
            }
        }
    }

    void async_send_step(const std::shared_ptr<flight>& pending, flight_step step) noexcept {
        if constexpr (has_executor_v<Transport>) {
            std::shared_ptr<sent_request> kept;
            try {
                kept = std::make_shared<sent_request>();
                kept->sent = prepare(step);
                kept->request = step.request;
            } catch (...) {
                step_outcome done;
                done.failure = failure_info(errc::policy_error, "a policy threw before the login or refresh was sent");
                return async_perform(pending, advanced(std::move(done)));
            }
            try {
                auto self = this->shared_from_this();
                const http_request& request = kept->sent.request;
                transport_.async_send(request, [self, pending, kept](std::error_code ec, http_response response) {
                    flight_runner_mark mark(self->id_);
                    // A transport that completes twice, or answers a flight
                    // that ended: the copy would rotate back to a spent
                    // refresh token.
                    if (std::exchange(kept->answered, true) || !self->awaits(pending, kept->request)) {
                        secure_clear(response.body);
                        self->ignored_answers_.fetch_add(1, std::memory_order_relaxed);
                        return;
                    }
                    step_outcome done;
                    {
                        std::lock_guard<std::mutex> gate(self->policy_gate_);  // the Json policy, under the gate
                        if (self->closed_.load(std::memory_order_acquire)) {
                            secure_clear(response.body);
                            done.failure = failure_info(errc::shut_down, "the token manager was destroyed");
                        } else {
                            done = self->judged(kept->sent, kept->request, ec, response);
                        }
                    }
                    self->async_advance(pending, std::move(done));
                });
            } catch (...) {
                step_outcome done;
                done.failure = failure_info(errc::policy_error, "starting the request on the transport failed");
                async_perform(pending, advanced(std::move(done)));
            }
        }
    }

    /// The request `request` of flight `pending` is the one its machine waits for.
    bool awaits(const std::shared_ptr<flight>& pending, std::uint64_t request) const {
        std::lock_guard<std::mutex> lock(mutex_);
        return in_flight_ == pending && machine_.awaits(request);
    }

    /// The one place an HTTP answer becomes an outcome: transport errors,
    /// status → errc, the body, the JWT's lifetime.
    answer judge(const outgoing& sent, std::error_code ec, http_response& response) {
        answer reply;
        reply.by_login = sent.by_login;
        // The JWT's lifetime is counted from here, not from after storing it.
        reply.received_ns = now_ns();
        reply.received_wall = clock_.wall_now();
        const std::string where = std::string(sent.by_login ? "login" : "refresh") + " at " + endpoint_of(transport_);
        if (ec && ec != errc::unexpected_redirect) {
            const std::string said = transport_detail(transport_);
            reply.error = {ec, said.empty() ? where : where + " (" + said + ")"};
            reply.not_sent = request_not_sent(ec);
            secure_clear(response.body);
            return reply;
        }
        const int status = response.status;
        if (status >= 200 && status < 300) {
            std::error_code parse_error;
            token_pair tokens = json_.parse_token_response(response.body, parse_error);
            secure_clear(response.body);
            if (parse_error) {
                reply.error = {make_error_code(errc::protocol_error),
                               where + ": status " + std::to_string(status) + " with a body that is not JSON with " +
                                   protocol::token_response_fields()};
                return reply;
            }
            reply.tokens = std::move(tokens);
            // A policy that throws here must not lose the pair: the session
            // gets it either way, with no lifetime if it cannot be read.
            try {
                std::error_code lifetime_error;
                auto lifetime = jwt_lifetime(json_, reply.tokens->jwt.reveal(), reply.received_wall,
                                             std::chrono::nanoseconds(session_lifetimes().jwt), lifetime_error);
                if (!lifetime_error && is_header_safe_token(reply.tokens->jwt.reveal()))
                    reply.jwt_lifetime = std::min(lifetime, std::chrono::nanoseconds(max_lifetime));
                else
                    reply.error = {make_error_code(errc::protocol_error),
                                   where + (lifetime_error ? ": the JWT is already expired on arrival (check the clocks)"
                                                           : ": the JWT contains characters not allowed in a header")};
            } catch (...) {
                reply.error = {make_error_code(errc::policy_error), where + ": reading the JWT's claims threw"};
            }
            return reply;
        }
        const errc code = protocol::error_for_status(sent.by_login ? protocol::call::login : protocol::call::refresh,
                                                     status);
        std::string detail = where + ": status " + std::to_string(status);
        std::string said;
        try {
            said = sanitize_server_message(json_.error_message(response.body),
                                           {sent.sent_secret.reveal(), credentials_.password.reveal()});
        } catch (...) {
        }
        if (!said.empty()) detail += ": " + said;
        if (auto value = find_header(response.headers, "Retry-After"))
            reply.retry_after = parse_retry_after(*value, clock_.wall_now());
        secure_clear(response.body);
        reply.error = {make_error_code(code), std::move(detail)};
        return reply;
    }

    const lifetimes& session_lifetimes() const noexcept { return lifetimes_; }

    /// Ends the flight and answers its waiters: with `why`, or else with
    /// what the session holds (its last error when it holds no JWT).
    void end_flight(const std::shared_ptr<flight>& pending, const error_info& failure) noexcept {
        error_info why;
        copy_failure(why, failure);
        std::shared_ptr<const snapshot> result;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            if (in_flight_ != pending) {  // already answered (shut down): a no-op but for a race with it
                lock.unlock();
                pending->complete(nullptr, std::move(why));
                return;
            }
            machine_.ended();
            result = session_.end_flight(now_ns());
            if (result && !session_.last_error()) last_load_error_ = {};  // "empty after a success"
            in_flight_.reset();
            publication_.fetch_add(1, std::memory_order_release);
            if (!result && !why) copy_failure(why, session_.last_error());
            // A JWT that expired while the flight went on (a store that
            // stalled, an io_context stopped) is handed over all the same:
            // every waiter checks the hard threshold and asks again.
            if (!result && !why && !session_.last_error()) result = session_.current();
            if (!result && !why) why = failure_info(errc::protocol_error, "the login or refresh produced no JWT");
        }
        pending->complete(result, result ? error_info{} : std::move(why));
    }

    /// Copies a failure without throwing: out of memory, its code alone.
    static void copy_failure(error_info& to, const error_info& from) noexcept {
        to.code = from.code;
        try {
            to.detail = from.detail;
        } catch (...) {
        }
    }

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

// ---- token_manager: a thin handle on the shared core ------------------------

template <class Transport, class Clock, class Storage, class Json>
token_manager<Transport, Clock, Storage, Json>::token_manager(Transport transport, credentials login,
                                                              manager_options options, Clock clock, Storage storage,
                                                              Json json)
    : core_(std::make_shared<detail::manager_core<Transport, Clock, Storage, Json>>(
          std::move(transport), std::move(login), std::move(options), std::move(clock), std::move(storage),
          std::move(json))) {}

template <class Transport, class Clock, class Storage, class Json>
token_manager<Transport, Clock, Storage, Json>::~token_manager() {
    core_->shut_down();
}

template <class Transport, class Clock, class Storage, class Json>
secret_view token_manager<Transport, Clock, Storage, Json>::get_token(std::error_code& ec) {
    const detail::snapshot* current = core_->acquire(ec);
    return current != nullptr ? current->jwt() : secret_view();
}

template <class Transport, class Clock, class Storage, class Json>
secret_view token_manager<Transport, Clock, Storage, Json>::get_token() {
    std::error_code ec;
    const detail::snapshot* current = core_->acquire(ec);
    if (current == nullptr) detail::throw_last_failure(ec, "get_token");
    return current->jwt();
}

template <class Transport, class Clock, class Storage, class Json>
secret_view token_manager<Transport, Clock, Storage, Json>::authorization(std::error_code& ec) {
    const detail::snapshot* current = core_->acquire(ec);
    return current != nullptr ? current->authorization_header() : secret_view();
}

template <class Transport, class Clock, class Storage, class Json>
secret_view token_manager<Transport, Clock, Storage, Json>::authorization() {
    std::error_code ec;
    const detail::snapshot* current = core_->acquire(ec);
    if (current == nullptr) detail::throw_last_failure(ec, "authorization");
    return current->authorization_header();
}

template <class Transport, class Clock, class Storage, class Json>
token_handle token_manager<Transport, Clock, Storage, Json>::get_token_handle(std::error_code& ec) {
    return token_handle(core_->acquire_shared(ec));
}

template <class Transport, class Clock, class Storage, class Json>
token_handle token_manager<Transport, Clock, Storage, Json>::get_token_handle() {
    std::error_code ec;
    token_handle handle(core_->acquire_shared(ec));
    if (!handle) detail::throw_last_failure(ec, "get_token_handle");
    return handle;
}

template <class Transport, class Clock, class Storage, class Json>
void token_manager<Transport, Clock, Storage, Json>::invalidate(secret_view jwt) {
    core_->invalidate(jwt);
}

template <class Transport, class Clock, class Storage, class Json>
manager_counters token_manager<Transport, Clock, Storage, Json>::counters() const noexcept {
    return core_->counters();
}

template <class Transport, class Clock, class Storage, class Json>
error_info token_manager<Transport, Clock, Storage, Json>::last_error() const {
    return core_->last_error();
}

template <class Transport, class Clock, class Storage, class Json>
const Clock& token_manager<Transport, Clock, Storage, Json>::clock() const noexcept {
    return core_->clock();
}

}  // namespace tokmgr
