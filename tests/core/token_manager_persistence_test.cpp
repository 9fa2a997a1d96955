// Restarts and shared stores under fault injection by count. One scenario —
// log in, refresh across expiries, destroy a manager with its refresh still
// parked on an executor, restart on the same store, then two managers used one
// after the other — is run once for every n with the n-th call of one policy
// failing: the transport (lost answer, refused connection, exception), the
// storage's load and store (error, exception), the JSON policy and the event
// hook (exception). Whatever fails, the server never sees a refresh token
// twice, every call answers with a JWT it may serve or an error, the store
// never offers a refresh token that was already sent, and once the faults
// stop every manager recovers. n grows until the scenario runs without the
// fault firing.
#include "fault_policies.hpp"
#include "harness.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

enum class target {
    transport_lost,     // the n-th request reaches the server, its answer is lost
    transport_refused,  // the n-th request provably never leaves
    transport_throws,   // the n-th send throws
    load_error,
    load_throws,
    store_error,
    store_throws,
    json_throws,
    hook_throws,
};

const char* name_of(target t) {
    switch (t) {
    case target::transport_lost: return "transport_lost";
    case target::transport_refused: return "transport_refused";
    case target::transport_throws: return "transport_throws";
    case target::load_error: return "load_error";
    case target::load_throws: return "load_throws";
    case target::store_error: return "store_error";
    case target::store_throws: return "store_throws";
    case target::json_throws: return "json_throws";
    case target::hook_throws: return "hook_throws";
    }
    return "?";
}

const std::string refresh_path = "/api/auth/token_refresh";

/// One run of the scenario with the n-th call of `what` failing.
class scenario {
public:
    scenario(target what, std::size_t n) : what_(what), n_(n) {
        // 2 s instead of a minute: nothing here may wait at all, and a
        // regression should fail the test, not stall it.
        h_.options.max_wait = 2s;
        h_.options.executor = [parked = parked_](std::function<void()> task) { parked->push_back(std::move(task)); };
        h_.options.on_event = [hook_calls = hook_calls_, armed = armed_, what, n](const tokmgr::event&) {
            const std::size_t call = ++*hook_calls;
            if (*armed && what == target::hook_throws && call == n) throw std::runtime_error("injected hook failure");
        };
        auto server = h_.server;
        h_.transport.set_handler([server, handled = handled_, armed = armed_, what, n](const tokmgr::http_request& r) {
            const std::size_t call = ++*handled;
            if (*armed && what == target::transport_throws && call == n) throw std::runtime_error("injected send failure");
            return server(r);
        });
        switch (what) {
        case target::transport_lost: h_.transport.fail_call(n, tokmgr::errc::timeout); break;
        case target::transport_refused: h_.transport.fail_call(n, tokmgr::errc::connection_refused); break;
        case target::load_error: store_.shared().fail_load_at = n; break;
        case target::load_throws:
            store_.shared().fail_load_at = n;
            store_.shared().how = test::fault::exception;
            break;
        case target::store_error: store_.shared().fail_store_at = n; break;
        case target::store_throws:
            store_.shared().fail_store_at = n;
            store_.shared().how = test::fault::exception;
            break;
        case target::json_throws: json_.shared().throw_at = n; break;
        default: break;
        }
    }

