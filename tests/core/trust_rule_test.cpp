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
#include <optional>
#include <stdexcept>
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

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("trust rule: a store emptied after another process refreshed costs a login, never the spent token") {
    SUBCASE("shared_storage: the key deleted or evicted") {
        test::harness h;
        tokmgr::testing::shared_storage store;
        test::another_process_refreshes_then_the_store_loses_it(
            h, [&] { return std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store); },
            [&] { store.replace(std::nullopt); });
        CHECK(h.server.stats().logins == 2);
    }
    SUBCASE("file_storage: the token file deleted") {
        test::harness h;
        test::temp_dir dir;
        const auto path = dir.path / "token.json";
        test::another_process_refreshes_then_the_store_loses_it(
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
    h.clock.advance(test::past_soft(h.options));
    a->get_token();  // A: generation 3
    REQUIRE(h.server.stats().refreshes == 1);
    h.clock.advance(test::past_soft(h.options));
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
    h.clock.advance(test::past_soft(h.options));
    a->get_token();
    h.clock.advance(test::past_soft(h.options));
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
        h.clock.advance(test::past_soft(h.options));
    }
    CHECK(h.server.stats().logins == 1);
    CHECK(h.server.stats().refreshes == 4);
}

TEST_CASE("a slow lease check does not stall callers that hold a valid JWT") {
    test::harness h;
    tokmgr::testing::shared_storage store;
    auto manager = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    const std::string first(manager->get_token().reveal());
    h.clock.advance(test::past_soft(h.options));

    std::promise<void> entered;
    std::atomic<bool> told{false};
    store.on_holds([&] {
        if (!told.exchange(true)) entered.set_value();
        std::this_thread::sleep_for(600ms);  // a Redis GET behind a slow network
    });
    // This caller starts the refresh and runs its flight (into the slow check).
    auto refresher = std::async(std::launch::async, [&] { return std::string(manager->get_token().reveal()); });
    REQUIRE(entered.get_future().wait_for(10s) == std::future_status::ready);  // the refresher is in the check
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

/// The store's calls, too, on the calling thread.
inline void run_inline(std::function<void()> task) { task(); }

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
    h.options.storage_executor = test_async::run_inline;  // every step of a flight within get_token
    test_async::replaying_transport transport(h.server);
    tokmgr::testing::shared_storage store;
    tokmgr::token_manager<test_async::replaying_transport, tokmgr::testing::manual_clock,
                          tokmgr::testing::shared_storage, tokmgr::simdjson_json>
        manager(transport, login(), h.options, h.clock, store);
    CHECK_FALSE(manager.get_token().empty());  // login (request 0)
    h.clock.advance(test::past_soft(h.options));
    manager.get_token();  // refresh (request 1): answered with the second refresh token
    h.clock.advance(test::past_soft(h.options));
    manager.get_token();  // refresh (request 2) with that token
    REQUIRE(transport.sent() == 3);
    REQUIRE(h.server.stats().refreshes == 2);

    transport.replay(1);  // the answer to request 1 again, after the rotation of request 2
    transport.replay(0);  // and the login's
    CHECK(manager.counters().ignored_answers == 2);

    h.clock.advance(test::past_soft(h.options));
    std::error_code ec;
    CHECK_FALSE(manager.get_token(ec).empty());
    CHECK_FALSE(ec);
    CHECK(h.server.stats().refreshes == 3);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
    transport.forget();
}

// ---- cases found by attacking the rule ------------------------------------

namespace {

/// One process rotates `rotations` times, then the store goes back to the
/// set of its login (a restored backup, a stale replica). The process spent
/// that token itself: it must not send it again.
void rollback_after(int rotations) {
    test::harness h;
    tokmgr::testing::shared_storage store;
    auto a = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    REQUIRE_FALSE(a->get_token().empty());
    const auto first = store.stored();
    REQUIRE(first);
    for (int i = 0; i < rotations; ++i) {
        h.clock.advance(test::past_soft(h.options));
        REQUIRE_FALSE(a->get_token().empty());
    }
    REQUIRE(h.server.stats().refreshes == std::uint64_t(rotations));
    store.replace(first);
    std::error_code ec;
    h.clock.advance(test::past_soft(h.options));
    a->get_token(ec);
    h.clock.advance(30min);
    a->get_token(ec);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
}

}  // namespace

TEST_CASE("trust rule: a rollback to a set this process spent a few rotations ago is refused") { rollback_after(7); }

// The ring of retired fingerprints holds 8: a backup restored a few hours
// later (30-minute JWTs: 2 rotations an hour) shows a token the process
// itself spent but no longer remembers. Its receipt time, older than the set
// the process holds, still gives it away.
TEST_CASE("trust rule: a rollback older than the remembered fingerprints is refused too, by its receipt time") {
    rollback_after(9);
}

