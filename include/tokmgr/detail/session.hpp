// tokmgr/detail/session.hpp — the token state and every decision about it, as
// a plain state machine: fed with (now, event), it answers with what to do.
//
// It does no I/O, takes no locks, starts no threads and calls no policy, so it
// is deterministic and tested exhaustively on its own (tests/core/session_test).
// The drivers around it — the synchronous flight and the asynchronous one in
// token_manager — hold their mutex while they call it, and do what it says
// outside that mutex: talk to the storage, send the request, wake waiters.
//
// One flight (a login or refresh, with its storage steps) runs at a time;
// its sequence, and the rules between its steps, are detail::flight_machine's
// (flight_machine.hpp), which calls the session for every token decision.
//
// Write-ahead rule: a refresh token is sent only after the storage holds a set
// that says it is spent (`token_set::refresh_token_spent`), so that whoever
// reads the storage next logs in instead of reusing it.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>

#include "../error.hpp"
#include "../schedule.hpp"
#include "../secret.hpp"
#include "../token_set.hpp"
#include "session_options.hpp"
#include "snapshot.hpp"

namespace tokmgr::detail {

inline constexpr std::int64_t never = std::numeric_limits<std::int64_t>::min();

/// A JWT goes into an HTTP header: visible ASCII only, no spaces, so a
/// malicious or broken answer cannot inject header lines.
inline bool is_header_safe_token(std::string_view token) noexcept {
    for (char c : token)
        if (c <= 0x20 || c >= 0x7f) return false;
    return !token.empty();
}

/// What a caller is told to do.
enum class demand {
    serve,            ///< hand out `current` (cache it until `serve_until`)
    serve_and_start,  ///< hand out `current`, and run (or hand off) the flight just started
    start_and_wait,   ///< nothing may be served: run the flight just started, then take its result
    join,             ///< nothing may be served: wait for the flight in progress
    fail,             ///< nothing may be served and the manager is backing off: `last_error`
};

struct verdict {
    demand what = demand::fail;
    std::int64_t serve_until = never;  ///< for serve and serve_and_start
};

/// The request the flight sends next.
struct request_plan {
    bool refresh = false;        ///< false: log in
    secret refresh_token;        ///< for a refresh
    std::optional<token_set> spent_mark;  ///< for a refresh: store this before sending (write-ahead)
};

/// What came back from one request, already judged (status → errc happened
/// in the driver's single place for it). `tokens` is set only for a 2xx with
/// a well-formed body.
struct answer {
    bool by_login = false;
    std::optional<token_pair> tokens;
    /// The JWT's usable life from receipt (`detail::jwt_lifetime`: from its
    /// claims, less what their whole seconds may have cost, or the configured
    /// default); empty when the JWT cannot be served (already expired, claims
    /// unreadable by a throwing policy, characters not allowed in a header).
    std::optional<std::chrono::nanoseconds> jwt_lifetime;
    error_info error;
    std::optional<std::chrono::seconds> retry_after;
    bool not_sent = false;  ///< the transport proved the request never reached the server
    std::int64_t received_ns = 0;
    std::chrono::system_clock::time_point received_wall{};
};

/// What the driver does after on_answer.
struct answer_step {
    bool login_next = false;           ///< send a login within the same flight
    std::optional<token_set> persist;  ///< store this set (a new pair, or a refresh token given back)
};

class session {
public:
    /// `clock_resolution`: how far the driver's clock may lag the true time;
    /// every deadline that ends serving or sending comes that much earlier.
    /// `options`: `session_options_for(manager_options, lifetimes)`, copied.
    session(session_options options, std::uint64_t seed,
            std::chrono::nanoseconds clock_resolution = std::chrono::nanoseconds(0))
        : options_(std::move(options)), clock_resolution_ns_(clock_resolution.count()), random_(seed) {}

    // ---- what the drivers read ---------------------------------------------

    const std::shared_ptr<const snapshot>& current() const noexcept { return current_; }
    bool in_flight() const noexcept { return in_flight_; }
    const error_info& last_error() const noexcept { return last_error_; }
    std::uint64_t generation() const noexcept { return generation_; }
    bool has_refresh_token(std::int64_t now) const noexcept {
        return !refresh_token_.empty() && now < refresh_hard_ns_;
    }
    /// The refresh token was never stored (a private session, or a store
    /// that failed to keep the new pair): nobody else can hold it, so it may
    /// be sent without a spent mark while the store is unavailable.
    bool refresh_is_private() const noexcept { return private_; }