    /// Runs it; false when the n-th call never happened (n is past the end).
    bool run() {
        const auto soft = tokmgr::schedule_for(30min, h_.options, 0).soft;
        const auto past_hard = 29min + 1s;

        // A logs in, hands its proactive refresh to the executor, then runs
        // it itself once the JWT is past its hard threshold.
        auto a = make();
        call(*a, "A logs in");
        h_.clock.advance(soft);
        call(*a, "A at its soft threshold");
        h_.clock.advance(past_hard - soft);
        call(*a, "A past its hard threshold");
        h_.clock.advance(soft);
        call(*a, "A at its next soft threshold");
        // Destroyed with that refresh parked: it must never run.
        a.reset();
        run_parked();
        check_store("after A was destroyed");

        // A restart on the same store.
        h_.options.executor = nullptr;
        auto b = make();
        call(*b, "B after the restart");
        h_.clock.advance(past_hard);
        call(*b, "B past the hard threshold");

        // A second manager on the store, the two used one after the other.
        auto c = make();
        call(*c, "C first");
        for (int round = 0; round < 4; ++round) {
            CAPTURE(round);
            h_.clock.advance(soft);
            call(*c, "C at the soft threshold, then B");
            call(*b, "B at the soft threshold, after C");
            h_.clock.advance(past_hard - soft);
            call(*b, "B past the hard threshold, then C");
            call(*c, "C past the hard threshold, after B");
        }

        const bool fired = fault_fired();

        // The faults stop: after any backoff, every manager recovers.
        disarm();
        h_.clock.advance(h_.options.backoff_max + 1s);
        call(*b, "B once the faults stopped", true);
        call(*c, "C once the faults stopped", true);
        auto d = make();
        call(*d, "D, a new manager, once the faults stopped", true);
        h_.clock.advance(past_hard);
        call(*c, "C a JWT later", true);
        call(*b, "B a JWT later", true);
        CHECK(h_.server.stats().refresh_tokens_reused == 0);
        return fired;
    }

private:
    std::unique_ptr<test::store_manager> make() {
        // Only options are checked at construction: a fault in its first
        // load must not make the constructor throw (the test would fail).
        return std::make_unique<test::store_manager>(
            h_.transport, tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)}, h_.options,
            h_.clock, store_, json_);
    }

    /// One get_token: a JWT that may be served now, or an error — and the
    /// invariants of the store and the server after it.
    void call(test::store_manager& manager, const char* step, bool must_succeed = false) {
        CAPTURE(step);
        std::error_code ec;
        const std::string jwt(manager.get_token(ec).reveal());
        if (ec) {
            CHECK(jwt.empty());
            if (must_succeed) FAIL_CHECK("no recovery: " << ec.message() << " / " << manager.last_error().message());
        } else {
            REQUIRE_FALSE(jwt.empty());
            const auto exp = test::jwt_exp(jwt);
            REQUIRE(exp);
            CHECK(*exp - test::wall_seconds(h_.clock) >= 59);  // before its hard threshold (a 60 s leeway)
        }
        CHECK(h_.server.stats().refresh_tokens_reused == 0);
        check_store(step);
    }

    /// The store never offers a refresh token that was already sent: a
    /// reader would send it again.
    void check_store(const char* step) {
        CAPTURE(step);
        const auto stored = store_.stored();
        if (!stored || stored->refresh_token_spent || stored->refresh_token.empty()) return;
        const auto requests = h_.transport.requests();
        for (std::size_t i = 0; i < requests.size(); ++i) {
            if (requests[i].target != refresh_path) continue;
            const bool never_left = what_ == target::transport_refused && i + 1 == n_;
            if (never_left) continue;
            const auto sent = tokmgr::testing::fake_auth_server::string_field(requests[i].body, "refreshToken");
            CHECK_MESSAGE(sent != std::string(stored->refresh_token.reveal()),
                          "the store offers a refresh token sent in request " << i + 1);
        }
    }

    void run_parked() {
        std::vector<std::function<void()>> tasks;
        tasks.swap(*parked_);
        const std::size_t before = h_.transport.calls();
        for (auto& task : tasks) task();
        CHECK(h_.transport.calls() == before);  // a destroyed manager's refresh never starts
    }

    bool fault_fired() const {
        switch (what_) {
        case target::transport_lost:
        case target::transport_refused: return h_.transport.calls() >= n_;
        case target::transport_throws: return *handled_ >= n_;
        case target::load_error:
        case target::load_throws: return store_.shared().loads >= n_;
        case target::store_error:
        case target::store_throws: return store_.shared().stores >= n_;
        case target::json_throws: return json_.shared().calls >= n_;
        case target::hook_throws: return *hook_calls_ >= n_;
        }
        return false;
    }

    void disarm() {
        *armed_ = false;
        h_.transport.fail_call(n_, {});
        store_.shared().fail_load_at = 0;
        store_.shared().fail_store_at = 0;
        json_.shared().throw_at = 0;
    }

    target what_;
    std::size_t n_;
    test::harness h_;
    test::shared_store store_;
    test::faulty_json json_;
    std::shared_ptr<std::vector<std::function<void()>>> parked_ = std::make_shared<std::vector<std::function<void()>>>();
    std::shared_ptr<std::size_t> hook_calls_ = std::make_shared<std::size_t>(0);
    std::shared_ptr<std::size_t> handled_ = std::make_shared<std::size_t>(0);
    std::shared_ptr<bool> armed_ = std::make_shared<bool>(true);
};

}  // namespace

TEST_CASE("persistence: fail the n-th call of each policy, for every n, across restarts and a shared store") {
    for (target what : {target::transport_lost, target::transport_refused, target::transport_throws,
                        target::load_error, target::load_throws, target::store_error, target::store_throws,
                        target::json_throws, target::hook_throws}) {
        std::size_t n = 1;
        for (;; ++n) {
            CAPTURE(name_of(what));
            CAPTURE(n);
            scenario run(what, n);
            if (!run.run()) break;
            REQUIRE(n < 500);  // the scenario makes far fewer calls than this
        }
        CHECK(n > 3);  // the fault did fire for the first calls of each policy
    }
}

