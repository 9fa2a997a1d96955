// The session on its own: every state a caller can find (no JWT, fresh,
// soft-expired, hard-expired) with and without a flight and a backoff, every
// stored set it can read, every answer it can get, and the write-ahead rule.
// No manager, no clock object: times are plain nanoseconds.
#include <tokmgr/detail/session.hpp>
#include <tokmgr/options.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

using namespace std::chrono_literals;
using tokmgr::detail::answer;
using tokmgr::detail::demand;
using tokmgr::detail::session;

namespace {

std::int64_t ns(std::chrono::nanoseconds d) { return d.count(); }

const std::chrono::system_clock::time_point wall_zero(std::chrono::seconds(1767225600));  // 2026-01-01

/// A session with exact thresholds (no jitter) and the times that follow
/// from a JWT's lifetime: soft = 0.75 of hard, hard = lifetime - leeway.
struct fixture {
    tokmgr::manager_options options;
    tokmgr::lifetimes assumed{30min, 10000min};
    std::optional<session> s;
    int issued = 0;

    fixture() {
        options.jitter_fraction = 0;
        reset();
    }

    /// Rebuilds the session once options changed (it keeps a copy).
    void reset() { s.emplace(tokmgr::detail::session_options_for(options, assumed), 42); }

    static std::chrono::system_clock::time_point wall(std::int64_t now) {
        return wall_zero + std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(now));
    }

    std::int64_t hard_after(std::chrono::nanoseconds lifetime) const {
        return ns(tokmgr::schedule_for(lifetime, options, 0).hard);
    }
    std::int64_t soft_after(std::chrono::nanoseconds lifetime) const {
        return ns(tokmgr::schedule_for(lifetime, options, 0).soft);
    }

    /// A 2xx with a new pair, received at `now`.
    answer pair(std::int64_t now, bool by_login, std::chrono::nanoseconds lifetime = 30min) {
        ++issued;
        answer a;
        a.by_login = by_login;
        a.tokens = tokmgr::token_pair{tokmgr::secret("jwt-" + std::to_string(issued)),
                                      tokmgr::secret("rt-" + std::to_string(issued))};
        a.jwt_lifetime = lifetime;
        a.received_ns = now;
        a.received_wall = wall(now);
        return a;
    }

    static answer failure(std::int64_t now, bool by_login, tokmgr::errc code) {
        answer a;
        a.by_login = by_login;
        a.error = {make_error_code(code), "injected"};
        a.not_sent = tokmgr::request_not_sent(make_error_code(code));
        a.received_ns = now;
        a.received_wall = wall(now);
        return a;
    }

    /// A whole successful login at `now`, from no JWT.
    void log_in(std::int64_t now, std::chrono::nanoseconds lifetime = 30min) {
        REQUIRE(s->on_demand(now).what == demand::start_and_wait);
        REQUIRE_FALSE(s->on_stored(std::nullopt, now, wall(now)));
        REQUIRE_FALSE(s->next_request(now).refresh);
        const auto step = s->on_answer(pair(now, true, lifetime), now);
        REQUIRE(step.persist);
        REQUIRE(s->end_flight(now));
    }

    /// Starts a refresh at `now` (which must be past the soft threshold) up
    /// to the request: the mark is stored. Returns the plan.
    tokmgr::detail::request_plan start_refresh(std::int64_t now) {
        const auto said = s->on_demand(now);
        REQUIRE((said.what == demand::serve_and_start || said.what == demand::start_and_wait));
        REQUIRE_FALSE(s->on_stored(std::nullopt, now, wall(now)));
        auto plan = s->next_request(now);
        REQUIRE(plan.refresh);
        REQUIRE(plan.spent_mark);
        s->on_marked(plan.spent_mark->generation);
        return plan;
    }

    /// An attempt at `now` (a refresh if there is a token, else a login)
    /// that fails with `code`; the flight ends.
    void failed_attempt(std::int64_t now, tokmgr::errc code) {
        const auto said = s->on_demand(now);
        REQUIRE((said.what == demand::serve_and_start || said.what == demand::start_and_wait));
        s->on_stored(std::nullopt, now, wall(now));
        const auto plan = s->next_request(now);
        if (plan.refresh) s->on_marked(plan.spent_mark->generation);
        s->on_answer(failure(now, !plan.refresh, code), now);
        s->end_flight(now);
    }

    /// When the session will start the next attempt, read without side
    /// effects from a soft-expired JWT's serve_until (the JWT must outlive it).
    std::int64_t next_attempt(std::int64_t now) {
        const auto said = s->on_demand(now);
        REQUIRE(said.what == demand::serve);
        return said.serve_until;
    }

    tokmgr::token_set stored_set(std::string jwt, std::string refresh_token, std::uint64_t generation,
                                 std::chrono::system_clock::time_point received, std::chrono::seconds jwt_lifetime = 30min,
                                 std::chrono::seconds refresh_lifetime = 10000min) const {
        tokmgr::token_set set;
        set.jwt = tokmgr::secret(std::move(jwt));
        set.refresh_token = tokmgr::secret(std::move(refresh_token));
        set.received_at = received;
        set.jwt_lifetime = jwt_lifetime;
        set.refresh_lifetime = refresh_lifetime;
        set.generation = generation;
        return set;
    }
};

