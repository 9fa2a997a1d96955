// tokmgr/detail/flight_machine.hpp — one login or refresh, with its storage
// steps, as a machine with no I/O: fed the outcome of each step, it says
// which step comes next. It is the only place the flight's sequence is
// written:
//
//   take lease ─▶ load ─┬─ adopt a newer set ───────────────────────────────▶ finish
//                       ├─ login ──────────────────────────────────────────▶ send
//                       └─ refresh: store mark ─▶ check lease ──────────────▶ send
//   send ─▶ answer ─▶ persist what it gave ─▶ (a login next? ▶ send) ─▶ finish
//
// (a store without the coordinating capability has no lease steps), and the
// only place the rules between the steps live: the trust rule for a shared
// refresh token (session::on_store_read), write-ahead (the mark is stored,
// and the lease still held, before a refresh token goes out), the fallback
// to a private session when the store cannot be used, and which answer
// belongs to the flight. The token decisions themselves are the session's.
//
// Like the session, it takes no locks, starts no threads and calls no
// policy: the drivers (token_manager's synchronous and asynchronous flights)
// hold their mutex while they feed it, and perform each step outside it.
// tests/core/flight_machine_test enumerates every sequence of outcomes.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "../errc.hpp"
#include "../error.hpp"
#include "../event.hpp"
#include "../secret.hpp"
#include "../token_set.hpp"
#include "session.hpp"

namespace tokmgr::detail {

enum class step_kind {
    take_lease,   ///< storage lock(lease_wait); coordinating stores only
    load,         ///< storage load
    store_mark,   ///< store `set` (store_if against `expected_generation`) before a refresh
    check_lease,  ///< storage holds(lease)
    send,         ///< send the login (`by_login`) or the refresh of `refresh_token`
    persist,      ///< store `set` (store_if against `expected_generation`)
    finish,       ///< release the lease, end the flight with what the session holds
};

/// An event the driver emits (outside its mutex) when it performs the step:
/// before it, or, for finish, after the flight's waiters were answered.
struct flight_note {
    event_kind kind{};
    std::error_code code;
    std::uint64_t generation = 0;
    std::chrono::nanoseconds took{0};  ///< for the answer's events: how long the request took
};

struct flight_step {
    step_kind kind = step_kind::finish;
    std::chrono::milliseconds lease_wait{0};  ///< take_lease
    std::optional<token_set> set;             ///< store_mark, persist
    std::uint64_t expected_generation = 0;    ///< store_mark, persist (coordinating stores)
    /// persist: finish comes next, so the lease may be released with the
    /// write (a store with store_if_and_release)
    bool last = false;
    bool by_login = false;                    ///< send
    secret refresh_token;                     ///< send, a refresh
    std::uint64_t request = 0;                ///< send: the answer must carry it back
    /// finish: the flight ends with this failure rather than whatever the
    /// session holds (a policy threw, the manager shut down).
    error_info failure;
    bool counts_failure = false;  ///< a failed attempt for manager_counters
    std::array<flight_note, 3> notes{};
    std::size_t note_count = 0;

    void note(event_kind kind, std::uint64_t generation, std::error_code code = {},
              std::chrono::nanoseconds took = std::chrono::nanoseconds(0)) noexcept {
        if (note_count < notes.size()) notes[note_count++] = {kind, code, generation, took};
    }
};

/// How a step went. A step that threw is a failure with errc::storage_failed
/// (the store's) or errc::policy_error (anything else). For a storage step,
/// `failure.detail` is only what the store itself said, as " (...)" or
/// empty: the machine writes the sentence around it.
struct step_outcome {
    error_info failure;  ///< empty: the step succeeded
    bool yes = false;    ///< take_lease: taken; store_*, persist: written; check_lease: still held
    std::optional<token_set> stored;  ///< load
    std::optional<answer> reply;      ///< send: the judged answer
    std::uint64_t request = 0;        ///< send: the step's `request`
    std::chrono::nanoseconds took{0};  ///< send: how long the request took
};

class flight_machine {
public:
    /// `coordinating`: the store has leases and compare-and-swap.
    /// `can_log_in`: the manager has credentials.
    flight_machine(session& tokens, bool coordinating, bool can_log_in) noexcept
        : session_(tokens), coordinating_(coordinating), can_log_in_(can_log_in) {}

