// The defects of issue 8, each as a regression test: every one of these
// failed (or hung, or read freed memory) on the core before the session
// redesign. Named after the numbering so a failure points at it.
#include "fault_policies.hpp"
#include "harness.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

const std::string refresh_path = "/api/auth/token_refresh";
const std::string login_path = "/api/auth/login";

std::unique_ptr<test::store_manager> make_on(test::harness& h, const test::shared_store& store,
                                             const test::faulty_json& json = {}) {
    return std::make_unique<test::store_manager>(
        h.transport, tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)}, h.options, h.clock,
        store, json);
}

/// Past the hard threshold of a 30-minute JWT (29 minutes after receipt).
constexpr auto past_hard = 29min + 1s;

/// The manager serves a JWT, and the server has seen no refresh token twice.
template <class Manager>
void check_serves_without_reuse(Manager& manager, const test::harness& h) {
    std::error_code ec;
    CHECK_FALSE(manager.get_token(ec).empty());
    CHECK_FALSE(ec);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

/// The server's answer with the JWT made unservable (a space is not allowed
/// in a header), but its refresh token intact: the server has rotated.
tokmgr::testing::fake_transport::handler unservable_refresh_answers(tokmgr::testing::fake_auth_server server) {
    return [server](const tokmgr::http_request& request) {
        tokmgr::http_response response = server(request);
        if (request.target == refresh_path && response.status == 200) {
            const std::string key = "{\"jwt\":\"";
            response.body.insert(response.body.find(key) + key.size(), "bad ");
        }
        return response;
    };
}

/// An executor that parks its tasks, as a stopped io_context keeps posted
/// handlers; the test decides when (if ever) they run or are dropped.
struct parking_executor {
    std::shared_ptr<std::vector<std::function<void()>>> parked =
        std::make_shared<std::vector<std::function<void()>>>();
    std::shared_ptr<std::mutex> mutex = std::make_shared<std::mutex>();

    tokmgr::refresh_executor executor() const {
        return [parked = parked, mutex = mutex](std::function<void()> task) {
            std::lock_guard<std::mutex> lock(*mutex);
            parked->push_back(std::move(task));
        };
    }
    std::size_t size() const {
        std::lock_guard<std::mutex> lock(*mutex);
        return parked->size();
    }
    void drop_all() const {
        std::vector<std::function<void()>> dropped;
        {
            std::lock_guard<std::mutex> lock(*mutex);
            dropped.swap(*parked);
        }
    }
};

/// A manager whose proactive refresh was handed to `parking` and parked
/// there, with the clock now past the old JWT's hard threshold: whoever
/// calls next needs the parked flight's result.
std::shared_ptr<test::manager> with_parked_refresh(test::harness& h, const parking_executor& parking,
                                                   std::string& first) {
    h.options.executor = parking.executor();
    auto manager = std::shared_ptr<test::manager>(h.make());
    first = std::string(manager->get_token().reveal());
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft);
    CHECK(manager->get_token().reveal() == first);  // the refresh is handed off, and parked
    REQUIRE(parking.size() == 1);
    h.clock.advance(30min);
    return manager;
}

}  // namespace

// ---- 1. A spent refresh token survives in storage -----------------------------

TEST_CASE("defect 1: after a refresh whose answer was lost, a restarted manager does not resend its token") {
    test::harness h;
    test::shared_store store;
    {
        auto first = make_on(h, store);
        first->get_token();                                 // login: call 1
        h.transport.fail_call(2, tokmgr::errc::timeout);   // the server rotates, the answer is lost
        h.clock.advance(past_hard);
        std::error_code ec;
        first->get_token(ec);
        CHECK(ec == tokmgr::errc::timeout);
    }
    auto restarted = make_on(h, store);
    check_serves_without_reuse(*restarted, h);
    CHECK(h.server.stats().logins == 2);  // the spent mark said "log in next"
}