// Its hard threshold lies far beyond any backoff here, and its soft one
// (90 h) before the refresh token's end (10,000 min).
constexpr std::chrono::nanoseconds long_life = 24h * 5;

}  // namespace

// ---- on_demand: state × flight × backoff ---------------------------------------

TEST_CASE("session: no JWT — start, join a flight in progress, fail while backing off") {
    fixture f;
    const std::int64_t t = ns(1s);
    CHECK(f.s->on_demand(t).what == demand::start_and_wait);
    CHECK(f.s->in_flight());
    CHECK(f.s->on_demand(t).what == demand::join);  // the flight in progress
    f.s->on_stored(std::nullopt, t, f.wall(t));
    f.s->next_request(t);
    f.s->on_answer(f.failure(t, true, tokmgr::errc::server_error), t);
    CHECK_FALSE(f.s->end_flight(t));
    CHECK_FALSE(f.s->in_flight());
    CHECK(f.s->on_demand(t).what == demand::fail);  // backing off, no flight
    CHECK(f.s->last_error().code == tokmgr::errc::server_error);
    // Backing off, with a flight in progress (started once the backoff was
    // over): later callers join it rather than fail.
    const std::int64_t later = t + ns(f.options.backoff_initial);
    CHECK(f.s->on_demand(later).what == demand::start_and_wait);
    CHECK(f.s->on_demand(later).what == demand::join);
}

TEST_CASE("session: a fresh JWT is served until its soft threshold, flight or not") {
    fixture f;
    f.log_in(0);
    const auto said = f.s->on_demand(ns(1min));
    CHECK(said.what == demand::serve);
    CHECK(said.serve_until == f.soft_after(30min));
    CHECK_FALSE(f.s->in_flight());
    // A fresh JWT adopted in the middle of a flight: served without joining.
    fixture g;
    REQUIRE(g.s->on_demand(0).what == demand::start_and_wait);
    REQUIRE(g.s->on_stored(g.stored_set("stored-jwt", "rt-x", 3, g.wall(0)), 0, g.wall(0)));
    const auto during = g.s->on_demand(0);
    CHECK(during.what == demand::serve);
    CHECK(during.serve_until == g.soft_after(30min));
    CHECK(std::string(g.s->current()->jwt().reveal()) == "stored-jwt");
}

TEST_CASE("session: soft-expired — one caller starts, the others are served until the hard threshold") {
    fixture f;
    f.log_in(0);
    const std::int64_t soft = f.soft_after(30min);
    const std::int64_t hard = f.hard_after(30min);
    CHECK(f.s->on_demand(soft - 1).what == demand::serve);
    const auto first = f.s->on_demand(soft);
    CHECK(first.what == demand::serve_and_start);
    CHECK(first.serve_until == hard);
    const auto second = f.s->on_demand(soft + 1);
    CHECK(second.what == demand::serve);  // flight in progress: no second start
    CHECK(second.serve_until == hard);
    CHECK(f.s->current());
}

TEST_CASE("session: soft-expired while backing off — served until the next attempt or the hard threshold") {
    fixture f;
    f.log_in(0, long_life);
    const std::int64_t t = f.soft_after(long_life) + ns(1s);
    f.failed_attempt(t, tokmgr::errc::server_error);
    const std::int64_t next = f.next_attempt(t);
    CHECK(next > t);
    CHECK(next <= t + ns(f.options.backoff_initial));
    CHECK(f.s->on_demand(next - 1).what == demand::serve);
    CHECK(f.s->on_demand(next).what == demand::serve_and_start);

    SUBCASE("the hard threshold comes first") {
        fixture g;
        g.log_in(0);
        const std::int64_t hard = g.hard_after(30min);
        const std::int64_t late = hard - ns(10ms);  // soft-expired, 10 ms before the hard threshold
        g.failed_attempt(late, tokmgr::errc::server_error);
        const auto said = g.s->on_demand(late);
        CHECK(said.what == demand::serve);
        CHECK(said.serve_until == hard);
    }
}

TEST_CASE("session: hard-expired is no JWT — start, join, or fail while backing off") {
    fixture f;
    f.log_in(0);
    const std::int64_t hard = f.hard_after(30min);
    const auto said = f.s->on_demand(hard);
    CHECK(said.what == demand::start_and_wait);  // a refresh: the refresh token is still good
    CHECK(f.s->on_demand(hard).what == demand::join);
    CHECK_FALSE(f.s->on_stored(std::nullopt, hard, f.wall(hard)));
    CHECK(f.s->next_request(hard).refresh);
    auto plan = f.s->next_request(hard);
    f.s->on_marked(plan.spent_mark->generation);
    f.s->on_answer(f.failure(hard, false, tokmgr::errc::service_unavailable), hard);
    CHECK_FALSE(f.s->end_flight(hard));  // nothing left to hand the waiters
    CHECK(f.s->on_demand(hard + 1).what == demand::fail);
}

// ---- on_stored ------------------------------------------------------------------