    /// The store cannot be reached and no JWT may be served: never send the
    /// shared refresh token (it cannot be marked spent); the next request is
    /// a login for this process alone. `store_generation` is what the store
    /// held when it was last seen: a newer set there later is the shared
    /// session to rejoin.
    void go_private(std::uint64_t store_generation) noexcept {
        if (!private_) left_at_ = store_generation;
        private_ = true;
        refresh_token_.clear();
    }

    /// The store kept the set this flight produced: the session is shared
    /// again. True when that ended a private session.
    bool on_persisted() noexcept { return std::exchange(private_, false); }

    // ---- callers -----------------------------------------------------------

    /// A caller wants a JWT at `now`. Starts the flight when one is due (the
    /// caller then owns running or handing it off).
    verdict on_demand(std::int64_t now) {
        const snapshot* jwt = current_.get();
        if (jwt != nullptr && now < jwt->soft_ns) return {demand::serve, jwt->soft_ns};
        if (jwt != nullptr && now < jwt->hard_ns) {
            // Soft-expired: keep serving; at most one refresh at a time.
            if (in_flight_) return {demand::serve, jwt->hard_ns};
            if (now < next_attempt_ns_) return {demand::serve, std::min(jwt->hard_ns, next_attempt_ns_)};
            in_flight_ = true;
            return {demand::serve_and_start, jwt->hard_ns};
        }
        if (in_flight_) return {demand::join};
        if (last_error_ && now < next_attempt_ns_) return {demand::fail};
        in_flight_ = true;
        return {demand::start_and_wait};
    }

    /// The service rejected `jwt` (a 401). Only the current JWT counts, as
    /// the bare token or as "<scheme> <jwt>". It stops being served at once,
    /// unless a forced refresh already happened within
    /// `min_forced_refresh_interval`: then it is served until that interval is
    /// over, so a service that rejects every JWT cannot drive one refresh per
    /// call. True when something changed (publish).
    bool invalidate(secret_view jwt, std::int64_t now) {
        if (!current_ || !(current_->jwt() == jwt || current_->authorization_header() == jwt)) return false;
        const std::int64_t floor =
            last_forced_ns_ == never
                ? now
                : last_forced_ns_ + std::chrono::nanoseconds(options_.min_forced_refresh_interval).count();
        const std::int64_t stop = std::max(now, floor);
        if (stop >= current_->hard_ns) return false;  // it stops then anyway
        if (stop <= now) {
            current_.reset();
            forced_pending_ = true;
            return true;
        }
        if (current_->hard_ns == stop) return false;
        auto shortened = copy_snapshot(*current_);
        shortened->soft_ns = std::min(shortened->soft_ns, stop);
        shortened->hard_ns = stop;
        current_ = std::move(shortened);
        forced_pending_ = true;
        return true;
    }

    // ---- the flight --------------------------------------------------------

    /// The storage's set, read at the start of the flight. A newer set than
    /// ours (another writer rotated, or marked our refresh token spent) is
    /// adopted. True when that left a JWT to serve: the flight then ends
    /// without a request.
    bool on_stored(const std::optional<token_set>& stored, std::int64_t now,
                   std::chrono::system_clock::time_point wall_now) {
        // A private session rejoins any set written since it left, even one
        // whose generation its own private rotations have overtaken.
        const bool rejoin = private_ && stored && stored->generation > left_at_;
        if (!stored || (stored->generation <= generation_ && !rejoin)) return false;
        return adopt(*stored, now, wall_now);
    }

    /// The stored set could not be read and was set aside: it may have said
    /// our refresh token is spent, so the next request is a login.
    void forget_refresh_token() noexcept { retire_refresh_token(); }

