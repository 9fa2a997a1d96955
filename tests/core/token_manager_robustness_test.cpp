// What policies, hooks and executors can do wrong, and what the manager does
// about it: nothing hangs, nothing is sent twice, nothing is served late.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

/// A storage whose copies share one token set, as a file or a database shared
/// by two managers would be.
struct shared_storage {
    std::shared_ptr<std::optional<tokmgr::token_set>> stored = std::make_shared<std::optional<tokmgr::token_set>>();
    std::function<void()> on_store;

    std::optional<tokmgr::token_set> load(std::error_code& ec) {
        ec.clear();
        return *stored;
    }
    void store(const tokmgr::token_set& set, std::error_code& ec) {
        ec.clear();
        *stored = set;
        if (on_store) on_store();
    }
};

using shared_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                             shared_storage, tokmgr::simdjson_json>;

std::unique_ptr<shared_manager> make_shared_manager(test::harness& h, const shared_storage& storage) {
    return std::make_unique<shared_manager>(
        h.transport, tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)}, h.options, h.clock,
        storage);
}

}  // namespace

TEST_CASE("a hook that throws neither hangs the manager nor stops the refresh") {
    test::harness h;
    h.options.on_event = [](const tokmgr::event&) { throw std::runtime_error("hook failed"); };
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    h.clock.advance(30min);
    std::error_code ec;
    CHECK(manager->get_token(ec).reveal() != first);
    CHECK_FALSE(ec);
}

TEST_CASE("a transport that throws ends the flight with policy_error, and callers do not hang") {
    test::harness h;
    auto manager = h.make();
    manager->get_token();
    h.transport.set_handler([](const tokmgr::http_request&) -> tokmgr::http_response { throw std::bad_alloc(); });
    h.clock.advance(30min);
    std::error_code ec;
    manager->get_token(ec);
    CHECK(ec == tokmgr::errc::policy_error);
    h.transport.set_handler(h.server);
    h.clock.advance(h.options.backoff_max);
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("an executor that runs the task and then throws does not get it run twice") {
    test::harness h;
    h.options.executor = [](std::function<void()> task) {
        task();
        throw std::runtime_error("executor failed after running the task");
    };
    auto manager = h.make();
    manager->get_token();
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft);
    manager->get_token();
    CHECK(h.sent("/api/auth/token_refresh") == 1);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("an executor that drops the task unrun: the flight is abandoned, not left pending") {
    test::harness h;
    h.options.executor = [](std::function<void()>) {};  // e.g. posted to a stopped io_context
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft);
    CHECK(manager->get_token().reveal() == first);
    h.clock.advance(30min);  // hard-expired: waiting for the dropped flight would hang here
    std::error_code ec;
    CHECK(manager->get_token(ec).reveal() != first);
    CHECK_FALSE(ec);
}

TEST_CASE("two managers sharing a storage never send a refresh token the other replaced") {
    test::harness h(30min, 600min);
    shared_storage storage;
    auto first = make_shared_manager(h, storage);
    h.options.assumed_lifetimes = tokmgr::lifetimes{30min, 60min};  // disagrees about the refresh lifetime
    auto second = make_shared_manager(h, storage);
    for (int round = 0; round < 20; ++round) {
        first->get_token();
        second->get_token();
        h.clock.advance(29min);
    }
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().refreshes_rejected == 0);
}

TEST_CASE("a stored set received 'in the future' is not served past its real expiry") {
    test::harness h;
    shared_storage storage;
    tokmgr::token_set set;
    set.jwt = tokmgr::secret("header.payload.signature");
    set.refresh_token = tokmgr::secret("rt-unknown");
    set.received_at = h.clock.wall_now() + 20min;  // a writer whose clock runs ahead
    set.jwt_lifetime = 30min;
    set.refresh_lifetime = 10000min;
    set.generation = 7;
    *storage.stored = set;
    auto manager = make_shared_manager(h, storage);
    CHECK(manager->get_token().reveal() == "header.payload.signature");  // served from storage, no request
    CHECK(h.transport.calls() == 0);
    h.clock.advance(29min);  // its hard threshold counted from now, not from 20 minutes ahead
    std::error_code ec;
    CHECK(manager->get_token(ec).reveal() != "header.payload.signature");
}