TEST_CASE("session: on_stored ignores nothing, older and equal generations") {
    fixture f;
    f.log_in(0);  // generation 1
    const std::string jwt(f.s->current()->jwt().reveal());
    CHECK_FALSE(f.s->on_stored(std::nullopt, 0, f.wall(0)));
    CHECK_FALSE(f.s->on_stored(f.stored_set("older", "rt-old", 0, f.wall(0)), 0, f.wall(0)));
    CHECK_FALSE(f.s->on_stored(f.stored_set("equal", "rt-eq", 1, f.wall(0)), 0, f.wall(0)));
    CHECK(std::string(f.s->current()->jwt().reveal()) == jwt);
    CHECK(f.s->generation() == 1);
    const auto plan = f.s->next_request(0);
    REQUIRE(plan.refresh);
    CHECK(plan.refresh_token.reveal() == "rt-1");  // ours, not the stored one
}

TEST_CASE("session: on_stored adopts a newer set, counted from its receipt") {
    fixture f;
    f.log_in(0);
    const std::int64_t now = ns(10min);
    // Received 5 minutes before `now` by another writer.
    CHECK(f.s->on_stored(f.stored_set("newer", "rt-newer", 7, f.wall(now) - 5min), now, f.wall(now)));
    CHECK(f.s->generation() == 7);
    CHECK(std::string(f.s->current()->jwt().reveal()) == "newer");
    CHECK(f.s->current()->hard_ns == now - ns(5min) + f.hard_after(30min));
    CHECK(f.s->current()->soft_ns == now - ns(5min) + f.soft_after(30min));
    const auto plan = f.s->next_request(now);
    REQUIRE(plan.refresh);
    CHECK(plan.refresh_token.reveal() == "rt-newer");
}

TEST_CASE("session: on_stored with the spent mark serves the JWT but never sends the token") {
    fixture f;
    f.log_in(0);
    auto mark = f.stored_set("marked", "", 2, f.wall(0));
    mark.refresh_token_spent = true;
    CHECK(f.s->on_stored(mark, ns(1min), f.wall(ns(1min))));
    CHECK(std::string(f.s->current()->jwt().reveal()) == "marked");
    CHECK_FALSE(f.s->has_refresh_token(ns(1min)));
    CHECK_FALSE(f.s->next_request(ns(1min)).refresh);  // log in next

    SUBCASE("even if a writer left the token in the set") {
        fixture g;
        auto odd = g.stored_set("marked", "rt-spent", 2, g.wall(0));
        odd.refresh_token_spent = true;
        g.s->on_stored(odd, 0, g.wall(0));
        CHECK_FALSE(g.s->has_refresh_token(0));
        CHECK_FALSE(g.s->next_request(0).refresh);
    }
}

TEST_CASE("session: on_stored with an unservable JWT keeps its refresh token") {
    fixture f;
    CHECK_FALSE(f.s->on_stored(f.stored_set("has space", "rt-kept", 4, f.wall(0)), 0, f.wall(0)));
    CHECK_FALSE(f.s->current());
    CHECK(f.s->generation() == 4);
    auto plan = f.s->next_request(0);
    REQUIRE(plan.refresh);
    CHECK(plan.refresh_token.reveal() == "rt-kept");
    // An empty JWT, and one past its hard threshold, are not served either.
    fixture g;
    CHECK_FALSE(g.s->on_stored(g.stored_set("", "rt-a", 1, g.wall(0)), 0, g.wall(0)));
    fixture h;
    const std::int64_t now = ns(1h);
    CHECK_FALSE(h.s->on_stored(h.stored_set("old-jwt", "rt-b", 1, h.wall(0)), now, h.wall(now)));
    CHECK_FALSE(h.s->current());
    CHECK(h.s->next_request(now).refresh);
}

TEST_CASE("session: a set received in the future counts as received now") {
    fixture f;
    const std::int64_t now = ns(1h);
    CHECK(f.s->on_stored(f.stored_set("ahead", "rt", 1, f.wall(now) + 20min), now, f.wall(now)));
    CHECK(f.s->current()->hard_ns == now + f.hard_after(30min));
}

TEST_CASE("session: a stored refresh token past its lifetime is not sent") {
    fixture f;
    const std::int64_t now = ns(2h);
    // Received 2 h ago with a 1 h refresh lifetime (minus its leeway).
    CHECK_FALSE(f.s->on_stored(f.stored_set("x y", "rt-expired", 1, f.wall(0), 30min, 1h), now, f.wall(now)));
    CHECK_FALSE(f.s->has_refresh_token(now));
    CHECK_FALSE(f.s->next_request(now).refresh);
    // Just before its deadline it still is.
    fixture g;
    const std::int64_t deadline = ns(1h) - ns(tokmgr::leeway_for(1h, g.options.max_leeway));
    g.s->on_stored(g.stored_set("x y", "rt-valid", 1, g.wall(0), 30min, 1h), deadline - 1, g.wall(deadline - 1));
    CHECK(g.s->has_refresh_token(deadline - 1));
    CHECK_FALSE(g.s->has_refresh_token(deadline));
}