    /// The trust rule for a refresh token shared through a coordinating
    /// store, applied to what the store held when it was just read under the
    /// lease, after on_stored (which adopts a newer set). A shared token is
    /// sent only if the store holds exactly it, at our generation, unspent.
    /// A store that is empty (a file deleted, a key evicted, a Redis
    /// restarted without persistence), went back in time, or holds another
    /// token may have lost the mark of a refresh another process made with
    /// our token: ours is not sent. What the store holds instead is adopted
    /// when its refresh token is unspent, it was received after the set held
    /// here, and it is not one this process has seen replaced or spent
    /// (another process's login after the store was emptied); otherwise the
    /// next request is a login. A private token
    /// (never written to the store) keeps its own rules. True when a JWT to
    /// serve was adopted: the flight ends without a request.
    bool on_store_read(const std::optional<token_set>& stored, std::int64_t now,
                       std::chrono::system_clock::time_point wall_now) {
        if (private_) return false;
        const bool vouched = stored && stored->generation == generation_ && !stored->refresh_token_spent &&
                             !refresh_token_.empty() && stored->refresh_token == refresh_token_;
        if (vouched) return false;
        retire_refresh_token();
        // Another process's login after the store was emptied is newer than
        // what this session holds; a rolled-back set, or the very set held,
        // is not (the fingerprints catch what wall clocks skewed between
        // hosts would let through).
        if (!stored || stored->refresh_token_spent || stored->refresh_token.empty() ||
            stored->received_at <= held_since_ || known_retired(stored->refresh_token))
            return false;
        return adopt(*stored, now, wall_now);
    }

    /// Login or refresh, and for a refresh the spent mark to store first.
    request_plan next_request(std::int64_t now) const {
        request_plan plan;
        if (!has_refresh_token(now)) return plan;
        plan.refresh = true;
        plan.refresh_token = refresh_token_;
        // The mark keeps the JWT being served, described as it was received
        // (it may have been adopted from another writer).
        token_set mark = set_for_current_jwt();
        mark.refresh_lifetime = refresh_lifetime_;
        mark.generation = generation_ + 1;
        mark.refresh_token_spent = true;
        plan.spent_mark = std::move(mark);
        return plan;
    }

    /// The storage holds the spent mark: from now on the refresh token is
    /// never sent again, whatever happens to the request.
    void on_marked(std::uint64_t mark_generation) noexcept {
        remember_retired(refresh_token_);
        spent_token_ = std::move(refresh_token_);  // kept only to give it back if provably not sent
        refresh_token_.clear();
        spent_hard_ns_ = refresh_hard_ns_;
        generation_ = mark_generation;
    }

    /// The storage could not record the mark: nothing is sent, the refresh
    /// token stays usable, and the flight ends with `why` (the current JWT is
    /// served until its hard threshold).
    /// Nothing reached the server, so its backoff must not outlast the JWT:
    /// at the hard threshold the next caller tries again (and, if the store
    /// is still down, logs in privately) instead of getting this error.
    void on_mark_failed(const error_info& why, std::int64_t now) {
        fail_attempt(why, std::nullopt, now);
        if (current_ && current_->hard_ns > now) next_attempt_ns_ = std::min(next_attempt_ns_, current_->hard_ns);
    }