TEST_CASE("defect 1: two managers on one store, one after the other, after a lost refresh answer") {
    test::harness h;
    test::shared_store store;
    auto first = make_on(h, store);
    auto second = make_on(h, store);  // built before anything was stored
    first->get_token();
    h.transport.fail_call(2, tokmgr::errc::connection_failed);  // maybe sent
    h.clock.advance(past_hard);
    std::error_code ec;
    first->get_token(ec);
    CHECK(ec == tokmgr::errc::connection_failed);
    check_serves_without_reuse(*second, h);
    // And then the first again, after its backoff: still no reuse.
    h.clock.advance(h.options.backoff_max);
    check_serves_without_reuse(*first, h);
}

TEST_CASE("defect 1: a 2xx whose JWT cannot be served keeps and persists the new refresh token") {
    test::harness h;
    test::shared_store store;
    {
        auto first = make_on(h, store);
        first->get_token();
        h.transport.set_handler(unservable_refresh_answers(h.server));
        h.clock.advance(past_hard);
        std::error_code ec;
        first->get_token(ec);
        CHECK(ec == tokmgr::errc::protocol_error);
        // The server rotated; the token it rotated to is what the store holds.
        REQUIRE(store.stored());
        CHECK(store.stored()->refresh_token.reveal() == h.server.current_refresh_token());
        CHECK_FALSE(store.stored()->refresh_token_spent);
    }
    h.transport.set_handler(h.server);
    auto restarted = make_on(h, store);
    check_serves_without_reuse(*restarted, h);
    CHECK(h.server.stats().logins == 1);  // the kept token refreshed: no new family
}

TEST_CASE("defect 1: a policy that throws while the new pair is published leaves no sendable spent token") {
    test::harness h;
    test::shared_store store;
    test::faulty_json json;
    {
        auto first = make_on(h, store, json);
        first->get_token();  // JSON calls 1-3: login body, token response, claims
        json.shared().throw_at = json.shared().calls + 3;  // the refresh answer's claims
        h.clock.advance(past_hard);
        std::error_code ec;
        first->get_token(ec);
        CHECK(ec == tokmgr::errc::policy_error);
    }
    auto restarted = make_on(h, store, json);
    check_serves_without_reuse(*restarted, h);
}

// ---- 2. A throw while publishing loses the new pair ---------------------------

TEST_CASE("defect 2: claims that throw on every JWT do not cause one login per call") {
    test::harness h;
    test::shared_store store;
    test::faulty_json json;
    json.shared().claims_always_throw = true;
    auto manager = make_on(h, store, json);
    std::error_code ec;
    for (int call = 0; call < 50; ++call) {
        manager->get_token(ec);
        CHECK(ec == tokmgr::errc::policy_error);
        h.clock.advance(20ms);
    }
    CHECK(h.server.stats().logins == 1);  // the pair is kept: later attempts refresh
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.transport.calls() <= 8);  // and they back off (1 s of calls, 100 ms+ apart, doubling)
}

TEST_CASE("defect 2: claims that throw once do not lose the pair the server rotated to") {
    test::harness h;
    test::shared_store store;
    test::faulty_json json;
    json.shared().throw_at = 3;  // the login answer's claims
    auto manager = make_on(h, store, json);
    std::error_code ec;
    manager->get_token(ec);
    CHECK(ec == tokmgr::errc::policy_error);
    h.clock.advance(h.options.backoff_max);
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK_FALSE(ec);
    CHECK(h.server.stats().logins == 1);
    CHECK(h.server.stats().refreshes == 1);  // with the refresh token of the first answer
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

// ---- 3. Waiters can hang forever ------------------------------------------------

TEST_CASE("defect 3: an executor that never runs its task: the caller past the hard threshold runs it") {
    test::harness h;
    parking_executor parking;
    std::string first;
    auto manager = with_parked_refresh(h, parking, first);
    auto result = std::make_shared<std::pair<std::string, std::error_code>>();
    const bool finished = test::finishes_within(5s, [manager, result] {
        result->first = std::string(manager->get_token(result->second).reveal());
    });
    CHECK(finished);
    if (!finished) {  // unblock it (the parked task's destruction abandons the flight) before leaving
        parking.drop_all();
        std::this_thread::sleep_for(100ms);
        return;
    }
    CHECK_FALSE(result->second);
    CHECK(result->first != first);
    CHECK(h.sent(refresh_path) == 1);
}

TEST_CASE("defect 3: max_wait bounds the wait for a flight another caller runs") {
    test::harness h;
    h.options.max_wait = 100ms;
    h.transport.set_delay(1s);
    auto manager = std::shared_ptr<test::manager>(h.make());
    std::thread runner([manager] {
        std::error_code ec;
        manager->get_token(ec);
    });
    while (h.transport.calls() == 0) std::this_thread::sleep_for(1ms);
    const auto started = std::chrono::steady_clock::now();
    std::error_code ec;
    manager->get_token(ec);
    const auto waited = std::chrono::steady_clock::now() - started;
    CHECK(ec == tokmgr::errc::wait_timeout);
    CHECK(waited < 900ms);
    runner.join();
    CHECK_FALSE(manager->get_token(ec).empty());  // the flight went on and its result is served
    CHECK(h.transport.calls() == 1);
}

// ---- 4. A running refresh outlives ~token_manager() ------------------------------

namespace {

/// Counts hook and storage calls made once `destroyed` is set.
struct late_call_counter {
    std::shared_ptr<std::atomic<bool>> destroyed = std::make_shared<std::atomic<bool>>(false);
    std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);

    late_call_counter(test::harness& h, test::shared_store& store) {
        auto count = [destroyed = destroyed, calls = calls] {
            if (destroyed->load()) ++*calls;
        };
        h.options.on_event = [count](const tokmgr::event&) { count(); };
        store.shared().on_call = count;
    }
};

}  // namespace

