// The flight machine on its own, exhaustively: two processes, each a session
// and a flight_machine, share one model store and one model server that
// counts every reuse of a refresh token. Every step's outcome is chosen —
// success, failure, a failure whose write landed anyway, a corrupt or
// emptied store, a lost lease, a request lost before or after the server saw
// it, a 503, an answer delivered twice, a process killed — and so is which
// process steps next. Every sequence with up to `faults` non-default choices
// is played, and after every step: no refresh token is sent that the server
// saw before, one flight at a time per process, every flight ends within a
// bounded number of steps (its waiters are answered), nothing is served past
// its true expiry, and once the faults stop both processes get a JWT again.
// No threads, no policies, no clock objects.
#include <tokmgr/detail/flight_machine.hpp>
#include <tokmgr/options.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using tokmgr::errc;
using tokmgr::detail::answer;
using tokmgr::detail::demand;
using tokmgr::detail::flight_machine;
using tokmgr::detail::flight_step;
using tokmgr::detail::session;
using tokmgr::detail::step_kind;
using tokmgr::detail::step_outcome;

namespace {

/// Replays a sequence of choices, then extends it depth first: every
/// sequence with at most `budget` non-zero choices, each once.
class chooser {
public:
    explicit chooser(int budget) : budget_(budget) {}

    /// One of `n` options; 0 is "nothing goes wrong".
    std::size_t pick(std::size_t n) {
        if (n <= 1 || quiet_) return 0;
        if (at_ == trail_.size()) trail_.push_back({0, n});
        REQUIRE(trail_[at_].options == n);  // the run so far is deterministic
        return trail_[at_++].value;
    }

    /// From now on in this run, nothing goes wrong.
    void quiet() { quiet_ = true; }

    /// The next sequence; false when every one was played.
    bool next() {
        quiet_ = false;
        trail_.resize(at_);
        at_ = 0;
        while (!trail_.empty()) {
            choice& last = trail_.back();
            int others = 0;
            for (std::size_t i = 0; i + 1 < trail_.size(); ++i) others += trail_[i].value != 0;
            if (last.value + 1 < last.options && others + 1 <= budget_) {
                ++last.value;
                return true;
            }
            trail_.pop_back();
        }
        return false;
    }

    std::string trail() const {
        std::string text;
        for (const choice& c : trail_) text += std::to_string(c.value);
        return text;
    }

private:
    struct choice {
        std::size_t value;
        std::size_t options;
    };
    int budget_;
    bool quiet_ = false;
    std::vector<choice> trail_;
    std::size_t at_ = 0;
};

constexpr std::int64_t ns(std::chrono::nanoseconds d) { return d.count(); }
const std::chrono::system_clock::time_point wall_zero(std::chrono::seconds(1767225600));
std::chrono::system_clock::time_point wall(std::int64_t now) {
    return wall_zero + std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(now));
}

/// The Textual API as the judge: rotation, and a count of every refresh
/// token sent a second time.
struct server_model {
    int issued = 0;
    std::map<std::string, bool> spent;                  // refresh token -> used
    std::map<std::string, std::int64_t> jwt_expires;    // JWT -> true end
    int reuses = 0;

    answer pair(std::int64_t now, bool by_login) {
        ++issued;
        const std::string jwt = "jwt-" + std::to_string(issued), refresh = "rt-" + std::to_string(issued);
        spent[refresh] = false;
        jwt_expires[jwt] = now + ns(30min);
        answer a;
        a.by_login = by_login;
        a.tokens = tokmgr::token_pair{tokmgr::secret(jwt), tokmgr::secret(refresh)};
        a.jwt_lifetime = 30min;
        return a;
    }

    /// The server's answer to a request that reached it.
    answer handle(const flight_step& step, std::int64_t now) {
        if (step.by_login) return pair(now, true);
        const std::string token(step.refresh_token.reveal());
        auto found = spent.find(token);
        if (found == spent.end() || found->second) {
            if (found != spent.end()) ++reuses;
            answer rejected;
            rejected.error = {make_error_code(errc::refresh_rejected), "refresh: status 401"};
            return rejected;
        }
        found->second = true;
        return pair(now, false);
    }
};

/// A coordinating store: one set, one lease with an expiry.
struct store_model {
    std::optional<tokmgr::token_set> set;
    int holder = 0;
    std::int64_t lease_until = 0;
    std::uint64_t generation() const { return set ? set->generation : 0; }
};

