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

#include "../detail/flight.hpp"
#include "../detail/jwt_lifetime.hpp"
#include "../detail/retry_after.hpp"
#include "../detail/snapshot.hpp"
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
        for (auto at = text.find(s); at != std::string::npos; at = text.find(s, at))
            text.replace(at, s.size(), redacted_text);
    }
    for (char& c : text)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    if (text.size() > 200) text.resize(200);
    return text;
}

/// Kept out of line and cold, so the throwing overloads' success path is the
/// error_code overload's.
[[noreturn]] inline void throw_last_failure(std::error_code ec, const char* call) {
    const error_info& why = thread_cache::local().last_failure;
    throw error(why.code == ec ? why : error_info{ec, call});
}

inline std::uint64_t next_manager_id() noexcept {
    static std::atomic<std::uint64_t> last{0};
    return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

/// The outcome of one login or refresh attempt (after any fallback).
struct attempt {
    std::optional<token_pair> tokens;
    bool by_login = false;  ///< which request produced `tokens`
    error_info error;
    std::optional<std::chrono::seconds> retry_after;
    bool refresh_token_spent = false;  ///< the server may have rotated it: never send it again
    std::int64_t received_ns = 0;      ///< manager clock when the answer arrived
    std::chrono::system_clock::time_point received_wall{};
    std::chrono::nanoseconds took{0};
};

/// A JWT goes into an HTTP header: visible ASCII only, no spaces, so a
/// malicious or broken answer cannot inject header lines.
inline bool is_header_safe_token(std::string_view token) noexcept {
    for (char c : token)
        if (c <= 0x20 || c >= 0x7f) return false;
    return !token.empty();
}

inline constexpr std::int64_t never = std::numeric_limits<std::int64_t>::min();

template <class Transport, class Clock, class Storage, class Json>
class manager_core : public std::enable_shared_from_this<manager_core<Transport, Clock, Storage, Json>> {
public:
    manager_core(Transport transport, credentials login, manager_options options, Clock clock, Storage storage,
                 Json json)
        : clock_(std::move(clock)),
          transport_(std::move(transport)),
          storage_(std::move(storage)),
          json_(std::move(json)),
          credentials_(std::move(login)),
          options_(std::move(options)) {
        if (error_info invalid = validate(options_)) throw error(invalid);
        lifetimes_ = options_.assumed_lifetimes ? *options_.assumed_lifetimes : lifetimes_from_environment();
        random_.seed(options_.jitter_seed != 0 ? options_.jitter_seed
                                               : (std::uint64_t(std::random_device{}()) << 32) ^ std::random_device{}());
        std::error_code ec;
        if (auto stored = storage_.load(ec); stored && !ec) {
            std::lock_guard<std::mutex> lock(mutex_);
            adopt_locked(*stored);
        } else if (ec) {
            last_error_ = {ec, "loading the stored token set"};
        }
    }

    // ---- the hot path ------------------------------------------------------

    /// On failure, this thread's thread_cache::last_failure says why.
    const snapshot* acquire(std::error_code& ec) {
        const std::int64_t now = now_ns();
        cache_slot& slot = thread_cache::local().slot_for(id_);
        if (slot.publication == publication_.load(std::memory_order_acquire) && now < slot.serve_until_ns) {
            ec.clear();
            return slot.current.get();
        }
        return acquire_slow(now, ec);
    }

    std::shared_ptr<const snapshot> acquire_shared(std::error_code& ec) {
        if (acquire(ec) == nullptr) return nullptr;
        return thread_cache::local().slot_for(id_).current;  // acquire left its result there
    }

    // ---- the rest ----------------------------------------------------------

    void invalidate(secret_view jwt) {
        std::uint64_t generation = 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!current_ || !(current_->jwt() == jwt)) return;  // already replaced: nothing to do
            generation = current_->generation;
            current_.reset();
            publication_.fetch_add(1, std::memory_order_release);
        }
        emit({event_kind::invalidated, {}, generation, {}});
    }

    manager_counters counters() const noexcept {
        return {logins_.load(std::memory_order_relaxed), refreshes_.load(std::memory_order_relaxed),
                failures_.load(std::memory_order_relaxed), joined_.load(std::memory_order_relaxed)};
    }

    error_info last_error() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return last_error_;
    }

    const Clock& clock() const noexcept { return clock_; }

    /// An executor destroyed a refresh task without running it: end the
    /// flight, so nobody waits for it, and let the next caller try again.
    void abandon(const std::shared_ptr<flight>& pending) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (in_flight_ == pending) in_flight_.reset();
            publication_.fetch_add(1, std::memory_order_release);
        }
        pending->complete(nullptr, {make_error_code(errc::shut_down), "refresh: the executor dropped the task"});
    }