TEST_CASE("session: adopting a newer set ends the backoff") {
    fixture f;
    const std::int64_t t = ns(1s);
    f.s->on_demand(t);
    f.s->on_stored(std::nullopt, t, f.wall(t));
    f.s->on_answer(f.failure(t, true, tokmgr::errc::server_error), t);
    f.s->end_flight(t);
    REQUIRE(f.s->on_demand(t).what == demand::fail);
    f.s->on_demand(t + ns(1s));  // starts
    CHECK(f.s->on_stored(f.stored_set("other", "rt-o", 2, f.wall(t)), t + ns(1s), f.wall(t + ns(1s))));
    f.s->end_flight(t + ns(1s));
    CHECK_FALSE(f.s->last_error());
    CHECK(f.s->on_demand(t + ns(1s)).what == demand::serve);
}

// ---- next_request and the spent mark --------------------------------------------

TEST_CASE("session: next_request logs in without a refresh token, else plans the mark") {
    fixture f;
    CHECK_FALSE(f.s->next_request(0).refresh);
    f.log_in(0);
    const std::string jwt(f.s->current()->jwt().reveal());
    const std::int64_t soft = f.soft_after(30min);
    f.s->on_demand(soft);
    const auto plan = f.s->next_request(soft);
    REQUIRE(plan.refresh);
    CHECK(plan.refresh_token.reveal() == "rt-1");
    REQUIRE(plan.spent_mark);
    const tokmgr::token_set& mark = *plan.spent_mark;
    CHECK(mark.generation == f.s->generation() + 1);
    CHECK(mark.refresh_token_spent);
    CHECK(mark.refresh_token.empty());
    CHECK(mark.jwt.reveal() == jwt);  // still servable by whoever reads it
    CHECK(mark.received_at == f.wall(0));
    CHECK(mark.jwt_lifetime == 30min);
    CHECK(mark.refresh_lifetime == f.assumed.refresh);
    // Planning changes nothing: the token is spent only once the mark is stored.
    CHECK(f.s->has_refresh_token(soft));
    CHECK(f.s->generation() == 1);
}

TEST_CASE("session: on_marked spends the token; on_mark_failed keeps it and backs off") {
    fixture f;
    f.log_in(0, long_life);
    const std::int64_t soft = f.soft_after(long_life);
    SUBCASE("marked") {
        const auto plan = f.start_refresh(soft);
        CHECK(f.s->generation() == plan.spent_mark->generation);
        CHECK_FALSE(f.s->has_refresh_token(soft));
        CHECK_FALSE(f.s->next_request(soft).refresh);
    }
    SUBCASE("the mark could not be stored") {
        f.s->on_demand(soft);
        f.s->on_stored(std::nullopt, soft, f.wall(soft));
        const auto plan = f.s->next_request(soft);
        f.s->on_mark_failed({make_error_code(tokmgr::errc::storage_failed), "injected"}, soft);
        const auto served = f.s->end_flight(soft);
        CHECK(served);  // the current JWT, still before its hard threshold
        CHECK(f.s->last_error().code == tokmgr::errc::storage_failed);
        CHECK(f.s->generation() == 1);
        CHECK(f.s->has_refresh_token(soft));
        const std::int64_t next = f.next_attempt(soft);
        CHECK(next > soft);
        const auto again = f.s->next_request(next);
        REQUIRE(again.refresh);
        CHECK(again.refresh_token.reveal() == plan.refresh_token.reveal());
    }
}

// ---- on_answer ------------------------------------------------------------------

TEST_CASE("session: a 2xx with a servable JWT replaces the pair, persists it and ends the backoff") {
    fixture f;
    f.log_in(0, long_life);
    const std::int64_t t = f.soft_after(long_life);
    f.failed_attempt(t, tokmgr::errc::server_error);  // a backoff to end; the token is spent
    const std::int64_t next = f.next_attempt(t);
    f.s->on_demand(next);
    f.s->on_stored(std::nullopt, next, f.wall(next));
    REQUIRE_FALSE(f.s->next_request(next).refresh);
    const std::uint64_t before = f.s->generation();
    const auto step = f.s->on_answer(f.pair(next, true), next);
    REQUIRE(step.persist);
    CHECK_FALSE(step.login_next);
    CHECK(step.persist->generation == before + 1);
    CHECK(f.s->generation() == before + 1);
    CHECK(step.persist->jwt.reveal() == "jwt-2");
    CHECK(step.persist->refresh_token.reveal() == "rt-2");
    CHECK_FALSE(step.persist->refresh_token_spent);
    CHECK(step.persist->received_at == f.wall(next));
    CHECK(step.persist->jwt_lifetime == 30min);
    CHECK(std::string(f.s->current()->jwt().reveal()) == "jwt-2");
    CHECK_FALSE(f.s->last_error());
    REQUIRE(f.s->end_flight(next));
    CHECK(f.s->on_demand(next).what == demand::serve);
}

TEST_CASE("session: a refresh's generations: mark g+1, new pair g+2") {
    fixture f;
    f.log_in(0);
    const std::int64_t soft = f.soft_after(30min);
    const auto plan = f.start_refresh(soft);
    CHECK(plan.spent_mark->generation == 2);
    const auto step = f.s->on_answer(f.pair(soft, false), soft);
    REQUIRE(step.persist);
    CHECK(step.persist->generation == 3);
    CHECK(step.persist->refresh_token.reveal() == "rt-2");
}