    /// The answer to the request `next_request` planned.
    answer_step on_answer(answer reply, std::int64_t now) {
        answer_step step;
        if (reply.tokens) {
            std::int64_t unservable_until = never;  // where a JWT with too little life left ends
            // The server has rotated: its refresh token replaces ours before
            // anything that can fail, so the pair is never lost.
            refresh_token_ = std::move(reply.tokens->refresh_token);
            refresh_hard_ns_ = refresh_deadline_ns(reply.received_ns, options_.refresh_lifetime);
            refresh_received_wall_ = reply.received_wall;
            held_since_ = reply.received_wall;
            refresh_lifetime_ = options_.refresh_lifetime;
            spent_token_.clear();
            generation_ += 1;
            const auto lifetime = std::chrono::duration_cast<std::chrono::seconds>(
                reply.jwt_lifetime.value_or(std::chrono::nanoseconds::zero()));
            token_set fresh;
            fresh.jwt = reply.tokens->jwt;
            fresh.refresh_token = refresh_token_;
            fresh.received_at = reply.received_wall;
            fresh.jwt_lifetime = lifetime;
            fresh.refresh_lifetime = options_.refresh_lifetime;
            fresh.generation = generation_;
            if (reply.jwt_lifetime && is_header_safe_token(reply.tokens->jwt.reveal())) {
                auto made = make_snapshot(reply.tokens->jwt.reveal(), reply.received_ns, *reply.jwt_lifetime,
                                          generation_);
                made->received_wall = reply.received_wall;
                made->lifetime = lifetime;
                if (now < made->hard_ns) {
                    current_ = std::move(made);
                    consecutive_failures_ = 0;
                    next_attempt_ns_ = 0;
                    last_error_ = {};
                    if (forced_pending_) {
                        last_forced_ns_ = now;
                        forced_pending_ = false;
                    }
                    step.persist = std::move(fresh);
                    return step;
                }
                // Two causes, told apart, neither of them the request (its
                // time is in the life left on arrival): too little life left
                // for the leeway and the clock's resolution to leave any, or
                // a threshold that passed while the answer was processed.
                const bool none_to_serve = made->hard_ns <= reply.received_ns;
                unservable_until = reply.received_ns + reply.jwt_lifetime->count();
                const std::string left =
                    std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(*reply.jwt_lifetime).count()) +
                    " ms";
                reply.error = {make_error_code(errc::protocol_error),
                               std::string(reply.by_login ? "login" : "refresh") +
                                   (none_to_serve ? ": the JWT had " + left +
                                                        " of life left on arrival, too little to serve any of it"
                                                  : ": the JWT's hard threshold (" + left +
                                                        " of life left on arrival) passed while its answer was "
                                                        "processed")};
            }
            // The new refresh token must survive even so; the JWT that
            // cannot be served is not kept (a store may refuse its bytes).
            fresh.jwt = secret();
            fresh.jwt_lifetime = std::chrono::seconds(0);
            step.persist = std::move(fresh);
            fail_attempt(reply.error, std::nullopt, now);
            // Its life ended where its claims' second did (a 1 s JWT issued
            // late in a second): one issued after that has a second of its
            // own, so the next attempt is due then, not after a backoff.
            if (unservable_until != never)
                next_attempt_ns_ = std::min(next_attempt_ns_, std::max(now, unservable_until));
            return step;
        }
        if (!reply.by_login && reply.error.code == errc::refresh_rejected) {
            // Expired, revoked or replaced on the server: one login instead,
            // in the same flight.
            spent_token_.clear();
            step.login_next = true;
            return step;
        }
        if (!reply.by_login && reply.not_sent && !spent_token_.empty()) {
            // Provably never reached the server: the token is still good.
            // Give it back, and tell the storage (a newer generation again).
            refresh_token_ = std::move(spent_token_);
            spent_token_.clear();
            refresh_hard_ns_ = spent_hard_ns_;
            generation_ += 1;
            // One receipt time describes both tokens in a stored set: the
            // older of the two, so neither is kept past its own end.
            token_set restored = set_for_current_jwt();
            restored.refresh_token = refresh_token_;
            if (refresh_received_wall_ < restored.received_at || !current_) {
                const auto jwt_end = restored.received_at + restored.jwt_lifetime;
                restored.received_at = refresh_received_wall_;
                restored.jwt_lifetime = current_ ? std::chrono::duration_cast<std::chrono::seconds>(
                                                       std::max(jwt_end - refresh_received_wall_,
                                                                std::chrono::system_clock::duration::zero()))
                                                 : std::chrono::seconds(0);
            }
            restored.refresh_lifetime = refresh_lifetime_;
            restored.generation = generation_;
            step.persist = std::move(restored);
        }
        spent_token_.clear();
        fail_attempt(reply.error, reply.retry_after, now);
        return step;
    }

    /// The storage failed to keep a set the flight produced; the set is still
    /// used in memory, and `last_error` says so. Its refresh token becomes
    /// private (sent later without a mark) only when the write certainly did
    /// not land. A coordinating store's failed write may have landed — a
    /// rename done before its directory fsync failed, a Redis reply lost
    /// after the write — and another process may adopt and spend the token:
    /// it stays shared, sent only when the store vouches for it.
    /// That holds for a private session's token too: once a write of it may
    /// have landed, it is shared (found by tests/core/flight_machine_test:
    /// a private login whose store write failed yet landed was later sent
    /// unmarked while the store was down, after another process adopted it).
    void on_persist_failed(const error_info& why, std::uint64_t store_generation, bool may_have_landed = false) {
        if (!last_error_) last_error_ = why;  // the attempt's own failure, if any, says more
        if (may_have_landed) private_ = false;
        else go_private_keeping_token(store_generation);
    }

    /// Ends the flight with a failure that is nobody's answer (a throwing
    /// policy, an allocation failure): backoff as for any failed attempt.
    void on_flight_failed(const error_info& why, std::int64_t now) {
        spent_token_.clear();
        fail_attempt(why, std::nullopt, now);
    }