TEST_CASE("persistence: a restarted manager continues the refresh chain from the store") {
    test::harness h;
    test::shared_store store;
    auto make = [&] {
        return std::make_unique<test::store_manager>(
            h.transport, tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)}, h.options, h.clock,
            store, test::faulty_json());
    };
    std::string first;
    {
        auto a = make();
        first = std::string(a->get_token().reveal());
    }
    for (int restart = 0; restart < 5; ++restart) {
        auto next = make();
        CHECK(next->get_token().reveal() == first);  // served from the store, no request
        h.clock.advance(29min + 1s);
        first = std::string(next->get_token().reveal());
    }
    CHECK(h.server.stats().logins == 1);
    CHECK(h.server.stats().refreshes == 5);
    CHECK(h.transport.calls() == 6);
    // The store holds the newest pair, and its generation went up by two per
    // refresh: the spent mark, then the pair.
    REQUIRE(store.stored());
    CHECK(store.stored()->refresh_token.reveal() == h.server.current_refresh_token());
    CHECK(store.stored()->generation == 11);
    std::uint64_t previous = 0;
    for (const auto& written : store.shared().written) {
        CHECK(written.generation > previous);
        previous = written.generation;
    }
}

TEST_CASE("persistence: many threads, a moving clock and faults in every policy: answers, no reuse, no hang") {
    test::harness h;
    test::shared_store store;
    test::faulty_json json;
    h.options.max_wait = 2s;
    h.options.backoff_initial = 1ms;
    h.options.backoff_max = 10ms;
    auto hook_calls = std::make_shared<std::atomic<int>>(0);
    h.options.on_event = [hook_calls](const tokmgr::event&) {
        if (++*hook_calls % 7 == 0) throw std::runtime_error("injected hook failure");
    };
    auto server = h.server;
    auto sends = std::make_shared<std::atomic<int>>(0);
    h.transport.set_handler([server, sends](const tokmgr::http_request& request) {
        const int call = ++*sends;
        if (call % 11 == 0) throw std::runtime_error("injected send failure");
        return server(request);
    });
    for (std::size_t call = 3; call < 400; call += 5) h.transport.fail_call(call, tokmgr::errc::timeout);
    for (std::size_t call = 4; call < 400; call += 9) h.transport.fail_call(call, tokmgr::errc::connection_refused);
    store.shared().on_call = [calls = std::make_shared<std::atomic<int>>(0)] {
        if (++*calls % 13 == 0) throw std::runtime_error("injected storage failure");
    };
    auto manager = std::make_unique<test::store_manager>(
        h.transport, tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)}, h.options, h.clock, store,
        json);

    std::atomic<bool> stop{false};
    std::atomic<int> served{0};
    std::atomic<int> failed{0};
    std::atomic<int> malformed{0};
    std::atomic<int> timed_out{0};
    std::thread ticking([&] {
        while (!stop.load()) {
            h.clock.advance(3min);  // a JWT's life in about ten ticks
            std::this_thread::sleep_for(100us);
        }
    });
    std::vector<std::thread> callers;
    for (int t = 0; t < 6; ++t) {
        callers.emplace_back([&] {
            for (int i = 0; i < 300; ++i) {
                std::error_code ec;
                const tokmgr::secret_view jwt = manager->get_token(ec);
                if (ec == tokmgr::errc::wait_timeout) ++timed_out;
                if (ec ? !jwt.empty() : jwt.empty()) ++malformed;
                ++(ec ? failed : served);
                std::this_thread::sleep_for(100us);
            }
        });
    }
    for (auto& caller : callers) caller.join();
    stop = true;
    ticking.join();
    CHECK(malformed == 0);
    CHECK(timed_out == 0);  // nobody waited on a flight nobody finishes
    CHECK(served > 0);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.transport.calls() > 10);  // the clock moved across many expiries
}

TEST_CASE("persistence: last_error() is empty after a success, also when the first load had failed") {
    test::harness h;
    test::shared_store store;
    store.shared().fail_load_at = 1;  // the constructor's load
    auto manager = std::make_unique<test::store_manager>(
        h.transport, tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)}, h.options, h.clock, store,
        test::faulty_json());
    CHECK(manager->last_error().code == tokmgr::errc::storage_failed);  // said until something succeeds
    std::error_code ec;
    CHECK_FALSE(manager->get_token(ec).empty());
    REQUIRE_FALSE(ec);
    // "The most recent failure ...; empty after a success."
    CHECK_FALSE(manager->last_error());
}