    bool running() const noexcept { return stage_ != stage::idle; }
    /// What this manager last saw in the store (0: nothing), across flights.
    std::uint64_t store_generation() const noexcept { return store_generation_; }
    /// A send step is out: the answer with this number is the one awaited.
    bool awaits(std::uint64_t request) const noexcept { return stage_ == stage::sending && request == request_; }

    /// The session said to start a flight.
    flight_step start(std::chrono::milliseconds lease_wait) {
        was_private_ = session_.refresh_is_private();
        private_reason_ = {};
        login_next_ = false;
        plan_ = {};
        flight_step step;
        if (coordinating_) {
            stage_ = stage::leasing;
            step.kind = step_kind::take_lease;
            step.lease_wait = lease_wait;
            return step;
        }
        stage_ = stage::loading;
        step.kind = step_kind::load;
        return step;
    }

    /// The outcome of the step last returned; `now` and `wall_now` are the
    /// driver's clock when it came.
    flight_step advance(step_outcome outcome, std::int64_t now, std::chrono::system_clock::time_point wall_now) {
        switch (stage_) {
        case stage::leasing: return on_lease(std::move(outcome), now);
        case stage::loading: return on_loaded(std::move(outcome), now, wall_now);
        case stage::marking: return on_mark_stored(std::move(outcome), now);
        case stage::checking: return on_lease_checked(outcome, now);
        case stage::sending: return on_answer(std::move(outcome), now);
        case stage::persisting: return on_persisted(std::move(outcome), now);
        case stage::idle:
        case stage::finishing: break;
        }
        return finish(flight_step{});
    }

    /// A step threw something the driver could not turn into an outcome (an
    /// allocation failure), or the manager shut down: the flight ends with
    /// `why`; a refresh token already marked stays spent.
    flight_step fail(error_info why, std::int64_t now) {
        const bool counts = why.code != errc::shut_down;
        if (counts) {
            try {
                session_.on_flight_failed(why, now);
            } catch (...) {
            }
        }
        flight_step step = finish_failed(std::move(why));
        step.counts_failure = counts;
        return step;
    }

    /// The driver ended the flight (after a finish step).
    void ended() noexcept { stage_ = stage::idle; }

private:
    enum class stage { idle, leasing, loading, marking, checking, sending, persisting, finishing };

    flight_step on_lease(step_outcome outcome, std::int64_t now) {
        if (!outcome.failure && outcome.yes) return load();
        error_info why{outcome.failure ? outcome.failure.code : make_error_code(errc::lease_timeout),
                       "waiting for the storage lease before a login or refresh" + outcome.failure.detail};
        if (why.code == errc::lease_timeout) {
            // Another holder is at work: its set will be there soon.
            session_.on_mark_failed(why, now);  // nothing was sent or spent
            return finish(flight_step{});
        }
        return without_store(std::move(why), now);
    }

    flight_step load() {
        stage_ = stage::loading;
        flight_step step;
        step.kind = step_kind::load;
        return step;
    }

    flight_step on_loaded(step_outcome outcome, std::int64_t now, std::chrono::system_clock::time_point wall_now) {
        if (outcome.failure.code == errc::storage_corrupt) {
            // Set aside, so the store is empty now; whatever it held may have
            // spent our refresh token: log in.
            store_generation_ = 0;
            session_.forget_refresh_token();
            outcome.failure = {};
            outcome.stored.reset();
        } else if (outcome.failure) {
            return without_store({outcome.failure.code,
                                  "reading the stored token set before a refresh" + outcome.failure.detail},
                                 now);
        } else {
            store_generation_ = outcome.stored ? outcome.stored->generation : 0;
        }
        bool adopted = session_.on_stored(outcome.stored, now, wall_now);
        if (coordinating_ && !adopted) adopted = session_.on_store_read(outcome.stored, now, wall_now);
        flight_step step;
        if (was_private_ && !session_.refresh_is_private()) {
            step.note(event_kind::private_session_ended, session_.generation());
            was_private_ = false;
        }
        if (adopted) return finish(std::move(step));  // another writer rotated: nothing to send
        plan_ = session_.next_request(now);
        if (!plan_.refresh) return send_login(std::move(step), now);
        if (!plan_.spent_mark) return send_refresh(std::move(step));  // a private token: nobody else holds it
        stage_ = stage::marking;
        step.kind = step_kind::store_mark;
        step.expected_generation = store_generation_;
        step.set = plan_.spent_mark;
        return step;
    }