    /// Ends the flight. The result is the JWT to hand every waiter, or none
    /// (then `last_error` says why).
    std::shared_ptr<const snapshot> end_flight(std::int64_t now) noexcept {
        in_flight_ = false;
        if (current_ && now < current_->hard_ns) return current_;
        return nullptr;
    }

    /// The executor dropped the flight's task without running it. Not the
    /// server's fault: no backoff, and the next caller tries again.
    void on_abandoned() noexcept { in_flight_ = false; }

private:
    /// Takes `stored` as the session's set: its generation, its refresh
    /// token if unspent and alive, its JWT if servable (then true).
    bool adopt(const token_set& stored, std::int64_t now, std::chrono::system_clock::time_point wall_now) {
        private_ = false;
        using namespace std::chrono;
        // A set "received" in the future (a wall clock stepped back, another
        // host's clock ahead) counts as received now, never as younger.
        // Compared before subtracting: a stored time near time_point::min
        // (a corrupt or hostile store) would overflow the difference and
        // pass for "received just now".
        const auto age = stored.received_at <= wall_now - max_lifetime
                             ? nanoseconds(max_lifetime)
                             : std::max(nanoseconds::zero(), duration_cast<nanoseconds>(wall_now - stored.received_at));
        const std::int64_t received_ns = now - std::min(age, nanoseconds(max_lifetime)).count();
        retire_refresh_token();
        generation_ = stored.generation;
        held_since_ = stored.received_at;
        const std::int64_t refresh_hard = refresh_deadline_ns(received_ns, stored.refresh_lifetime);
        if (!stored.refresh_token_spent && !stored.refresh_token.empty() && now < refresh_hard) {
            refresh_token_ = stored.refresh_token;
            refresh_hard_ns_ = refresh_hard;
            refresh_received_wall_ = stored.received_at;
            refresh_lifetime_ = stored.refresh_lifetime;
        }
        consecutive_failures_ = 0;
        next_attempt_ns_ = 0;
        last_error_ = {};
        if (!is_header_safe_token(stored.jwt.reveal())) return false;
        auto adopted = make_snapshot(stored.jwt.reveal(), received_ns,
                                     nanoseconds(std::min(stored.jwt_lifetime, max_lifetime)), stored.generation);
        adopted->received_wall = stored.received_at;
        adopted->lifetime = std::min(stored.jwt_lifetime, max_lifetime);
        if (now >= adopted->hard_ns) return false;
        current_ = std::move(adopted);
        return true;
    }

    /// Drops the refresh token, remembering that it is no longer to be
    /// trusted if a store shows it again.
    void retire_refresh_token() noexcept {
        remember_retired(refresh_token_);
        refresh_token_.clear();
    }

    void remember_retired(const secret& token) noexcept {
        if (!token.empty()) retired_[retired_next_++ % retired_.size()] = fingerprint(token);
    }

    bool known_retired(const secret& token) const noexcept {
        const std::uint64_t print = fingerprint(token);
        for (std::uint64_t seen : retired_)
            if (seen == print) return true;
        return false;
    }

    /// A fingerprint, not the token: nothing more of a secret outlives its
    /// use. A collision only costs a login.
    static std::uint64_t fingerprint(const secret& token) noexcept {
        return std::hash<std::string_view>{}(token.reveal()) | 1;  // never 0, the empty slot
    }

    void fail_attempt(const error_info& why, std::optional<std::chrono::seconds> retry_after, std::int64_t now) {
        ++consecutive_failures_;
        last_error_ = why;
        next_attempt_ns_ = now + backoff(why, retry_after).count();
    }

    std::chrono::nanoseconds backoff(const error_info& why, std::optional<std::chrono::seconds> retry_after) {
        using namespace std::chrono;
        if (why.code == errc::credentials_rejected) return options_.rejected_credentials_backoff;
        // Doubled step by step and capped at each step: backoff_initial times
        // 2^n could overflow int64 nanoseconds long before n reaches 20.
        nanoseconds ceiling = std::min<nanoseconds>(options_.backoff_initial, options_.backoff_max);
        for (int i = 1; i < consecutive_failures_ && ceiling < options_.backoff_max; ++i)
            ceiling = std::min<nanoseconds>(ceiling * 2, options_.backoff_max);
        // "Equal jitter": at least half the delay, so a failing fleet spreads
        // out without any instance retrying immediately.
        nanoseconds delay = duration_cast<nanoseconds>(ceiling * (0.5 + 0.5 * jitter_unit()));
        if (retry_after) {
            // The server's date plus up to 10% more, so a fleet told the same
            // Retry-After does not come back in the same instant.
            // Capped in seconds first: a Retry-After of centuries would
            // overflow on its way to nanoseconds.
            const nanoseconds told(std::min(*retry_after, options_.max_retry_after));
            delay = std::max(delay, duration_cast<nanoseconds>(told * (1.0 + 0.1 * jitter_unit())));
        }
        return delay;
    }