TEST_CASE("defect 4: no hook or storage call after the destructor returned, with a refresh running elsewhere") {
    test::harness h;
    test::shared_store store;
    const late_call_counter late(h, store);
    auto worker = std::make_shared<std::thread>();
    h.options.executor = [worker](std::function<void()> task) { *worker = std::thread(std::move(task)); };
    auto manager = make_on(h, store);
    manager->get_token();
    h.transport.set_delay(300ms);
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft);
    manager->get_token();  // the refresh runs on the worker, slowly
    while (h.transport.calls() < 2) std::this_thread::sleep_for(1ms);
    manager.reset();
    late.destroyed->store(true);
    worker->join();
    CHECK(*late.calls == 0);
}

TEST_CASE("defect 4: a refresh parked on an executor never starts once the manager is destroyed") {
    test::harness h;
    test::shared_store store;
    const late_call_counter late(h, store);
    parking_executor parking;
    h.options.executor = parking.executor();
    auto manager = make_on(h, store);
    manager->get_token();
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft);
    manager->get_token();
    REQUIRE(parking.size() == 1);
    manager.reset();
    late.destroyed->store(true);
    std::vector<std::function<void()>> tasks;
    tasks.swap(*parking.parked);
    for (auto& task : tasks) task();
    CHECK(*late.calls == 0);
    CHECK(h.transport.calls() == 1);
}

// ---- 5. The view dies when a thread touches a fifth manager ------------------------

TEST_CASE("defect 5: a view survives its thread using 5, 10 and 100 other managers meanwhile") {
    for (int count : {5, 10, 100}) {
        CAPTURE(count);
        test::harness h;
        std::vector<std::shared_ptr<test::manager>> managers;
        for (int i = 0; i < count; ++i) managers.emplace_back(h.make());
        // A worker collecting one header per tenant, all held at once.
        std::vector<tokmgr::secret_view> views;
        std::vector<std::string> copies;
        for (auto& m : managers) {
            views.push_back(m->authorization());
            copies.emplace_back(views.back().reveal());
        }
        // Meanwhile another thread replaces every manager's JWT: only this
        // thread's own slots may still keep the old ones alive.
        std::thread([&managers, &copies] {
            for (std::size_t i = 0; i < managers.size(); ++i) {
                const std::string jwt = copies[i].substr(copies[i].find(' ') + 1);
                managers[i]->invalidate(tokmgr::secret_view(jwt));
                managers[i]->get_token();
            }
        }).join();
        for (std::size_t i = 0; i < views.size(); ++i) CHECK(views[i].reveal() == copies[i]);
        // And the next call on this thread does see the new JWT.
        CHECK(managers[0]->authorization().reveal() != copies[0]);
    }
}