    flight_step on_mark_stored(step_outcome outcome, std::int64_t now) {
        if (outcome.failure) {
            // The shared token cannot be marked, so it is not sent.
            error_info why{outcome.failure.code,
                           "storing the spent mark before a refresh (nothing was sent)" + outcome.failure.detail};
            if ((session_.refresh_is_private() && session_.has_refresh_token(now)) || !would_log_in_privately(now)) {
                session_.on_mark_failed(why, now);
                return finish(flight_step{});
            }
            return without_store(std::move(why), now);
        }
        if (!outcome.yes) {
            // Another writer got there first although we hold the lease (ours
            // lapsed): send nothing; the next flight reads what it wrote.
            session_.on_mark_failed({make_error_code(errc::lease_timeout),
                                     "the stored token set changed under the storage lease (nothing was sent)"},
                                    now);
            return finish(flight_step{});
        }
        if (coordinating_) store_generation_ = plan_.spent_mark->generation;
        session_.on_marked(plan_.spent_mark->generation);
        if (!coordinating_) return send_refresh(flight_step{});
        stage_ = stage::checking;
        flight_step step;
        step.kind = step_kind::check_lease;
        return step;
    }

    flight_step on_lease_checked(const step_outcome& outcome, std::int64_t now) {
        if (outcome.failure || !outcome.yes) {
            // Marked but not sent: the token is spent; the next attempt logs in.
            session_.on_flight_failed({make_error_code(errc::lease_timeout),
                                       "the storage lease was lost before the refresh was sent (nothing was sent)"},
                                      now);
            return finish(flight_step{});
        }
        return send_refresh(flight_step{});
    }

    flight_step on_answer(step_outcome outcome, std::int64_t now) {
        if (outcome.failure || !outcome.reply) return fail(std::move(outcome.failure), now);
        answer& reply = *outcome.reply;
        const bool succeeded = reply.tokens && reply.jwt_lifetime;
        const std::error_code failure = reply.error.code ? reply.error.code : make_error_code(errc::protocol_error);
        const bool by_login = reply.by_login;
        answer_step said = session_.on_answer(std::move(reply), now);
        flight_step step;
        if (!succeeded) {
            step.counts_failure = true;
            step.note(by_login ? event_kind::login_failed : event_kind::refresh_failed, session_.generation(), failure,
                      outcome.took);
        } else {
            succeeded_ = by_login ? event_kind::login_succeeded : event_kind::refresh_succeeded;
        }
        login_next_ = said.login_next;
        answered_ok_ = succeeded;
        answered_by_login_ = by_login;
        took_ = outcome.took;
        if (said.persist) {
            stage_ = stage::persisting;
            step.kind = step_kind::persist;
            // A newer set stored meanwhile wins the compare-and-swap; ours
            // then serves in memory until the next flight reads it.
            step.expected_generation = store_generation_;
            step.set = std::move(said.persist);
            step.last = !login_next_;  // after_answer finishes then
            persisting_generation_ = step.set->generation;
            return step;
        }
        return after_answer(std::move(step), now);
    }

    flight_step on_persisted(step_outcome outcome, std::int64_t now) {
        flight_step step;
        if (outcome.failure) {
            const bool was_private = session_.refresh_is_private();
            session_.on_persist_failed({outcome.failure.code, std::string("storing the token set after the ") +
                                                                  (answered_by_login_ ? "login" : "refresh") +
                                                                  " (it is still used in memory)" +
                                                                  outcome.failure.detail},
                                       store_generation_, coordinating_ && may_have_landed(outcome.failure.code));
            // A write that may have landed shares the token: no longer private.
            if (was_private && !session_.refresh_is_private())
                step.note(event_kind::private_session_ended, session_.generation());
        } else if (outcome.yes) {
            if (coordinating_) store_generation_ = persisting_generation_;
            if (session_.on_persisted()) step.note(event_kind::private_session_ended, session_.generation());
        }
        return after_answer(std::move(step), now);
    }