TEST_CASE("session: a 2xx whose JWT cannot be served still keeps and persists the new refresh token") {
    fixture f;
    f.log_in(0, long_life);
    const std::string old_jwt(f.s->current()->jwt().reveal());
    const std::int64_t t = f.soft_after(long_life);
    f.start_refresh(t);
    auto reply = f.pair(t, false);
    reply.jwt_lifetime.reset();  // the driver could not read or accept it
    reply.error = {make_error_code(tokmgr::errc::protocol_error), "unservable"};
    const auto step = f.s->on_answer(std::move(reply), t);
    REQUIRE(step.persist);
    CHECK(step.persist->refresh_token.reveal() == "rt-2");
    CHECK_FALSE(step.persist->refresh_token_spent);
    CHECK(step.persist->generation == 3);
    CHECK_FALSE(step.login_next);
    CHECK(f.s->last_error().code == tokmgr::errc::protocol_error);
    // The old JWT is still served until its hard threshold; the next attempt
    // refreshes with the new token, after a backoff.
    CHECK(std::string(f.s->end_flight(t)->jwt().reveal()) == old_jwt);
    const std::int64_t next = f.next_attempt(t);
    CHECK(next > t);
    const auto plan = f.s->next_request(next);
    REQUIRE(plan.refresh);
    CHECK(plan.refresh_token.reveal() == "rt-2");
}

TEST_CASE("session: a 2xx whose JWT is past its hard threshold on arrival is not served, its pair is kept") {
    fixture f;
    f.s->on_demand(0);
    f.s->on_stored(std::nullopt, 0, f.wall(0));
    auto reply = f.pair(0, true);  // received at 0, judged 29 min later: a very slow policy
    const std::int64_t judged = f.hard_after(30min);
    const auto step = f.s->on_answer(std::move(reply), judged);
    REQUIRE(step.persist);
    CHECK(step.persist->refresh_token.reveal() == "rt-1");
    CHECK(f.s->last_error().code == tokmgr::errc::protocol_error);
    CHECK_FALSE(f.s->end_flight(judged));
    CHECK(f.s->has_refresh_token(judged));
}

TEST_CASE("session: refresh_rejected falls back to a login in the same flight") {
    fixture f;
    f.log_in(0);
    const std::int64_t soft = f.soft_after(30min);
    f.start_refresh(soft);
    const auto step = f.s->on_answer(f.failure(soft, false, tokmgr::errc::refresh_rejected), soft);
    CHECK(step.login_next);
    CHECK_FALSE(step.persist);  // the stored mark already says "log in"
    CHECK(f.s->in_flight());
    CHECK_FALSE(f.s->next_request(soft).refresh);
    const auto login = f.s->on_answer(f.pair(soft, true), soft);
    CHECK(login.persist);
    CHECK_FALSE(f.s->last_error());
    // A login answered refresh_rejected (not a code a login gets) is a failure.
    fixture g;
    g.s->on_demand(0);
    const auto odd = g.s->on_answer(g.failure(0, true, tokmgr::errc::refresh_rejected), 0);
    CHECK_FALSE(odd.login_next);
}

TEST_CASE("session: a refresh provably not sent gives its token back, in a newer stored set") {
    for (auto code : {tokmgr::errc::connection_refused, tokmgr::errc::resolve_failed, tokmgr::errc::connect_timeout,
                      tokmgr::errc::tls_handshake_failed}) {
        CAPTURE(static_cast<int>(code));
        fixture f;
        f.log_in(0, long_life);
        const std::string jwt(f.s->current()->jwt().reveal());
        const std::int64_t t = f.soft_after(long_life);
        const auto plan = f.start_refresh(t);
        const auto step = f.s->on_answer(f.failure(t, false, code), t);
        REQUIRE(step.persist);
        CHECK(step.persist->refresh_token.reveal() == "rt-1");
        CHECK_FALSE(step.persist->refresh_token_spent);
        CHECK(step.persist->generation == plan.spent_mark->generation + 1);
        CHECK(step.persist->jwt.reveal() == jwt);
        CHECK(f.s->last_error().code == code);
        f.s->end_flight(t);
        const std::int64_t next = f.next_attempt(t);
        CHECK(next > t);  // still a failure: backoff
        const auto again = f.s->next_request(next);
        REQUIRE(again.refresh);
        CHECK(again.refresh_token.reveal() == "rt-1");
    }
}

TEST_CASE("session: a refresh that may have been sent leaves its token spent") {
    for (auto code : {tokmgr::errc::timeout, tokmgr::errc::connection_failed, tokmgr::errc::server_error,
                      tokmgr::errc::service_unavailable, tokmgr::errc::rate_limited, tokmgr::errc::protocol_error,
                      tokmgr::errc::response_too_large, tokmgr::errc::policy_error}) {
        CAPTURE(static_cast<int>(code));
        fixture f;
        f.log_in(0, long_life);
        const std::int64_t t = f.soft_after(long_life);
        f.start_refresh(t);
        const auto step = f.s->on_answer(f.failure(t, false, code), t);
        CHECK_FALSE(step.persist);
        CHECK_FALSE(step.login_next);
        CHECK(f.s->last_error().code == code);
        CHECK(f.s->end_flight(t));  // the JWT before its hard threshold
        const std::int64_t next = f.next_attempt(t);
        CHECK_FALSE(f.s->next_request(next).refresh);  // log in next
    }
}

