// The trust rule for a refresh token shared through a coordinating store, and
// the answers that belong to a flight (issue 20, defects 1, 2 and 4). Each
// case failed on the driver before the rule: an emptied or rolled-back store
// made a process send a refresh token another had spent (the server revoked
// the family), a slow lease check stalled callers that held a valid JWT, and
// a transport that completed one request twice rotated back to a spent token.
#include <tokmgr/storage/file.hpp>
#include <tokmgr/testing/shared_storage.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "harness.hpp"

using namespace std::chrono_literals;

namespace {

using shared_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                             tokmgr::testing::shared_storage, tokmgr::simdjson_json>;
using file_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                           tokmgr::file_storage, tokmgr::simdjson_json>;

const tokmgr::credentials login() { return {"user@example.com", tokmgr::secret(test::password)}; }

/// Past the soft threshold of a 30-minute JWT, before its hard one.
std::chrono::seconds past_soft(const tokmgr::manager_options& options) {
    return std::chrono::duration_cast<std::chrono::seconds>(tokmgr::schedule_for(30min, options, 0).soft) + 1s;
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Two processes, A and B, share a store and hold the same set; A refreshes
/// (its refresh token is now spent), then `lose` empties or rolls back the
/// store; B's next flight must not send the token A spent.
template <class Make, class Lose>
void another_process_refreshes_then_the_store_loses_it(test::harness& h, Make make, Lose lose) {
    auto a = make();
    auto b = make();
    CHECK_FALSE(a->get_token().empty());
    CHECK_FALSE(b->get_token().empty());  // adopts A's set from the store
    REQUIRE(h.server.stats().logins == 1);
    h.clock.advance(past_soft(h.options));
    CHECK_FALSE(a->get_token().empty());  // A refreshes: its old refresh token is spent
    REQUIRE(h.server.stats().refreshes == 1);
    lose();
    std::error_code ec;
    CHECK_FALSE(b->get_token(ec).empty());  // B's JWT is soft-expired: B's flight reads the store
    CHECK_FALSE(ec);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
    h.clock.advance(30min);  // both past the hard threshold: every JWT served is fresh
    CHECK_FALSE(a->get_token(ec).empty());
    CHECK_FALSE(b->get_token(ec).empty());
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
}

}  // namespace

TEST_CASE("trust rule: a store emptied after another process refreshed costs a login, never the spent token") {
    SUBCASE("shared_storage: the key deleted or evicted") {
        test::harness h;
        tokmgr::testing::shared_storage store;
        another_process_refreshes_then_the_store_loses_it(
            h, [&] { return std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store); },
            [&] { store.replace(std::nullopt); });
        CHECK(h.server.stats().logins == 2);
    }
    SUBCASE("file_storage: the token file deleted") {
        test::harness h;
        test::temp_dir dir;
        const auto path = dir.path / "token.json";
        another_process_refreshes_then_the_store_loses_it(
            h,
            [&] {
                return std::make_unique<file_manager>(h.transport, login(), h.options, h.clock,
                                                      tokmgr::file_storage(path.string()));
            },
            [&] { REQUIRE(std::filesystem::remove(path)); });
        CHECK(h.server.stats().logins == 2);
    }
}

TEST_CASE("trust rule: a store rolled back to an older set is not trusted by the process that knows better") {
    // A refreshes (generation 3), B refreshes with A's new token (5), then
    // the store goes back to generation 1 (a failover to a stale replica, a
    // restored backup): A must not send the token B spent, nor the one in
    // the store, which A itself spent.
    test::harness h;
    tokmgr::testing::shared_storage store;
    auto a = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    auto b = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    a->get_token();
    b->get_token();
    const auto first = store.stored();
    REQUIRE(first);
    h.clock.advance(past_soft(h.options));
    a->get_token();  // A: generation 3
    REQUIRE(h.server.stats().refreshes == 1);
    h.clock.advance(past_soft(h.options));
    b->get_token();  // B adopts generation 3 (its JWT is still within its hard threshold)
    b->get_token();  // and, that JWT being soft-expired, refreshes with it: generation 5
    REQUIRE(h.server.stats().refreshes == 2);
    REQUIRE(store.stored()->generation == 5);
    store.replace(first);
    std::error_code ec;
    CHECK_FALSE(a->get_token(ec).empty());
    CHECK_FALSE(ec);
    h.clock.advance(30min);
    CHECK_FALSE(a->get_token(ec).empty());
    CHECK_FALSE(b->get_token(ec).empty());
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
}

TEST_CASE("trust rule: file_storage rolled back to an older file (a restored backup) costs a login, never a reuse") {
    test::harness h;
    test::temp_dir dir;
    const auto path = dir.path / "token.json";
    auto make = [&] {
        return std::make_unique<file_manager>(h.transport, login(), h.options, h.clock,
                                              tokmgr::file_storage(path.string()));
    };
    auto a = make();
    auto b = make();
    a->get_token();
    b->get_token();
    const std::string backup = read_file(path);
    h.clock.advance(past_soft(h.options));
    a->get_token();
    h.clock.advance(past_soft(h.options));
    b->get_token();
    b->get_token();
    REQUIRE(h.server.stats().refreshes == 2);
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << backup;
    }
    std::error_code ec;
    CHECK_FALSE(a->get_token(ec).empty());
    h.clock.advance(30min);
    CHECK_FALSE(a->get_token(ec).empty());
    CHECK_FALSE(b->get_token(ec).empty());
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
}