    flight_step after_answer(flight_step step, std::int64_t now) {
        if (login_next_) return send_login(std::move(step), now);
        if (answered_ok_) step.note(succeeded_, session_.generation(), {}, took_);
        return finish(std::move(step));
    }

    /// The store cannot be used for this flight (unreachable, failing). A
    /// shared refresh token is never sent then — it could not be marked
    /// spent. A private one may be (nobody else holds it). Otherwise the
    /// current JWT is served until its hard threshold, and past it this
    /// process logs in on its own.
    flight_step without_store(error_info why, std::int64_t now) {
        if (session_.refresh_is_private() && session_.has_refresh_token(now)) {
            plan_ = session_.next_request(now);
            plan_.spent_mark.reset();
            return send_refresh(flight_step{});
        }
        if (!would_log_in_privately(now)) {
            session_.on_mark_failed(why, now);
            return finish(flight_step{});
        }
        session_.go_private(store_generation_);
        plan_ = request_plan{};
        private_reason_ = why.code;
        return send_login(flight_step{}, now);
    }

    /// A failed write of a coordinating store may have landed (a rename
    /// done before its directory's fsync failed, a reply lost after the
    /// write) unless the store says it wrote nothing: not reached, or a
    /// value there that is not tokmgr's.
    static bool may_have_landed(std::error_code failure) noexcept {
        return failure != errc::storage_unreachable && failure != errc::storage_foreign &&
               failure != errc::storage_permissions;
    }

    bool would_log_in_privately(std::int64_t now) const noexcept {
        return !(session_.current() && now < session_.current()->hard_ns);
    }

    flight_step send_refresh(flight_step step) {
        note_went_private(step);
        // A private refresh token goes out unmarked: nobody else holds it.
        if (!plan_.spent_mark) session_.on_marked(session_.generation());
        step.kind = step_kind::send;
        step.refresh_token = plan_.refresh_token;
        step.note(event_kind::refresh_started, session_.generation());
        return sending(std::move(step));
    }

    flight_step send_login(flight_step step, std::int64_t now) {
        login_next_ = false;
        if (!can_log_in_) {
            session_.on_flight_failed({make_error_code(errc::no_credentials),
                                       "login needed (no usable refresh token) but the manager has no credentials"},
                                      now);
            return finish(std::move(step));
        }
        note_went_private(step);
        step.kind = step_kind::send;
        step.by_login = true;
        step.note(event_kind::login_started, session_.generation());
        return sending(std::move(step));
    }

    flight_step sending(flight_step step) {
        stage_ = stage::sending;
        step.request = ++request_;
        answered_ok_ = false;
        return step;
    }

    void note_went_private(flight_step& step) {
        if (!was_private_ && session_.refresh_is_private()) {
            step.note(event_kind::private_session_started, session_.generation(), private_reason_);
            was_private_ = true;
        }
    }

    flight_step finish(flight_step step) {
        stage_ = stage::finishing;
        step.kind = step_kind::finish;
        return step;
    }

    flight_step finish_failed(error_info why) {
        flight_step step = finish(flight_step{});
        step.failure = std::move(why);
        return step;
    }

    session& session_;
    const bool coordinating_;
    const bool can_log_in_;
    stage stage_ = stage::idle;
    std::uint64_t store_generation_ = 0;
    std::uint64_t persisting_generation_ = 0;
    std::uint64_t request_ = 0;
    request_plan plan_;
    bool was_private_ = false;
    std::error_code private_reason_;
    bool login_next_ = false;
    bool answered_ok_ = false;
    bool answered_by_login_ = false;
    event_kind succeeded_ = event_kind::login_succeeded;
    std::chrono::nanoseconds took_{0};
};

}  // namespace tokmgr::detail