private:
    /// A refresh handed to the executor. Exactly one of three things happens
    /// to it: the executor runs it, the caller runs it because the executor
    /// threw, or it is destroyed unrun and the flight is abandoned.
    struct ticket {
        std::weak_ptr<manager_core> core;
        std::shared_ptr<flight> pending;
        std::atomic<int> state{0};  // 0 waiting, 1 claimed by a runner, 2 abandoned

        bool claim() noexcept {
            int expected = 0;
            return state.compare_exchange_strong(expected, 1);
        }
        ~ticket() {
            int expected = 0;
            if (!state.compare_exchange_strong(expected, 2)) return;
            if (auto owner = core.lock()) owner->abandon(pending);
            else pending->complete(nullptr, {make_error_code(errc::shut_down), "refresh"});
        }
    };

    std::int64_t now_ns() const noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_.now().time_since_epoch()).count();
    }

    /// Stores what this thread may serve, and until when, in its cache slot,
    /// looked up anew: a flight may have run code (hooks, policies) that used
    /// other managers on this thread and moved this manager's slot.
    const snapshot* remember(std::shared_ptr<const snapshot> served, std::uint64_t publication,
                             std::int64_t serve_until) {
        cache_slot& slot = thread_cache::local().slot_for(id_);
        slot.current = std::move(served);
        slot.publication = publication;
        slot.serve_until_ns = serve_until;
        return slot.current.get();
    }

    const snapshot* acquire_slow(std::int64_t now, std::error_code& ec) {
        auto fail = [&](const error_info& why) -> const snapshot* {
            ec = why.code;
            thread_cache::local().last_failure = why;
            return nullptr;
        };
        ec.clear();
        std::unique_lock<std::mutex> lock(mutex_);
        const std::shared_ptr<const snapshot> current = current_;
        const std::uint64_t publication = publication_.load(std::memory_order_relaxed);
        if (current && now < current->soft_ns) return remember(current, publication, current->soft_ns);
        if (current && now < current->hard_ns) {
            // Soft-expired: serve the current JWT; at most one caller refreshes.
            // Until something is published (the refresh ends, successfully or
            // not), other callers serve it from their own cache, lock-free.
            if (in_flight_) return remember(current, publication, current->hard_ns);
            if (now < next_attempt_ns_)
                return remember(current, publication, std::min(current->hard_ns, next_attempt_ns_));
            auto pending = begin_flight_locked();
            lock.unlock();
            if (options_.executor && hand_to_executor(pending))
                return remember(current, publication, current->hard_ns);
            run_flight(pending);
            if (pending->result()) return remember(pending->result(), 0, never);
            lock.lock();  // the refresh failed: is this JWT still current and before its hard threshold?
            if (current_ == current && now_ns() < current->hard_ns)
                return remember(current, publication_.load(std::memory_order_relaxed), never);
            lock.unlock();
            return fail(pending->error());
        }
        // No JWT that may be served: wait for the one login or refresh.
        std::shared_ptr<flight> pending = in_flight_;
        if (pending) {
            joined_.fetch_add(1, std::memory_order_relaxed);
            lock.unlock();
            pending->wait();
        } else if (last_error_ && now < next_attempt_ns_) {
            return fail(last_error_);  // backing off: fail fast instead of hammering the server
        } else {
            pending = begin_flight_locked();
            lock.unlock();
            run_flight(pending);
        }
        if (!pending->result()) return fail(pending->error());
        return remember(pending->result(), 0, never);
    }

    std::shared_ptr<flight> begin_flight_locked() {
        in_flight_ = std::make_shared<flight>();
        return in_flight_;
    }

    /// False when the caller must run the flight itself because the executor
    /// threw before the task started.
    bool hand_to_executor(const std::shared_ptr<flight>& pending) {
        auto handed = std::make_shared<ticket>();
        handed->core = this->shared_from_this();
        handed->pending = pending;
        try {
            options_.executor([handed] {
                if (!handed->claim()) return;
                if (auto self = handed->core.lock()) self->run_flight(handed->pending);
                else handed->pending->complete(nullptr, {make_error_code(errc::shut_down), "refresh"});
            });
        } catch (...) {
            return !handed->claim();  // claimed here: not started anywhere else, so run it inline
        }
        return true;
    }

    /// The single flight: run by exactly one thread at a time, without
    /// mutex_ held except to read and publish state. Never throws: whatever a
    /// policy or hook throws ends the flight with errc::policy_error.
    void run_flight(const std::shared_ptr<flight>& pending) noexcept {
        attempt outcome;
        std::uint64_t generation = 0;
        try {
            if (adopt_newer_from_storage(pending)) return;
            secret refresh_token;  // read after any adoption: never an older one than storage holds
            {
                std::lock_guard<std::mutex> lock(mutex_);
                if (!refresh_token_.empty() && now_ns() < refresh_hard_ns_) refresh_token = refresh_token_;
                generation = generation_;
            }
            outcome = refresh_token.empty() ? login(generation) : refresh(refresh_token, generation);
        } catch (...) {
            outcome = attempt{};
            outcome.error = {make_error_code(errc::policy_error),
                             "login or refresh at " + endpoint_of(transport_) + " ended by an exception"};
            outcome.refresh_token_spent = true;  // it may have reached the server
        }
        finish(pending, std::move(outcome), generation);
    }

    /// Another writer of the storage may have rotated already; sending our
    /// refresh token then would be a reuse. True when that left a JWT to serve.
    bool adopt_newer_from_storage(const std::shared_ptr<flight>& pending) {
        std::error_code ec;
        std::optional<token_set> stored = storage_.load(ec);
        if (ec || !stored) return false;
        std::shared_ptr<const snapshot> adopted;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!adopt_locked(*stored)) return false;
            adopted = current_;
            in_flight_.reset();
        }
        pending->complete(adopted, {});
        return true;
    }

    /// Takes over a stored token set newer than ours. Ours is replaced in any
    /// case (its refresh token must not be sent again); true when the stored
    /// JWT can be served.
    bool adopt_locked(const token_set& stored) {
        using namespace std::chrono;
        if (stored.generation <= generation_) return false;
        const std::int64_t now = now_ns();
        // A set "received" in the future (a wall clock stepped back, another
        // host's clock ahead) counts as received now, never as younger.
        const auto age = std::max(nanoseconds::zero(), duration_cast<nanoseconds>(clock_.wall_now() - stored.received_at));
        const std::int64_t received_ns = now - age.count();
        refresh_token_.clear();
        generation_ = stored.generation;
        const std::int64_t refresh_hard = refresh_deadline_ns(received_ns, stored.refresh_lifetime);
        if (now < refresh_hard && !stored.refresh_token.empty()) {
            refresh_token_ = stored.refresh_token;
            refresh_hard_ns_ = refresh_hard;
        }
        consecutive_failures_ = 0;
        next_attempt_ns_ = 0;
        last_error_ = {};
        publication_.fetch_add(1, std::memory_order_release);
        if (!is_header_safe_token(stored.jwt.reveal())) return false;
        auto adopted = make_snapshot(stored.jwt.reveal(), received_ns, nanoseconds(clamp_lifetime(stored.jwt_lifetime)),
                                     stored.generation);
        if (now >= adopted->hard_ns) return false;
        current_ = std::move(adopted);
        return true;
    }

    static std::chrono::seconds clamp_lifetime(std::chrono::seconds lifetime) noexcept {
        return std::min(lifetime, max_lifetime);
    }

    /// When a refresh token received at `received_ns` stops being sent: its
    /// lifetime minus the same leeway a JWT of that lifetime gets.
    std::int64_t refresh_deadline_ns(std::int64_t received_ns, std::chrono::seconds lifetime) const noexcept {
        const std::chrono::nanoseconds clamped(clamp_lifetime(lifetime));
        return received_ns + (clamped - leeway_for(clamped, options_.max_leeway)).count();
    }

    std::shared_ptr<const snapshot> make_snapshot(std::string_view jwt, std::int64_t received_ns,
                                                  std::chrono::nanoseconds lifetime, std::uint64_t generation) {
        const refresh_schedule schedule = schedule_for(lifetime, options_, jitter_unit());
        auto made = std::make_shared<snapshot>();
        made->authorization.reserve(options_.scheme.size() + 1 + jwt.size());
        made->authorization.append(options_.scheme).append(" ");
        made->jwt_offset = made->authorization.size();
        made->authorization.append(jwt.data(), jwt.size());
        made->soft_ns = received_ns + schedule.soft.count();
        made->hard_ns = received_ns + schedule.hard.count();
        made->generation = generation;
        return made;
    }

    double jitter_unit() { return std::uniform_real_distribution<double>(0.0, 1.0)(random_); }

    // ---- requests ----------------------------------------------------------

    attempt refresh(const secret& refresh_token, std::uint64_t generation) {
        emit({event_kind::refresh_started, {}, generation, {}});
        refreshes_.fetch_add(1, std::memory_order_relaxed);
        const secret body(json_.refresh_body(refresh_token.reveal()));
        attempt outcome = exchange(options_.refresh_path, body, "refresh", {refresh_token.reveal()});
        if (outcome.tokens) return outcome;
        emit({event_kind::refresh_failed, outcome.error.code, generation, outcome.took});
        if (outcome.error.code == errc::refresh_rejected) {
            // Expired, revoked or replaced on the server: one login instead.
            attempt fallback = login(generation);
            fallback.refresh_token_spent = true;
            return fallback;
        }
        return outcome;
    }

    attempt login(std::uint64_t generation) {
        if (credentials_.user_name.empty() && credentials_.password.empty()) {
            attempt outcome;
            outcome.error = {make_error_code(errc::no_credentials),
                             "login needed (no usable refresh token) but the manager has no credentials"};
            outcome.refresh_token_spent = true;
            return outcome;
        }
        emit({event_kind::login_started, {}, generation, {}});
        logins_.fetch_add(1, std::memory_order_relaxed);
        const secret body(json_.login_body(credentials_.user_name, credentials_.password.reveal()));
        attempt outcome = exchange(options_.login_path, body, "login", {credentials_.password.reveal()});
        outcome.by_login = true;
        if (!outcome.tokens) emit({event_kind::login_failed, outcome.error.code, generation, outcome.took});
        return outcome;
    }

    /// One POST and its interpretation. `operation` is "login" or "refresh".
    attempt exchange(const std::string& path, const secret& body, const char* operation,
                     std::initializer_list<std::string_view> sent_secrets) {
        const bool is_login = std::string_view(operation) == "login";
        http_request request;
        request.method = "POST";
        request.target = path;
        request.body = body.reveal();
        std::error_code ec;
        const auto started = std::chrono::steady_clock::now();
        http_response response = transport_.send(request, ec);
        attempt outcome;
        // The JWT's lifetime is counted from here, not from after storing it.
        outcome.received_ns = now_ns();
        outcome.received_wall = clock_.wall_now();
        outcome.took = std::chrono::steady_clock::now() - started;
        const std::string where = std::string(operation) + " at " + endpoint_of(transport_);
        if (ec) {
            failures_.fetch_add(1, std::memory_order_relaxed);
            const std::string said = transport_detail(transport_);
            outcome.error = {ec, said.empty() ? where : where + " (" + said + ")"};
            outcome.refresh_token_spent = !is_login && !request_not_sent(ec);
            secure_clear(response.body);
            return outcome;
        }
        if (response.ok()) {
            std::error_code parse_error;
            token_pair tokens = json_.parse_token_response(response.body, parse_error);
            secure_clear(response.body);
            if (!parse_error) {
                outcome.tokens = std::move(tokens);
                return outcome;
            }
            failures_.fetch_add(1, std::memory_order_relaxed);
            outcome.error = {make_error_code(errc::protocol_error),
                             where + ": status " + std::to_string(response.status) +
                                 " with a body that is not JSON with string fields \"jwt\" and \"refreshToken\""};
            outcome.refresh_token_spent = !is_login;  // the server answered 2xx: it has rotated
            return outcome;
        }
        failures_.fetch_add(1, std::memory_order_relaxed);
        const int status = response.status;
        errc code = errc::protocol_error;
        if (status >= 300 && status < 400) code = errc::unexpected_redirect;
        else if (is_login && (status == 401 || status == 403)) code = errc::credentials_rejected;
        else if (!is_login && (status == 400 || status == 401)) code = errc::refresh_rejected;
        else if (status == 429) code = errc::rate_limited;
        else if (status == 503) code = errc::service_unavailable;
        else if (status >= 500 && status < 600) code = errc::server_error;
        else if (status >= 400 && status < 500) code = errc::request_rejected;
        std::string detail = where + ": status " + std::to_string(status);
        std::string said = sanitize_server_message(json_.error_message(response.body), sent_secrets);
        secure_clear(response.body);
        if (!said.empty()) detail += ": " + said;
        if (auto value = find_header(response.headers, "Retry-After"))
            outcome.retry_after = parse_retry_after(*value, clock_.wall_now());
        outcome.error = {make_error_code(code), std::move(detail)};
        // A 5xx may come from a proxy after the auth server rotated; other
        // answers come from a server that refused before rotating.
        outcome.refresh_token_spent = !is_login && status >= 500;
        return outcome;
    }

    /// Publishes the outcome, then wakes the waiters, then tells the hook.
    void finish(const std::shared_ptr<flight>& pending, attempt outcome, std::uint64_t generation) noexcept {
        std::shared_ptr<const snapshot> published;
        try {
            published = publish(outcome, generation);
        } catch (...) {  // only allocation can throw here: end the flight all the same
            std::lock_guard<std::mutex> lock(mutex_);
            if (in_flight_ == pending) in_flight_.reset();
            publication_.fetch_add(1, std::memory_order_release);
            outcome.error = {make_error_code(errc::policy_error), "publishing the new token set failed"};
        }
        pending->complete(published, published ? error_info{} : outcome.error);
        if (published) {
            emit({outcome.by_login ? event_kind::login_succeeded : event_kind::refresh_succeeded, {},
                  generation + 1, outcome.took});
        }
    }

    /// The new snapshot, or nothing when the outcome is a failure (then
    /// `outcome.error` says why).
    std::shared_ptr<const snapshot> publish(attempt& outcome, std::uint64_t generation) {
        using namespace std::chrono;
        nanoseconds lifetime{0};
        bool serve_jwt = false;
        if (outcome.tokens) {
            std::error_code lifetime_error;
            lifetime = jwt_lifetime(json_, outcome.tokens->jwt.reveal(), outcome.received_wall,
                                    nanoseconds(lifetimes_.jwt), lifetime_error);
            lifetime = std::min(lifetime, nanoseconds(max_lifetime));
            serve_jwt = !lifetime_error && is_header_safe_token(outcome.tokens->jwt.reveal());
            if (!serve_jwt) {
                failures_.fetch_add(1, std::memory_order_relaxed);
                outcome.error = {make_error_code(errc::protocol_error),
                                 std::string(outcome.by_login ? "login" : "refresh") + " at " + endpoint_of(transport_) +
                                     (lifetime_error ? ": the JWT is already expired on arrival (check the clocks)"
                                                     : ": the JWT contains characters not allowed in a header")};
            }
        }
        error_info storage_error;
        if (serve_jwt) {
            token_set stored{outcome.tokens->jwt, outcome.tokens->refresh_token, outcome.received_wall,
                             duration_cast<seconds>(lifetime), lifetimes_.refresh, generation + 1};
            std::error_code ec;
            try {
                storage_.store(stored, ec);
            } catch (...) {
                ec = make_error_code(errc::storage_failed);
            }
            if (ec) storage_error = {ec, "storing the new token set (it is still used in memory)"};
        }
        std::lock_guard<std::mutex> lock(mutex_);
        std::shared_ptr<const snapshot> published;
        if (outcome.tokens) {
            // A new pair: its refresh token replaces ours even when its JWT
            // cannot be served, since the server has retired the old one.
            refresh_token_ = std::move(outcome.tokens->refresh_token);
            refresh_hard_ns_ = refresh_deadline_ns(outcome.received_ns, lifetimes_.refresh);
            generation_ = generation + 1;
        } else if (outcome.refresh_token_spent) {
            refresh_token_.clear();
        }
        if (serve_jwt) {
            published = make_snapshot(outcome.tokens->jwt.reveal(), outcome.received_ns, lifetime, generation + 1);
            current_ = published;
            consecutive_failures_ = 0;
            next_attempt_ns_ = 0;
            last_error_ = storage_error;
        } else {
            ++consecutive_failures_;
            next_attempt_ns_ = now_ns() + backoff_locked(outcome).count();
            last_error_ = outcome.error;
        }
        // Success or failure, something changed that every thread's cache must see.
        publication_.fetch_add(1, std::memory_order_release);
        in_flight_.reset();
        return published;
    }

    std::chrono::nanoseconds backoff_locked(const attempt& outcome) {
        using namespace std::chrono;
        if (outcome.error.code == errc::credentials_rejected) return options_.rejected_credentials_backoff;
        const int doublings = std::min(consecutive_failures_ - 1, 20);
        const nanoseconds ceiling = std::min<nanoseconds>(options_.backoff_initial * (1LL << doublings),
                                                          options_.backoff_max);
        // "Equal jitter": at least half the delay, so a failing fleet spreads out
        // without any instance retrying immediately.
        nanoseconds delay = duration_cast<nanoseconds>(ceiling * (0.5 + 0.5 * jitter_unit()));
        if (outcome.retry_after) {
            // The server's date plus up to 10% more, so a fleet told the same
            // Retry-After does not come back in the same instant.
            const nanoseconds told = std::min(*outcome.retry_after, options_.max_retry_after);
            delay = std::max(delay, duration_cast<nanoseconds>(told * (1.0 + 0.1 * jitter_unit())));
        }
        return delay;
    }

    /// Hooks are told, never obeyed: an exception from one is swallowed so it
    /// cannot end a flight halfway.
    void emit(const event& happened) const noexcept {
        if (!options_.on_event) return;
        try {
            options_.on_event(happened);
        } catch (...) {
        }
    }

    // Read by every caller of the hot path; written only when something is
    // published, so the line stays shared-clean between refreshes.
    alignas(64) std::atomic<std::uint64_t> publication_{1};
    const std::uint64_t id_ = next_manager_id();
    Clock clock_;

    // The slow path's state, guarded by mutex_.
    alignas(64) mutable std::mutex mutex_;
    std::shared_ptr<const snapshot> current_;
    std::shared_ptr<flight> in_flight_;
    secret refresh_token_;
    std::int64_t refresh_hard_ns_ = 0;
    std::uint64_t generation_ = 0;
    int consecutive_failures_ = 0;
    std::int64_t next_attempt_ns_ = 0;
    error_info last_error_;
    std::mt19937_64 random_;

    // Used only by the thread running the flight (or set once at construction).
    Transport transport_;
    Storage storage_;
    Json json_;
    const credentials credentials_;
    const manager_options options_;
    lifetimes lifetimes_;

    alignas(64) std::atomic<std::uint64_t> logins_{0};
    std::atomic<std::uint64_t> refreshes_{0};
    std::atomic<std::uint64_t> failures_{0};
    std::atomic<std::uint64_t> joined_{0};
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
token_manager<Transport, Clock, Storage, Json>::~token_manager() = default;

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
    return current != nullptr ? current->header() : secret_view();
}

template <class Transport, class Clock, class Storage, class Json>
secret_view token_manager<Transport, Clock, Storage, Json>::authorization() {
    std::error_code ec;
    const detail::snapshot* current = core_->acquire(ec);
    if (current == nullptr) detail::throw_last_failure(ec, "authorization");
    return current->header();
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