TEST_CASE("trust rule: the process's own token, vouched for by the store, is still refreshed (no needless login)") {
    test::harness h;
    tokmgr::testing::shared_storage store;
    auto manager = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    for (int expiry = 0; expiry < 5; ++expiry) {
        CHECK_FALSE(manager->get_token().empty());
        h.clock.advance(past_soft(h.options));
    }
    CHECK(h.server.stats().logins == 1);
    CHECK(h.server.stats().refreshes == 4);
}

TEST_CASE("a slow lease check does not stall callers that hold a valid JWT") {
    test::harness h;
    tokmgr::testing::shared_storage store;
    auto manager = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    const std::string first(manager->get_token().reveal());
    h.clock.advance(past_soft(h.options));

    std::promise<void> entered;
    std::atomic<bool> told{false};
    store.on_holds([&] {
        if (!told.exchange(true)) entered.set_value();
        std::this_thread::sleep_for(600ms);  // a Redis GET behind a slow network
    });
    // This caller starts the refresh and runs its flight (into the slow check).
    auto refresher = std::async(std::launch::async, [&] { return std::string(manager->get_token().reveal()); });
    entered.get_future().wait();
    // Others, meanwhile, are past the soft threshold with nothing to wait for.
    const auto started = std::chrono::steady_clock::now();
    int served_current = 0;  // compared, never printed: a JWT is a secret
    for (int i = 0; i < 4; ++i) served_current += manager->get_token().reveal() == first;
    CHECK(served_current == 4);
    const auto waited = std::chrono::steady_clock::now() - started;
    CHECK(waited < 300ms);
    refresher.get();
    CHECK(h.server.stats().refreshes == 1);
}

// ---- answers belong to flights ----------------------------------------------

namespace test_async {

/// A stand-in executor that runs what is posted at once, on the posting
/// thread: enough for the manager's asynchronous driver without Asio.
struct inline_executor {
    bool operator==(const inline_executor&) const noexcept { return true; }
};

/// An asynchronous transport over the fake server that keeps a copy of every
/// completion, so a test can deliver an answer a second time, later, as a
/// faulty transport or proxy would.
class replaying_transport {
public:
    explicit replaying_transport(tokmgr::testing::fake_auth_server server) : server_(std::move(server)) {}

    inline_executor get_executor() const noexcept { return {}; }

    template <class Handler>
    void async_send(const tokmgr::http_request& request, Handler&& handler) {
        tokmgr::http_response response = server_(request);
        auto copy = std::make_shared<std::decay_t<Handler>>(handler);
        replays_->push_back([copy, response]() mutable { (*copy)(std::error_code(), response); });
        handler(std::error_code(), std::move(response));
    }

    /// Delivers the answer to the n-th request (0-based) again.
    void replay(std::size_t n) { (*replays_)[n](); }
    std::size_t sent() const { return replays_->size(); }
    /// The copies hold the manager's core: drop them before the manager goes.
    void forget() { replays_->clear(); }

private:
    tokmgr::testing::fake_auth_server server_;
    std::shared_ptr<std::vector<std::function<void()>>> replays_ =
        std::make_shared<std::vector<std::function<void()>>>();
};

}  // namespace test_async

template <>
struct tokmgr::detail::executor_ops<test_async::inline_executor> {
    static constexpr bool known = true;
    template <class Function>
    static void post(const test_async::inline_executor&, Function&& function) {
        function();
    }
    template <class Function>
    static void post_after(const test_async::inline_executor&, std::chrono::nanoseconds, Function&& function) {
        function();
    }
    static bool running_in_this_thread(const test_async::inline_executor&) noexcept { return false; }
};

TEST_CASE("an answer delivered twice is ignored: the copy after the next rotation does not rotate back") {
    test::harness h;
    test_async::replaying_transport transport(h.server);
    tokmgr::testing::shared_storage store;
    tokmgr::token_manager<test_async::replaying_transport, tokmgr::testing::manual_clock,
                          tokmgr::testing::shared_storage, tokmgr::simdjson_json>
        manager(transport, login(), h.options, h.clock, store);
    CHECK_FALSE(manager.get_token().empty());  // login (request 0)
    h.clock.advance(past_soft(h.options));
    manager.get_token();  // refresh (request 1): answered with the second refresh token
    h.clock.advance(past_soft(h.options));
    manager.get_token();  // refresh (request 2) with that token
    REQUIRE(transport.sent() == 3);
    REQUIRE(h.server.stats().refreshes == 2);

    transport.replay(1);  // the answer to request 1 again, after the rotation of request 2
    transport.replay(0);  // and the login's
    CHECK(manager.counters().ignored_answers == 2);

    h.clock.advance(past_soft(h.options));
    std::error_code ec;
    CHECK_FALSE(manager.get_token(ec).empty());
    CHECK_FALSE(ec);
    CHECK(h.server.stats().refreshes == 3);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
    transport.forget();
}