namespace {

/// Calls get_token from its destructor: a thread_local constructed before
/// tokmgr's own per-thread cache is destroyed after it, at thread exit.
struct exit_time_user {
    std::shared_ptr<test::manager> manager;
    std::shared_ptr<std::string> seen;
    std::shared_ptr<std::promise<void>> done;
    ~exit_time_user() {
        if (!manager) return;
        std::error_code ec;
        const tokmgr::secret_view jwt = manager->get_token(ec);
        *seen = ec ? "error: " + ec.message() : std::string(jwt.reveal());
        done->set_value();
    }
};

exit_time_user& exit_time_user_of_this_thread() {
    static thread_local exit_time_user user;
    return user;
}

/// Runs `body` on a new thread whose exit_time_user calls get_token at
/// thread exit; true when that call returned within 5 s. A thread stuck at
/// exit is detached, so the test reports instead of hanging.
bool get_token_at_thread_exit(const std::shared_ptr<test::manager>& manager, const std::shared_ptr<std::string>& seen,
                              std::function<void()> body) {
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> finished = done->get_future();
    std::thread exiting([manager, seen, done, body = std::move(body)] {
        exit_time_user& user = exit_time_user_of_this_thread();  // constructed first, destroyed last
        user.manager = manager;
        user.seen = seen;
        user.done = done;
        body();  // uses the manager: creates this thread's cache
    });
    if (finished.wait_for(5s) != std::future_status::ready) {
        exiting.detach();
        return false;
    }
    exiting.join();
    return true;
}

}  // namespace

TEST_CASE("defect 5: get_token from a thread_local's destructor at thread exit") {
    test::harness h;
    auto manager = std::shared_ptr<test::manager>(h.make());
    auto served = std::make_shared<std::string>();
    auto at_exit = std::make_shared<std::string>();
    REQUIRE(get_token_at_thread_exit(manager, at_exit, [manager, served] {
        *served = std::string(manager->get_token().reveal());
    }));
    CHECK_FALSE(served->empty());
    CHECK(*at_exit == *served);

    SUBCASE("and one that must refresh at thread exit") {
        REQUIRE(get_token_at_thread_exit(manager, at_exit, [manager, served] {
            manager->get_token();
            manager->invalidate(tokmgr::secret_view(*served));
        }));
        CHECK(at_exit->rfind("error", 0) != 0);
        CHECK(*at_exit != *served);
        CHECK(h.sent(refresh_path) == 1);
    }
}

TEST_CASE("defect 5: a thread whose first use of tokmgr is from a thread_local's destructor") {
    // tokmgr's per-thread cache is then created while the thread's
    // thread_locals are being destroyed.
    test::harness h;
    auto manager = std::shared_ptr<test::manager>(h.make());
    const std::string current(manager->get_token().reveal());
    auto at_exit = std::make_shared<std::string>();
    REQUIRE(get_token_at_thread_exit(manager, at_exit, [] {}));
    CHECK(*at_exit == current);
}

// ---- 6. Smaller defects --------------------------------------------------------