struct process {
    int id;
    tokmgr::manager_options options;
    std::optional<session> tokens;
    std::optional<flight_machine> machine;
    std::optional<flight_step> step;  // the step to perform next, while a flight runs
    int steps = 0;
    bool dead = false;
    std::vector<std::uint64_t> answered;  // requests whose answer came: a copy must be ignored

    explicit process(int who) : id(who) {
        options.jitter_fraction = 0;
        options.lease_wait = 0ms;
        tokens.emplace(tokmgr::detail::session_options_for(options, tokmgr::lifetimes{30min, 10000min}), 7);
        machine.emplace(*tokens, true, true);
    }
};

struct world {
    chooser& choose;
    server_model server;
    store_model store;
    process a{1}, b{2};
    std::int64_t now = 0;
    static constexpr std::int64_t lease_ttl = ns(10s);

    explicit world(chooser& c) : choose(c) {}

    /// What a caller of `p` gets at `now`; starts a flight when the session says so.
    void demand_of(process& p) {
        if (p.dead) return;
        const auto said = p.tokens->on_demand(now);
        if (said.what == demand::serve || said.what == demand::serve_and_start) check_servable(p.tokens->current());
        if (said.what == demand::serve_and_start || said.what == demand::start_and_wait) {
            REQUIRE_FALSE(p.machine->running());  // never two flights
            REQUIRE_FALSE(p.step);
            p.step = p.machine->start(0ms);
            p.steps = 0;
        }
    }

    void check_servable(const std::shared_ptr<const tokmgr::detail::snapshot>& jwt) {
        REQUIRE(jwt);
        REQUIRE(now < jwt->hard_ns);
        const auto end = server.jwt_expires.find(std::string(jwt->jwt().reveal()));
        REQUIRE(end != server.jwt_expires.end());
        CHECK(jwt->hard_ns <= end->second);  // never served past its true end
    }

    /// Performs `p`'s next step with a chosen outcome, and feeds the machine.
    void step(process& p) {
        REQUIRE(p.step);
        flight_step step = std::move(*p.step);
        p.step.reset();
        REQUIRE(++p.steps < 16);  // every flight ends: its waiters are answered
        for (std::uint64_t old : p.answered) CHECK_FALSE(p.machine->awaits(old));
        if (step.kind == step_kind::finish) {
            if (store.holder == p.id) store.holder = 0;  // the driver releases the lease
            p.machine->ended();
            if (auto result = p.tokens->end_flight(now)) check_servable(result);
            return;
        }
        if (choose.pick(2) == 1) {  // killed -9 before the step: its lease stays until it expires
            p.dead = true;
            return;
        }
        step_outcome done;
        switch (step.kind) {
        case step_kind::take_lease: {
            const bool busy = store.holder != 0 && store.holder != p.id && now < store.lease_until;
            if (choose.pick(2) == 1) {
                done.failure = {make_error_code(errc::storage_failed), ""};
            } else if (busy) {
                done.failure = {make_error_code(errc::lease_timeout), ""};
            } else {
                store.holder = p.id;
                store.lease_until = now + lease_ttl;
                done.yes = true;
            }
            break;
        }
        case step_kind::load:
            switch (choose.pick(4)) {
            case 1: done.failure = {make_error_code(errc::storage_failed), ""}; break;
            case 2:
                store.set.reset();  // set aside as corrupt
                done.failure = {make_error_code(errc::storage_corrupt), ""};
                break;
            case 3: store.set.reset(); [[fallthrough]];  // the store lost its data
            default: done.stored = store.set;
            }
            break;
        case step_kind::store_mark:
        case step_kind::persist: {
            // 1: unreachable, nothing written; 2: failed, yet written; 3:
            // failed, not written; 4 (persist): written, then the store lost it.
            const auto how = choose.pick(step.kind == step_kind::persist ? 5 : 4);
            const bool matches = store.generation() == step.expected_generation;
            if ((how == 0 || how == 2 || how == 4) && matches) store.set = step.set;
            if (how == 4) store.set.reset();
            if (how == 1) done.failure = {make_error_code(errc::storage_unreachable), ""};
            else if (how == 2 || how == 3) done.failure = {make_error_code(errc::storage_failed), ""};
            else done.yes = matches;
            // A store with store_if_and_release drops the lease with the
            // flight's last write when it wrote (redis_storage).
            if (step.kind == step_kind::persist && step.last && done.yes && store.holder == p.id) store.holder = 0;
            break;
        }
        case step_kind::check_lease:
            if (choose.pick(2) == 1) store.lease_until = now;  // paused past it: lost
            done.yes = store.holder == p.id && now < store.lease_until;
            break;
        case step_kind::send: {
            done.request = step.request;
            const auto how = choose.pick(4);
            answer reply;
            if (how == 1) {  // never reached the server
                reply.error = {make_error_code(errc::connection_refused), ""};
                reply.not_sent = true;
            } else if (how == 2) {  // reached it; the answer was lost
                server.handle(step, now);
                reply.error = {make_error_code(errc::timeout), ""};
            } else if (how == 3) {
                reply.error = {make_error_code(errc::service_unavailable), "status 503"};
            } else {
                reply = server.handle(step, now);
            }
            reply.by_login = step.by_login;
            reply.received_ns = now;
            reply.received_wall = wall(now);
            done.reply = std::move(reply);
            p.answered.push_back(step.request);
            break;
        }
        case step_kind::finish: break;
        }
        log += "\n  t=" + std::to_string(now / ns(1min)) + "min " + (p.id == 1 ? "a " : "b ") + kind_name(step.kind) +
               (step.kind == step_kind::send ? (step.by_login ? "(login)" : "(refresh " + std::string(step.refresh_token.reveal()) + ")") : "") +
               (step.set ? " gen " + std::to_string(step.set->generation) + (step.set->refresh_token_spent ? " spent" : " rt " + std::string(step.set->refresh_token.reveal())) + " expect " + std::to_string(step.expected_generation) : "") +
               (done.failure ? " -> failed " + done.failure.code.message() : done.yes ? " -> yes" : " -> no") +
               (done.stored ? " loaded gen " + std::to_string(done.stored->generation) + " rt " + std::string(done.stored->refresh_token.reveal()) + (done.stored->refresh_token_spent ? " spent" : "") : "") +
               (done.reply && done.reply->tokens ? " got " + std::string(done.reply->tokens->refresh_token.reveal()) : "") +
               (done.reply && done.reply->error ? " error " + done.reply->error.code.message() : "") +
               " | store gen " + std::to_string(store.generation());
        const bool persisted = step.kind == step_kind::persist, last = step.last;
        p.step = p.machine->advance(std::move(done), now, wall(now));
        // A persist marked last is the flight's last storage step: finish follows.
        if (persisted) CHECK((p.step->kind == step_kind::finish) == last);
    }