// Control for the give-back path: a refresh that provably never left gives
// its token back at generation + 1; the store then vouches for it, and the
// trust rule sends it (no login) — nor does another process reuse it.
TEST_CASE("trust rule: a refresh token given back after request_not_sent is refreshed, not replaced by a login") {
    test::harness h;
    tokmgr::testing::shared_storage store;
    auto a = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    auto b = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    REQUIRE_FALSE(a->get_token().empty());
    REQUIRE_FALSE(b->get_token().empty());
    h.transport.fail_call(2, make_error_code(tokmgr::errc::connection_refused));
    h.clock.advance(test::past_soft(h.options));
    a->get_token();  // refresh not sent: the token is given back
    REQUIRE(h.transport.calls() == 2);
    h.clock.advance(5min);  // past the backoff
    std::error_code ec;
    CHECK_FALSE(b->get_token(ec).empty());  // B adopts the given-back set and refreshes with it
    CHECK_FALSE(a->get_token(ec).empty());  // A adopts B's
    h.clock.advance(test::past_soft(h.options));
    CHECK_FALSE(a->get_token(ec).empty());
    CHECK(h.server.stats().logins == 1);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
}

// A refresh token that ends before the JWT's soft threshold (a short
// SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES): a process that adopts the set
// after its refresh token ended keeps no refresh token. At the soft
// threshold its flight reads the store: not vouched (no token of its own).
// Adopting that same set again would end the flight with no request and no
// backoff, so that every get_token until the hard threshold ran a flight and
// the login waited for the hard threshold, where every caller blocks on it.
// The set already held is not adopted again: the flight logs in.
TEST_CASE("trust rule: the set already held is not adopted again: one flight and one login when its refresh token has ended") {
    test::harness h(30min, 10min);
    tokmgr::testing::shared_storage store;
    {
        auto a = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
        REQUIRE_FALSE(a->get_token().empty());
    }
    h.clock.advance(15min);  // the stored refresh token has ended; the JWT has not
    auto b = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    h.clock.advance(test::past_soft(h.options) - 15min);
    const auto loads_before = store.stats().loads;
    for (int i = 0; i < 5; ++i) CHECK_FALSE(b->get_token().empty());
    CHECK(store.stats().loads - loads_before == 1);  // one flight for this soft expiry
    CHECK(h.server.stats().logins == 2);             // which logs in
}

namespace {

/// A coordinating store whose write can land yet report a failure: what
/// file_storage does when the directory fsync after the rename fails (the
/// new file is in place, the write counts as failed), and what a Redis reply
/// lost after the server applied the write looks like.
struct flaky_store {
    struct knobs {
        std::size_t store_if_calls = 0;
        std::size_t landed_but_failed_at = 0;  ///< this store_if writes, then reports storage_failed
        bool load_fails = false;
    };
    tokmgr::testing::shared_storage inner;
    std::shared_ptr<knobs> k = std::make_shared<knobs>();

    std::optional<tokmgr::token_set> load(std::error_code& ec) {
        if (k->load_fails) {
            ec = make_error_code(tokmgr::errc::storage_failed);
            return std::nullopt;
        }
        return inner.load(ec);
    }
    void store(const tokmgr::token_set& set, std::error_code& ec) { inner.store(set, ec); }
    tokmgr::testing::shared_storage::lease lock(std::chrono::milliseconds wait, std::error_code& ec) {
        return inner.lock(wait, ec);
    }
    bool holds(const tokmgr::testing::shared_storage::lease& held, std::error_code& ec) {
        return inner.holds(held, ec);
    }
    bool store_if(const tokmgr::token_set& set, std::uint64_t expected, std::error_code& ec) {
        const bool written = inner.store_if(set, expected, ec);
        if (++k->store_if_calls == k->landed_but_failed_at && written && !ec) {
            ec = make_error_code(tokmgr::errc::storage_failed);
            return false;
        }
        return written;
    }
};

using flaky_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                            flaky_store, tokmgr::simdjson_json>;

}  // namespace

// A's new pair reaches the store but the write reports a failure. B reads it
// from the store and refreshes with it. A's next flight cannot read the
// store (the same flaky disk): had A taken the pair for private ("nobody else
// can hold it"), it would send its refresh token without a mark, and the
// server would see B's spent token again and revoke the family.
TEST_CASE("trust rule: a write that may have landed keeps the token shared: never sent without the store vouching for it") {
    static_assert(tokmgr::is_coordinating_storage_v<flaky_store>);
    test::harness h;
    flaky_store store_a;
    auto a = std::make_unique<flaky_manager>(h.transport, login(), h.options, h.clock, store_a);
    auto b = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store_a.inner);
    REQUIRE_FALSE(a->get_token().empty());  // A logs in (store_if 1)
    REQUIRE_FALSE(b->get_token().empty());  // B adopts
    h.clock.advance(test::past_soft(h.options));
    store_a.k->landed_but_failed_at = store_a.k->store_if_calls + 2;  // the mark lands; the new pair lands, "fails"
    REQUIRE_FALSE(a->get_token().empty());  // A refreshes: R1 spent, R2 received, "private"
    REQUIRE(h.server.stats().refreshes == 1);
    CHECK(store_a.inner.stored()->generation == 3);  // yet it is in the store
    REQUIRE_FALSE(b->get_token().empty());  // B: soft-expired too; adopts generation 3 (R2)
    h.clock.advance(test::past_soft(h.options));
    REQUIRE_FALSE(b->get_token().empty());  // B refreshes with R2: spent on the server
    REQUIRE(h.server.stats().refreshes == 2);
    store_a.k->load_fails = true;           // A's next read fails
    std::error_code ec;
    a->get_token(ec);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
}