TEST_CASE("session: not_sent without a marked token (a login) gives nothing back") {
    fixture f;
    f.s->on_demand(0);
    f.s->on_stored(std::nullopt, 0, f.wall(0));
    const auto step = f.s->on_answer(f.failure(0, true, tokmgr::errc::connection_refused), 0);
    CHECK_FALSE(step.persist);
    CHECK_FALSE(f.s->has_refresh_token(0));
}

// ---- backoff ----------------------------------------------------------------------

TEST_CASE("session: backoff doubles per consecutive failure, with equal jitter, up to backoff_max") {
    fixture f;
    f.options.backoff_initial = 200ms;
    f.options.backoff_max = 5s;
    f.reset();
    f.log_in(0, long_life);
    std::int64_t t = f.soft_after(long_life);
    for (int failure = 1; failure <= 12; ++failure) {
        CAPTURE(failure);
        // A refresh, then logins (the token is spent): each fails with a 5xx.
        f.failed_attempt(t, tokmgr::errc::server_error);
        const std::chrono::nanoseconds ceiling =
            std::min<std::chrono::nanoseconds>(f.options.backoff_initial * (1 << (failure - 1)), f.options.backoff_max);
        const std::int64_t delay = f.next_attempt(t) - t;
        CHECK(delay >= ns(ceiling) / 2);
        CHECK(delay <= ns(ceiling));
        t += delay;
    }
}

TEST_CASE("session: a success resets the doubling") {
    fixture f;
    f.log_in(0, long_life);
    std::int64_t t = f.soft_after(long_life);
    for (int i = 0; i < 5; ++i) {
        f.failed_attempt(t, tokmgr::errc::server_error);
        t = f.next_attempt(t);
    }
    f.s->on_demand(t);
    f.s->on_stored(std::nullopt, t, f.wall(t));
    f.s->on_answer(f.pair(t, true, long_life), t);
    f.s->end_flight(t);
    t += f.soft_after(long_life);
    f.failed_attempt(t, tokmgr::errc::server_error);
    CHECK(f.next_attempt(t) - t <= ns(f.options.backoff_initial));
}

namespace {

/// From a fresh session with `options`: the delay before the next attempt
/// after a refresh answered `code` with Retry-After `told`.
std::int64_t delay_after_retry_after(fixture& f, tokmgr::errc code, std::chrono::seconds told) {
    f.reset();
    f.log_in(0, long_life);
    const std::int64_t t = f.soft_after(long_life);
    f.start_refresh(t);
    auto reply = f.failure(t, false, code);
    reply.retry_after = told;
    f.s->on_answer(std::move(reply), t);
    f.s->end_flight(t);
    return f.next_attempt(t) - t;
}

}  // namespace

TEST_CASE("session: Retry-After is honoured, with up to 10% more, capped by max_retry_after") {
    fixture f;
    const std::int64_t delay = delay_after_retry_after(f, tokmgr::errc::rate_limited, 60s);
    CHECK(delay >= ns(60s));
    CHECK(delay <= ns(66s));

    fixture capped;
    capped.options.max_retry_after = 10s;
    const std::int64_t at_most = delay_after_retry_after(capped, tokmgr::errc::service_unavailable, 24h * 365);
    CHECK(at_most >= ns(10s));
    CHECK(at_most <= ns(11s));

    // A Retry-After shorter than the backoff does not shorten it.
    fixture longer;
    longer.options.backoff_initial = 10s;
    longer.options.backoff_max = 10s;
    CHECK(delay_after_retry_after(longer, tokmgr::errc::rate_limited, 0s) >= ns(5s));
}

TEST_CASE("session: rejected credentials back off for exactly rejected_credentials_backoff") {
    fixture f;
    f.options.rejected_credentials_backoff = 7min;
    f.reset();
    const std::int64_t t = ns(1s);
    f.s->on_demand(t);
    f.s->on_stored(std::nullopt, t, f.wall(t));
    f.s->on_answer(f.failure(t, true, tokmgr::errc::credentials_rejected), t);
    f.s->end_flight(t);
    CHECK(f.s->on_demand(t + ns(7min) - 1).what == demand::fail);
    CHECK(f.s->on_demand(t + ns(7min)).what == demand::start_and_wait);
}

TEST_CASE("session: a throwing policy (on_flight_failed) backs off and spends a marked token") {
    fixture f;
    f.log_in(0, long_life);
    const std::int64_t t = f.soft_after(long_life);
    f.start_refresh(t);
    f.s->on_flight_failed({make_error_code(tokmgr::errc::policy_error), "threw"}, t);
    f.s->end_flight(t);
    CHECK(f.s->last_error().code == tokmgr::errc::policy_error);
    const std::int64_t next = f.next_attempt(t);
    CHECK(next > t);
    CHECK_FALSE(f.s->next_request(next).refresh);
}