TEST_CASE("defect 6: a flight's result past its hard threshold (slow store) is not served") {
    test::harness h;
    test::shared_store store;
    auto slowed = std::make_shared<std::atomic<bool>>(false);
    store.shared().on_store = [clock = h.clock, slowed](const tokmgr::token_set&) mutable {
        if (!slowed->exchange(true)) clock.advance(past_hard);
    };
    auto manager = make_on(h, store);
    std::error_code ec;
    const tokmgr::secret_view jwt = manager->get_token(ec);
    if (!ec) CHECK(*test::jwt_exp(jwt.reveal()) - test::wall_seconds(h.clock) >= 60);
    // The next caller gets a JWT it may serve.
    const tokmgr::secret_view next = manager->get_token(ec);
    REQUIRE_FALSE(ec);
    CHECK(*test::jwt_exp(next.reveal()) - test::wall_seconds(h.clock) >= 60);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("defect 6: a flight's result past its hard threshold (slow hook) is not served") {
    test::harness h;
    auto slowed = std::make_shared<std::atomic<bool>>(false);
    h.options.on_event = [clock = h.clock, slowed](const tokmgr::event& e) mutable {
        if (e.kind == tokmgr::event_kind::login_succeeded && !slowed->exchange(true)) clock.advance(past_hard);
    };
    auto manager = h.make();
    std::error_code ec;
    const tokmgr::secret_view jwt = manager->get_token(ec);
    REQUIRE(slowed->load());
    if (!ec) CHECK(*test::jwt_exp(jwt.reveal()) - test::wall_seconds(h.clock) >= 60);
}

TEST_CASE("defect 6: a JWT of 1 or 2 s is served, and never at or after its exp") {
    for (auto lifetime : {1s, 2s}) {
        CAPTURE(lifetime.count());
        test::harness h(lifetime, 10000min);
        h.clock.advance(250ms);  // the wall clock between whole seconds: iat is rounded down
        auto manager = h.make();
        int served = 0;
        for (int step = 0; step < 40; ++step) {
            std::error_code ec;
            const tokmgr::secret_view jwt = manager->get_token(ec);
            if (!ec) {
                ++served;
                const auto exp = std::chrono::system_clock::time_point(std::chrono::seconds(*test::jwt_exp(jwt.reveal())));
                // Claims are whole seconds: iat's rounding took 250 ms of
                // the first JWT, and the schedule runs on what is left, so
                // exp itself is never reached.
                CHECK(h.clock.wall_now() < exp);
            }
            h.clock.advance(100ms);
        }
        CHECK(served == 40);
    }
}

TEST_CASE("defect 6: validate refuses durations that overflow in nanoseconds") {
    using namespace std::chrono;
    auto invalid = [](const std::function<void(tokmgr::manager_options&)>& change) {
        tokmgr::manager_options options;
        change(options);
        return tokmgr::validate(options).code == tokmgr::errc::invalid_configuration;
    };
    CHECK(invalid([](auto& o) { o.rejected_credentials_backoff = seconds::max(); }));
    CHECK(invalid([](auto& o) { o.max_leeway = seconds::max(); }));
    CHECK(invalid([](auto& o) { o.max_retry_after = seconds::max(); }));
    CHECK(invalid([](auto& o) { o.backoff_max = milliseconds::max(); }));
    CHECK(invalid([](auto& o) {
        o.backoff_initial = milliseconds::max();
        o.backoff_max = milliseconds::max();
    }));
    CHECK(invalid([](auto& o) { o.min_forced_refresh_interval = milliseconds::max(); }));
    CHECK(invalid([](auto& o) { o.max_wait = milliseconds::max(); }));
    CHECK(invalid([](auto& o) { o.max_wait = milliseconds(0); }));
    CHECK(invalid([](auto& o) { o.max_retry_after = seconds(-1); }));
    // Just inside the bound is accepted.
    CHECK_FALSE(invalid([](auto& o) { o.rejected_credentials_backoff = tokmgr::max_lifetime; }));
}

TEST_CASE("defect 6: a century of rejected-credentials backoff means no retry, not an immediate one") {
    test::harness h;
    h.options.rejected_credentials_backoff = tokmgr::max_lifetime;
    auto manager = h.make("wrong password");
    std::error_code ec;
    manager->get_token(ec);
    CHECK(ec == tokmgr::errc::credentials_rejected);
    h.clock.advance(24h * 365);
    manager->get_token(ec);
    CHECK(ec == tokmgr::errc::credentials_rejected);
    CHECK(h.transport.calls() == 1);
}

TEST_CASE("defect 6: redacting an echoed secret that occurs in the placeholder terminates") {
    for (std::string echoed : {"redacted", "[redacted]", "dact", "acted]"}) {
        CAPTURE(echoed);
        test::harness h;
        h.transport.set_handler([echoed](const tokmgr::http_request&) {
            return test::status(401, "{\"detail\":\"wrong password " + echoed + " for " + echoed + "\"}");
        });
        auto manager = std::shared_ptr<test::manager>(h.make(echoed));
        auto detail = std::make_shared<std::string>();
        const bool finished = test::finishes_within(5s, [manager, detail] {
            std::error_code ec;
            manager->get_token(ec);
            *detail = manager->last_error().detail;
        });
        REQUIRE(finished);
        CHECK(detail->find("401") != std::string::npos);
    }
}

TEST_CASE("defect 6: a hook that calls get_token gets would_block instead of deadlocking") {
    test::harness h;
    auto in_hook = std::make_shared<std::error_code>();
    auto manager_slot = std::make_shared<test::manager*>(nullptr);
    h.options.on_event = [in_hook, manager_slot](const tokmgr::event& e) {
        if (e.kind != tokmgr::event_kind::login_started) return;
        std::error_code ec;
        (*manager_slot)->get_token(ec);
        *in_hook = ec;
    };
    auto manager = std::shared_ptr<test::manager>(h.make());
    *manager_slot = manager.get();
    auto outer = std::make_shared<std::pair<std::string, std::error_code>>();
    const bool finished = test::finishes_within(5s, [manager, outer] {
        outer->first = std::string(manager->get_token(outer->second).reveal());
    });
    REQUIRE(finished);
    CHECK(*in_hook == tokmgr::errc::would_block);
    CHECK_FALSE(outer->second);
    CHECK_FALSE(outer->first.empty());
}

TEST_CASE("defect 6: invalidate(authorization()) invalidates") {
    test::harness h;
    auto manager = h.make();
    const std::string before(manager->get_token().reveal());
    manager->invalidate(manager->authorization());
    CHECK(manager->get_token().reveal() != before);
    CHECK(h.sent(refresh_path) == 1);
}

TEST_CASE("defect 6: a throwing transport emits refresh_failed and counts a failure") {
    test::harness h;
    auto events = std::make_shared<std::vector<tokmgr::event>>();
    h.options.on_event = [events](const tokmgr::event& e) { events->push_back(e); };
    auto manager = h.make();
    manager->get_token();
    events->clear();
    h.transport.set_handler([](const tokmgr::http_request&) -> tokmgr::http_response {
        throw std::runtime_error("transport exploded");
    });
    h.clock.advance(past_hard);
    std::error_code ec;
    manager->get_token(ec);
    CHECK(ec == tokmgr::errc::policy_error);
    REQUIRE(events->size() == 2);
    CHECK((*events)[0].kind == tokmgr::event_kind::refresh_started);
    CHECK((*events)[1].kind == tokmgr::event_kind::refresh_failed);
    CHECK((*events)[1].error == tokmgr::errc::policy_error);
    CHECK(manager->counters().failures == 1);
}

TEST_CASE("defect 6: a waiter whose executor task is dropped is not told the manager shut down") {
    test::harness h;
    parking_executor parking;
    std::string first;
    auto manager = with_parked_refresh(h, parking, first);
    auto result = std::make_shared<std::pair<std::string, std::error_code>>();
    std::thread waiter([manager, result] {
        result->first = std::string(manager->get_token(result->second).reveal());
    });
    std::this_thread::sleep_for(100ms);  // let it park, if it parks
    parking.drop_all();                   // e.g. the io_context it was posted to is destroyed
    waiter.join();
    CHECK(result->second != tokmgr::errc::shut_down);
    if (result->second) CHECK(result->second == tokmgr::errc::refresh_abandoned);
    // The manager is healthy: the next caller gets a JWT.
    std::error_code ec;
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK_FALSE(ec);
}

TEST_CASE("defect 6: 200 invalidate calls with a frozen clock send one refresh") {
    test::harness h;
    auto manager = h.make();
    manager->get_token();
    for (int call = 0; call < 200; ++call) {
        manager->invalidate(manager->get_token());
        manager->get_token();
    }
    CHECK(h.sent(refresh_path) == 1);
    CHECK(h.sent(login_path) == 1);
    // The JWT rejected meanwhile is served until the interval is over, and
    // then replaced.
    h.clock.advance(h.options.min_forced_refresh_interval);
    manager->get_token();
    CHECK(h.sent(refresh_path) == 2);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

// ---- Found while testing the redesign -----------------------------------------------

TEST_CASE("write-ahead: after a restart, the spent mark still lets the next reader serve the kept JWT") {
    test::harness h;
    test::shared_store store;
    make_on(h, store)->get_token();      // a first process logs in and exits
    auto restarted = make_on(h, store);  // adopts the stored set
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft);

    SUBCASE("the refresh's answer was lost") { h.transport.fail_call(2, tokmgr::errc::timeout); }
    SUBCASE("the refresh was provably not sent") { h.transport.fail_call(2, tokmgr::errc::connection_refused); }

    std::error_code ec;
    const std::string kept(restarted->get_token(ec).reveal());  // the refresh fails, the JWT is still served
    REQUIRE_FALSE(ec);
    REQUIRE(h.transport.calls() == 2);
    // Another process reads the store: the JWT is 22 minutes old, 7 before
    // its hard threshold, so it is served without a request.
    // (A reader past its own soft point would start a login or refresh of
    // its own; with refresh-ahead at the hard threshold it only reads.)
    h.options.refresh_ahead_fraction = 1.0;
    auto reader = make_on(h, store);
    CHECK(reader->get_token(ec).reveal() == kept);
    CHECK(h.transport.calls() == 2);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("redaction: no echoed secret survives, also one that begins with the placeholder's end") {
    // "[redacted]" followed by the rest of the text must not spell the secret
    // again: a secret "]abc1234" echoed as "]abc1234abc1234" becomes
    // "[redacted]abc1234" if the search resumes after the placeholder.
    for (std::string secret : {"]abc1234", "d]abc1234", "ted]xyzw", "]]]]"}) {
        CAPTURE(secret);
        const std::string echoed = secret + secret.substr(secret.rfind(']') + 1);
        const std::string shown = tokmgr::detail::sanitize_server_message("rejected " + echoed, {secret});
        CHECK(shown.find(secret) == std::string::npos);

        // Through a manager: a server whose refresh tokens are opaque
        // strings with a ']' in them, and which echoes one in a 503.
        test::harness h;
        h.transport.set_handler([secret, echoed](const tokmgr::http_request& request) {
            if (request.target == login_path)
                return test::status(200, "{\"jwt\":\"opaque-jwt\",\"refreshToken\":\"" + secret + "\"}");
            return test::status(503, "{\"detail\":\"cannot refresh " + echoed + " now\"}");
        });
        auto manager = h.make();
        manager->get_token();
        h.clock.advance(past_hard);
        std::error_code ec;
        manager->get_token(ec);
        CHECK(ec == tokmgr::errc::service_unavailable);
        CHECK(manager->last_error().detail.find(secret) == std::string::npos);
    }
}

TEST_CASE("re-entrancy: hooks of two managers calling each other get would_block, not a max_wait stall") {
    // A's hook uses B (its telemetry is authenticated by B), B's hook uses A:
    // on this thread, A's login runs B's login, whose hook asks A for the JWT
    // that only this thread's stack can produce.
    test::harness h;
    h.options.max_wait = 3s;
    auto a_slot = std::make_shared<test::manager*>(nullptr);
    auto b_slot = std::make_shared<test::manager*>(nullptr);
    auto inner = std::make_shared<std::error_code>();
    auto inner_took = std::make_shared<std::chrono::steady_clock::duration>();
    auto hook_calling = [](std::shared_ptr<test::manager*> other, std::shared_ptr<std::error_code> seen,
                           std::shared_ptr<std::chrono::steady_clock::duration> took) {
        auto used = std::make_shared<bool>(false);
        return [other, seen, took, used](const tokmgr::event& e) {
            if (e.kind != tokmgr::event_kind::login_started || *used) return;
            *used = true;
            std::error_code ec;
            const auto started = std::chrono::steady_clock::now();
            (*other)->get_token(ec);
            if (seen) {
                *seen = ec;
                *took = std::chrono::steady_clock::now() - started;
            }
        };
    };
    h.options.on_event = hook_calling(b_slot, nullptr, nullptr);
    auto a = std::shared_ptr<test::manager>(h.make());
    h.options.on_event = hook_calling(a_slot, inner, inner_took);
    auto b = std::shared_ptr<test::manager>(h.make());
    *a_slot = a.get();
    *b_slot = b.get();
    auto outer = std::make_shared<std::error_code>();
    const bool finished = test::finishes_within(10s, [a, outer] { a->get_token(*outer); });
    REQUIRE(finished);
    CHECK_FALSE(*outer);
    CHECK(*inner == tokmgr::errc::would_block);
    CHECK(*inner_took < 1s);
}