    /// When a refresh token received at `received_ns` stops being sent: its
    /// lifetime minus the same leeway a JWT of that lifetime gets.
    std::int64_t refresh_deadline_ns(std::int64_t received_ns, std::chrono::seconds lifetime) const noexcept {
        const std::chrono::nanoseconds clamped(std::min(lifetime, max_lifetime));
        const std::chrono::nanoseconds leeway = leeway_for(clamped, options_.schedule.max_leeway);
        return received_ns + (clamped - leeway).count() - clock_resolution_ns_;
    }

    std::shared_ptr<snapshot> make_snapshot(std::string_view jwt, std::int64_t received_ns,
                                            std::chrono::nanoseconds lifetime, std::uint64_t generation) {
        const refresh_schedule schedule = schedule_for(lifetime, options_.schedule, jitter_unit());
        auto made = std::make_shared<snapshot>();
        made->authorization.reserve(options_.scheme.size() + 1 + jwt.size());
        made->authorization.append(options_.scheme).append(" ");
        made->jwt_offset = made->authorization.size();
        made->authorization.append(jwt.data(), jwt.size());
        made->hard_ns = received_ns + schedule.hard.count() - clock_resolution_ns_;
        made->soft_ns = std::min(received_ns + schedule.soft.count(), made->hard_ns);
        made->generation = generation;
        return made;
    }

    /// A stored set holding the JWT being served (none: an empty JWT), as it
    /// was received; the caller fills in the refresh token and generation.
    token_set set_for_current_jwt() const {
        token_set set;
        if (current_) {
            set.jwt = secret(std::string(current_->jwt().reveal()));
            set.received_at = current_->received_wall;
            set.jwt_lifetime = current_->lifetime;
        } else {
            set.received_at = refresh_received_wall_;
        }
        return set;
    }

    static std::shared_ptr<snapshot> copy_snapshot(const snapshot& from) {
        auto made = std::make_shared<snapshot>();
        made->authorization = from.authorization;
        made->jwt_offset = from.jwt_offset;
        made->soft_ns = from.soft_ns;
        made->hard_ns = from.hard_ns;
        made->generation = from.generation;
        made->received_wall = from.received_wall;
        made->lifetime = from.lifetime;
        return made;
    }

    double jitter_unit() { return std::uniform_real_distribution<double>(0.0, 1.0)(random_); }

    const session_options options_;
    const std::int64_t clock_resolution_ns_;
    std::mt19937_64 random_;

    std::shared_ptr<const snapshot> current_;
    secret refresh_token_;
    std::int64_t refresh_hard_ns_ = 0;
    secret spent_token_;  ///< marked spent, in flight: given back only if provably not sent
    std::int64_t spent_hard_ns_ = 0;
    std::uint64_t generation_ = 0;
    std::chrono::system_clock::time_point refresh_received_wall_{};
    std::chrono::seconds refresh_lifetime_{0};

    void go_private_keeping_token(std::uint64_t store_generation) noexcept {
        if (!private_) left_at_ = store_generation;
        private_ = true;
    }

    bool private_ = false;
    std::uint64_t left_at_ = 0;
    /// Fingerprints of the last refresh tokens this session spent or saw
    /// replaced: a store that shows one again as current went back in time.
    std::array<std::uint64_t, 8> retired_{};
    std::size_t retired_next_ = 0;
    /// When the newest set this session adopted or received was received.
    std::chrono::system_clock::time_point held_since_{};
    bool in_flight_ = false;
    int consecutive_failures_ = 0;
    std::int64_t next_attempt_ns_ = 0;
    error_info last_error_;
    std::int64_t last_forced_ns_ = never;
    bool forced_pending_ = false;
};

}  // namespace tokmgr::detail