TEST_CASE("session: on_abandoned ends the flight without a backoff") {
    fixture f;
    f.log_in(0);
    const std::int64_t soft = f.soft_after(30min);
    REQUIRE(f.s->on_demand(soft).what == demand::serve_and_start);
    f.s->on_abandoned();
    CHECK_FALSE(f.s->in_flight());
    CHECK_FALSE(f.s->last_error());
    CHECK(f.s->on_demand(soft).what == demand::serve_and_start);  // the next caller tries again at once
}

TEST_CASE("session: on_persist_failed reports the storage but keeps serving, and the pair becomes private") {
    fixture f;
    f.log_in(0);
    CHECK_FALSE(f.s->refresh_is_private());
    f.s->on_persist_failed({make_error_code(tokmgr::errc::storage_failed), "disk full"}, 1);
    CHECK(f.s->last_error().code == tokmgr::errc::storage_failed);
    CHECK(f.s->on_demand(ns(1min)).what == demand::serve);
    CHECK(f.s->refresh_is_private());  // no other process can hold it
    CHECK(f.s->on_persisted());        // stored at last: shared again
    CHECK_FALSE(f.s->refresh_is_private());
}

// ---- invalidate and the forced-refresh floor -----------------------------------

TEST_CASE("session: invalidate only counts the current JWT, bare or with its scheme") {
    fixture f;
    f.log_in(0);
    CHECK_FALSE(f.s->invalidate(tokmgr::secret_view("someone-else"), 0));
    CHECK_FALSE(f.s->invalidate(tokmgr::secret_view(""), 0));
    CHECK_FALSE(f.s->invalidate(tokmgr::secret_view("Basic jwt-1"), 0));
    CHECK(f.s->current());
    CHECK(f.s->invalidate(tokmgr::secret_view("Bearer jwt-1"), 0));
    CHECK_FALSE(f.s->current());
    CHECK(f.s->on_demand(0).what == demand::start_and_wait);

    fixture g;
    CHECK_FALSE(g.s->invalidate(tokmgr::secret_view("jwt-1"), 0));  // no JWT at all
    g.log_in(0);
    CHECK(g.s->invalidate(tokmgr::secret_view("jwt-1"), 0));
}

TEST_CASE("session: at most one forced refresh per min_forced_refresh_interval") {
    fixture f;
    f.options.min_forced_refresh_interval = 5s;
    f.reset();
    f.log_in(0);
    const std::int64_t t = ns(1min);
    REQUIRE(f.s->invalidate(tokmgr::secret_view("jwt-1"), t));  // the first is immediate
    REQUIRE(f.s->on_demand(t).what == demand::start_and_wait);
    f.s->on_stored(std::nullopt, t, f.wall(t));
    f.s->on_marked(f.s->next_request(t).spent_mark->generation);
    f.s->on_answer(f.pair(t, false), t);
    REQUIRE(f.s->end_flight(t));
    // jwt-2 rejected 1 s later: served until the interval is over.
    CHECK(f.s->invalidate(tokmgr::secret_view("jwt-2"), t + ns(1s)));
    const auto said = f.s->on_demand(t + ns(1s));
    CHECK(said.what == demand::serve);
    CHECK(said.serve_until == t + ns(5s));
    CHECK_FALSE(f.s->invalidate(tokmgr::secret_view("jwt-2"), t + ns(2s)));  // nothing more to shorten
    CHECK(f.s->on_demand(t + ns(5s)).what == demand::start_and_wait);
}

TEST_CASE("session: a forced refresh that failed does not count against the floor") {
    fixture f;
    f.options.min_forced_refresh_interval = 5s;
    f.options.backoff_initial = 0ms;
    f.options.backoff_max = 0ms;
    f.reset();
    f.log_in(0);
    const std::int64_t t = ns(1min);
    REQUIRE(f.s->invalidate(tokmgr::secret_view("jwt-1"), t));
    f.s->on_demand(t);
    f.s->on_stored(std::nullopt, t, f.wall(t));
    f.s->on_marked(f.s->next_request(t).spent_mark->generation);
    f.s->on_answer(f.failure(t, false, tokmgr::errc::server_error), t);
    f.s->end_flight(t);
    // The login that follows succeeds: that is the forced refresh that counts.
    REQUIRE(f.s->on_demand(t).what == demand::start_and_wait);
    f.s->on_stored(std::nullopt, t, f.wall(t));
    REQUIRE_FALSE(f.s->next_request(t).refresh);
    f.s->on_answer(f.pair(t, true), t);
    REQUIRE(f.s->end_flight(t));
    CHECK(f.s->invalidate(tokmgr::secret_view("jwt-2"), t));
    CHECK(f.s->on_demand(t).what == demand::serve);  // within the floor: still served
}