    static const char* kind_name(step_kind kind) {
        switch (kind) {
        case step_kind::take_lease: return "take_lease";
        case step_kind::load: return "load";
        case step_kind::store_mark: return "store_mark";
        case step_kind::check_lease: return "check_lease";
        case step_kind::send: return "send";
        case step_kind::persist: return "persist";
        case step_kind::finish: return "finish";
        }
        return "?";
    }
    std::string log;

    void run_flights() {
        // Interleaved: either process may take the next step.
        for (;;) {
            const bool a_runs = a.step && !a.dead, b_runs = b.step && !b.dead;
            if (!a_runs && !b_runs) break;
            process& next = a_runs && b_runs ? (choose.pick(2) == 0 ? a : b) : (a_runs ? a : b);
            step(next);
        }
    }

    void round(std::chrono::nanoseconds later) {
        now += ns(later);
        demand_of(a);
        demand_of(b);
        run_flights();
        REQUIRE(server.reuses == 0);
    }
};

}  // namespace

TEST_CASE("flight machine, exhaustively: two processes on one store, every outcome of every step, two faults at a time") {
    // Two faults per sequence in the suite; TOKMGR_FLIGHT_FAULTS=3 (or more)
    // for a longer search.
    const char* more = std::getenv("TOKMGR_FLIGHT_FAULTS");
    chooser choose(more != nullptr ? std::atoi(more) : 2);
    std::size_t sequences = 0;
    do {
        ++sequences;
        world w(choose);
        CAPTURE(choose.trail());
        CAPTURE(w.log);
        w.round(0s);      // a logs in; b adopts its set
        w.round(25min);   // past the soft threshold: both want a refresh
        w.round(25min);   // and again: the next rotation
        choose.quiet();   // the faults are over
        w.round(2h);      // past every backoff and JWT: a flight each (or an adoption)
        w.round(0s);      // a caller after a flight that ended without a JWT starts the next
        for (process* p : {&w.a, &w.b}) {
            if (p->dead) continue;
            const auto said = p->tokens->on_demand(w.now);
            CAPTURE(p->id);
            CAPTURE(static_cast<int>(said.what));
            CAPTURE(p->tokens->last_error().message());
            CHECK((said.what == demand::serve || said.what == demand::serve_and_start));
        }
        CHECK(w.server.reuses == 0);
    } while (choose.next());
    std::printf("flight machine: %zu sequences checked\n", sequences);
    CHECK(sequences > 1000);
}