// ---- an answer that is not the flight's own touches nothing -----------------

namespace test_async {

/// Answers the login from the fake server at once; keeps the handlers of the
/// calls `throw_at` and `defer_at` for the test to complete later; the first
/// also throws from async_send after taking its handler (a transport
/// that failed to start, or says so, yet completes later).
class deferring_transport {
public:
    explicit deferring_transport(tokmgr::testing::fake_auth_server server) : server_(std::move(server)) {}
    inline_executor get_executor() const noexcept { return {}; }

    template <class Handler>
    void async_send(const tokmgr::http_request& request, Handler&& handler) {
        const std::size_t call = ++s_->calls;
        if (call == s_->throw_at || call == s_->defer_at) {
            s_->kept.push_back([h = std::decay_t<Handler>(handler)]() mutable {
                h(make_error_code(tokmgr::errc::connection_failed), tokmgr::http_response{});
            });
            if (call == s_->throw_at) throw std::runtime_error("could not start");
            return;
        }
        handler(std::error_code(), server_(request));
    }

    struct shared {
        std::size_t calls = 0, throw_at = 0, defer_at = 0;
        std::vector<std::function<void()>> kept;
    };
    std::shared_ptr<shared> s_ = std::make_shared<shared>();

private:
    tokmgr::testing::fake_auth_server server_;
};

}  // namespace test_async

// Flight 1's request is started, async_send throws, the flight ends. Flight 2
// (a login) takes the lease and is out. Flight 1's late completion is
// ignored, and must leave flight 2's lease alone: released while flight 2's
// request is out, another process could take it and rotate too.
TEST_CASE("an answer to a flight that ended is ignored and leaves the lease of the flight in progress alone") {
    test::harness h;
    h.options.backoff_initial = 1s;
    h.options.backoff_max = 1s;
    h.options.storage_executor = test_async::run_inline;
    test_async::deferring_transport transport(h.server);
    tokmgr::testing::shared_storage store;
    auto manager = std::make_unique<tokmgr::token_manager<test_async::deferring_transport,
                                                          tokmgr::testing::manual_clock,
                                                          tokmgr::testing::shared_storage, tokmgr::simdjson_json>>(
        transport, login(), h.options, h.clock, store);
    REQUIRE_FALSE(manager->get_token().empty());  // call 1: login, answered
    transport.s_->throw_at = 2;
    transport.s_->defer_at = 3;
    h.clock.advance(test::past_soft(h.options));
    manager->get_token();  // call 2: the refresh starts, async_send throws: flight 1 ends
    REQUIRE(transport.s_->calls == 2);
    h.clock.advance(2s);
    manager->get_token();  // call 3: flight 2 (a login: the token was marked spent), left out
    REQUIRE(transport.s_->calls == 3);
    std::error_code ec;
    {
        auto outsider = store.lock(std::chrono::milliseconds(0), ec);
        CHECK_FALSE(static_cast<bool>(outsider));  // flight 2 holds the lease
    }
    transport.s_->kept[0]();  // flight 1's late completion
    CHECK(manager->counters().ignored_answers == 1);
    {
        auto outsider = store.lock(std::chrono::milliseconds(0), ec);
        CHECK_FALSE(static_cast<bool>(outsider));  // still flight 2's
    }
    transport.s_->kept[1]();
    transport.s_->kept.clear();
}

TEST_CASE("trust rule: the n-th load or store failing, for every n, while another process rotates and the store is emptied") {
    // Fault injection by count over the store (load, store_if, and the lease
    // lost after the n-th write), through rotations and an emptied store:
    // whatever fails, no refresh token is sent twice, and both processes get
    // a JWT again once the store works.
    for (int kind = 0; kind < 3; ++kind) {
        for (std::size_t n = 1; n <= 24; ++n) {
            CAPTURE(kind);
            CAPTURE(n);
            test::harness h;
            tokmgr::testing::shared_storage store;
            if (kind == 0) store.fail_load(n);
            if (kind == 1) store.fail_store(n);
            if (kind == 2) store.lose_lease_at_store(n);
            auto a = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
            auto b = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
            std::error_code ec;
            for (int round = 0; round < 4; ++round) {
                a->get_token(ec);
                b->get_token(ec);
                h.clock.advance(test::past_soft(h.options));
                a->get_token(ec);
                if (round == 1) {
                    h.clock.advance(1min);
                    store.replace(std::nullopt);
                }
                b->get_token(ec);
            }
            test::served_again_without_reuse(h, *a, *b);
        }
    }
}