TEST_CASE("session: invalidating a JWT whose hard threshold comes before the floor changes nothing") {
    fixture f;
    f.options.min_forced_refresh_interval = 10min;
    f.reset();
    f.log_in(0);
    REQUIRE(f.s->invalidate(tokmgr::secret_view("jwt-1"), 0));
    f.s->on_demand(0);
    f.s->on_stored(std::nullopt, 0, f.wall(0));
    f.s->on_marked(f.s->next_request(0).spent_mark->generation);
    f.s->on_answer(f.pair(0, false, 5min), 0);  // a JWT that ends before the floor
    REQUIRE(f.s->end_flight(0));
    const std::int64_t hard = f.s->current()->hard_ns;
    CHECK_FALSE(f.s->invalidate(tokmgr::secret_view("jwt-2"), ns(1min)));
    CHECK(f.s->current()->hard_ns == hard);
}

// ---- end_flight ---------------------------------------------------------------------

TEST_CASE("session: end_flight hands out the current JWT only before its hard threshold") {
    fixture f;
    f.log_in(0);
    const std::int64_t hard = f.hard_after(30min);
    f.s->on_demand(f.soft_after(30min));
    CHECK(f.s->end_flight(hard - 1));
    f.s->on_demand(f.soft_after(30min));
    CHECK_FALSE(f.s->end_flight(hard));
    CHECK_FALSE(f.s->in_flight());
}

// ---- found while testing ------------------------------------------------------------

TEST_CASE("session: the spent mark describes the JWT it keeps, also one adopted from storage") {
    fixture f;
    const std::int64_t now = ns(1h);
    const auto received = f.wall(now) - 10min;
    REQUIRE(f.s->on_stored(f.stored_set("adopted", "rt-a", 5, received, 20min), now, f.wall(now)));
    const auto plan = f.s->next_request(now);
    REQUIRE(plan.spent_mark);
    CHECK(plan.spent_mark->jwt.reveal() == "adopted");
    // Whoever reads the mark serves this JWT until its own hard threshold:
    // the mark must say when it was received and how long it lives.
    CHECK(plan.spent_mark->received_at == received);
    CHECK(plan.spent_mark->jwt_lifetime == 20min);
    // And a refresh token given back (provably not sent) keeps its own age.
    f.s->on_marked(plan.spent_mark->generation);
    const auto step = f.s->on_answer(f.failure(now, false, tokmgr::errc::connection_refused), now);
    REQUIRE(step.persist);
    CHECK(step.persist->refresh_token.reveal() == "rt-a");
    CHECK(step.persist->received_at == received);
    CHECK(step.persist->jwt_lifetime == 20min);
}

TEST_CASE("session: a backoff of days does not overflow after many consecutive failures") {
    // Both values pass validate(); backoff_initial * 2^17 in nanoseconds does
    // not fit in 64 bits, and must not wrap into "retry at once".
    fixture f;
    f.assumed = {30min, 24h * 365 * 10};
    f.options.backoff_initial = 24h;
    f.options.backoff_max = 24h * 7;
    REQUIRE_FALSE(tokmgr::validate(f.options));
    f.reset();
    const std::chrono::nanoseconds years = 24h * 365 * 5;
    f.log_in(0, years);
    std::int64_t t = f.soft_after(years);
    for (int failure = 1; failure <= 30; ++failure) {
        CAPTURE(failure);
        f.failed_attempt(t, tokmgr::errc::server_error);
        const auto said = f.s->on_demand(t);
        REQUIRE(said.what == demand::serve);  // backing off, not starting again
        const std::int64_t delay = said.serve_until - t;
        // 1, 2, 4 days, then the 7-day cap; at least half of it (jitter).
        const std::chrono::hours ceiling = failure <= 3 ? std::chrono::hours(24 << (failure - 1)) : 24h * 7;
        CHECK(delay >= ns(ceiling) / 2);
        CHECK(delay <= ns(f.options.backoff_max));
        t += delay;
    }
}

TEST_CASE("session: a stored set received before 1733 is ancient, not fresh") {
    // wall_now - received_at overflows 64-bit nanoseconds for such a time (a
    // corrupt or hostile store; the file and Redis stores parse it from
    // text), and must not wrap into "received just now".
    for (const auto received : {std::chrono::system_clock::time_point::min(),
                                std::chrono::system_clock::time_point(std::chrono::hours(-24 * 365 * 270))}) {
        fixture f;
        const std::int64_t now = ns(1h);
        CHECK_FALSE(f.s->on_stored(f.stored_set("ancient", "rt-ancient", 1, received), now, f.wall(now)));
        CHECK_FALSE(f.s->current());
        CHECK_FALSE(f.s->has_refresh_token(now));
    }
}

TEST_CASE("session: a huge Retry-After is capped at max_retry_after, not wrapped into a short delay") {
    // parse_retry_after accepts up to 12 digits (and IMF dates up to 9999):
    // in nanoseconds such a value does not fit in 64 bits.
    for (const std::chrono::seconds told : {std::chrono::seconds(999999999999), std::chrono::seconds(9300000000),
                                            std::chrono::seconds(250000000000)}) {
        CAPTURE(told.count());
        fixture f;
        const std::int64_t delay = delay_after_retry_after(f, tokmgr::errc::rate_limited, told);
        CHECK(delay >= ns(f.options.max_retry_after));
        CHECK(delay <= ns(f.options.max_retry_after) * 11 / 10);
    }
}