TEST_CASE("the JWT's lifetime counts from its receipt, not from after a slow store") {
    test::harness h;
    shared_storage storage;
    storage.on_store = [clock = h.clock]() mutable { clock.advance(5min); };
    auto manager = make_shared_manager(h, storage);
    const std::string first(manager->get_token().reveal());  // the store took 5 minutes
    h.clock.advance(29min - 5min);  // 29 minutes after receipt: the hard threshold
    storage.on_store = nullptr;
    h.transport.set_handler([](const tokmgr::http_request&) { return test::status(503); });
    std::error_code ec;
    CHECK(manager->get_token(ec).empty());
    CHECK(ec == tokmgr::errc::service_unavailable);
}

TEST_CASE("managers used by a hook on the same thread during a refresh do not take over its cache slot") {
    test::harness h;
    std::vector<std::unique_ptr<test::manager>> others;
    std::vector<test::harness> other_harnesses(5);
    for (auto& other : other_harnesses) others.push_back(other.make());
    h.options.on_event = [&](const tokmgr::event& e) {
        if (e.kind == tokmgr::event_kind::refresh_started)
            for (auto& other : others) other->get_token();
    };
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft);
    const std::string second(manager->get_token().reveal());
    CHECK(second != first);
    for (auto& other : others) {
        CHECK(other->get_token().reveal() != second);  // each serves its own JWT
        CHECK(manager->get_token().reveal() == second);
    }
}

TEST_CASE("a view survives calls on three other managers on the same thread") {
    test::harness h;
    std::vector<test::harness> other_harnesses(3);
    std::vector<std::unique_ptr<test::manager>> others;
    for (auto& other : other_harnesses) others.push_back(other.make());
    auto manager = h.make();
    const tokmgr::secret_view view = manager->get_token();
    const std::string copy(view.reveal());
    for (auto& other : others) other->get_token();
    std::thread([&] {  // a rotation elsewhere drops the manager's own reference to the old snapshot
        h.clock.advance(30min);
        manager->get_token();
    }).join();
    CHECK(view.reveal() == copy);  // still this thread's: AddressSanitizer would flag a dangling view
}

TEST_CASE("a JWT invalidated while a refresh fails is not handed out again") {
    test::harness h;
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    h.transport.set_handler([&](const tokmgr::http_request&) {
        manager->invalidate(tokmgr::secret_view(first));  // a 401 arrives elsewhere meanwhile
        return test::status(503);
    });
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft);
    std::error_code ec;
    CHECK(manager->get_token(ec).empty());
    CHECK(ec == tokmgr::errc::service_unavailable);
}

TEST_CASE("a 2xx whose JWT is expired on arrival keeps the new refresh token") {
    test::harness h;
    auto manager = h.make();
    manager->get_token();
    h.server.set_jwt_lifetime(0s);  // the next pair's JWT expires as it is issued
    h.clock.advance(30min);
    std::error_code ec;
    manager->get_token(ec);
    CHECK(ec == tokmgr::errc::protocol_error);
    h.server.set_jwt_lifetime(30min);
    h.clock.advance(h.options.backoff_max);
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK(h.sent("/api/auth/login") == 1);  // refreshed with the kept token, no new login
    CHECK(h.sent("/api/auth/token_refresh") == 2);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("a JWT with characters that could inject a header is refused") {
    test::harness h;
    h.transport.set_handler([](const tokmgr::http_request&) {
        return test::status(200, R"({"jwt":"abc\r\nX-Evil: 1","refreshToken":"rt"})");
    });
    auto manager = h.make();
    std::error_code ec;
    CHECK(manager->get_token(ec).empty());
    CHECK(ec == tokmgr::errc::protocol_error);
}
