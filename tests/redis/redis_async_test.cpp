// redis_async_storage (members 6–11 of the Storage concept) against the
// fixture's redis-server: each member on an io_context, the lease shared with
// the blocking store, the round trips the lease read and the fenced mark
// save, a server stopped by SIGSTOP while a 10 ms ticker on the same
// io_context keeps ticking (every handler answered once, by the deadlines),
// the store destroyed with a command in flight, and an asynchronous manager
// on it.
#include <doctest/doctest.h>

#include <tokmgr/concepts.hpp>
#include <tokmgr/storage/redis_async.hpp>

#include "../io_gap.hpp"
#include "harness.hpp"
#include "redis_test_support.hpp"

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>

using namespace std::chrono_literals;
using tokmgr::errc;
using tokmgr::redis_async_options;
using tokmgr::redis_async_storage;
using tokmgr::redis_storage;
using test::set_of;

static_assert(tokmgr::is_async_storage_v<redis_async_storage>);
static_assert(tokmgr::is_coordinating_storage_v<redis_async_storage>);

namespace {

using redis_test::fixture_number;
using redis_test::stopped_redis;

std::string fresh_async_key() {
    static std::atomic<int> n{0};
    return "tokmgr-test:async:" + std::to_string(::getpid()) + ":" + std::to_string(++n);
}

redis_async_options async_options(asio::io_context& io, const std::string& key) {
    redis_async_options o;
    o.port = fixture_number("port");
    o.key = key;
    o.lease_ttl = 5s;
    o.executor = io.get_executor();
    return o;
}

/// Runs `io` until `done` is set (with a 20 s safety limit), with a 10 ms
/// ticker on it; returns the widest gap between ticks.
std::chrono::steady_clock::duration run_until(asio::io_context& io, const bool& done) {
    const auto widest = test::widest_gap_while(io, [&] { return done; });
    REQUIRE(done);
    return widest;
}

/// Starts an operation with a handler that keeps what it is called with,
/// runs the io_context until then, and returns it; counts every call.
struct awaiter {
    asio::io_context& io;
    int calls = 0;

    template <class... Results, class Start>
    std::tuple<Results...> operator()(Start start) {
        std::optional<std::tuple<Results...>> got;
        bool done = false;
        start([&](Results... results) {
            ++calls;
            got.emplace(std::move(results)...);
            done = true;
        });
        run_until(io, done);
        return std::move(*got);
    }
    std::error_code done(std::function<void(std::function<void(std::error_code)>)> start) {
        return std::get<0>(operator()<std::error_code>(std::move(start)));
    }
    std::tuple<std::error_code, bool> decided(std::function<void(std::function<void(std::error_code, bool)>)> start) {
        return operator()<std::error_code, bool>(std::move(start));
    }
    std::tuple<std::error_code, std::optional<tokmgr::token_set>> loaded(redis_async_storage& store) {
        return operator()<std::error_code, std::optional<tokmgr::token_set>>([&](auto h) { store.async_load(h); });
    }
    std::tuple<std::error_code, redis_async_storage::lease> leased(redis_async_storage& store,
                                                                   std::chrono::milliseconds wait) {
        return operator()<std::error_code, redis_async_storage::lease>([&](auto h) { store.async_lock(wait, h); });
    }
};

}  // namespace

TEST_CASE("async members: load, store, store_if, lock, holds, release, each answered once") {
    asio::io_context io;
    const auto key = fresh_async_key();
    redis_async_storage store(async_options(io, key));
    redis_storage blocking(async_options(io, key));
    awaiter await{io};

    auto [load_ec, nothing] = await.loaded(store);
    CHECK_FALSE(load_ec);
    CHECK_FALSE(nothing);

    CHECK_FALSE(await.done([&](auto h) { store.async_store(set_of(1), h); }));
    CHECK(blocking.load()->generation == 1);  // the blocking store sees it

    CHECK(await.decided([&](auto h) { store.async_store_if(set_of(2), 0, h); }) ==
          std::make_tuple(std::error_code(), false));
    CHECK(await.decided([&](auto h) { store.async_store_if(set_of(2), 1, h); }) ==
          std::make_tuple(std::error_code(), true));

    // The lease and the read in one command: the load after it is answered
    // with the server stopped.
    auto [lock_ec, held] = await.leased(store, 1s);
    CHECK_FALSE(lock_ec);
    REQUIRE(held);
    std::optional<tokmgr::token_set> loaded;
    {
        stopped_redis stopped;
        std::error_code ec;
        std::tie(ec, loaded) = await.loaded(store);
        CHECK_FALSE(ec);
    }
    REQUIRE(loaded);
    CHECK(loaded->generation == 2);

    std::error_code ec;
    CHECK_FALSE(blocking.lock(50ms, ec));
    CHECK(ec == errc::lease_timeout);

    // A spent mark fenced by the lease: async_holds answers from it, with
    // the server stopped; after that, from Redis.
    CHECK(await.decided([&](auto h) { store.async_store_if(set_of(3, true), 2, h); }) ==
          std::make_tuple(std::error_code(), true));
    {
        stopped_redis stopped;
        CHECK(await.decided([&](auto h) { store.async_holds(held, h); }) == std::make_tuple(std::error_code(), true));
    }
    CHECK(await.decided([&](auto h) { store.async_holds(held, h); }) == std::make_tuple(std::error_code(), true));

    CHECK_FALSE(await.done([&](auto h) { store.async_release(std::move(held), h); }));
    CHECK_FALSE(held);
    auto after = blocking.lock(0ms, ec);
    CHECK(after);

    // The blocking store holds it now: the wait ends when asked.
    auto [timeout_ec, refused] = await.leased(store, 0ms);
    CHECK(timeout_ec == errc::lease_timeout);
    CHECK_FALSE(refused);
    CHECK(store.last_error().detail.find("held by another process") != std::string::npos);

    // An answer known at once still comes on the executor, not inside the call.
    bool answered = false;
    store.async_holds(redis_async_storage::lease(), [&](std::error_code e, bool h) {
        CHECK_FALSE(e);
        CHECK_FALSE(h);
        answered = true;
    });
    CHECK_FALSE(answered);
    run_until(io, answered);

    io.restart();
    io.run_for(50ms);  // nothing more is called
    CHECK(await.calls == 11);
}

TEST_CASE("async: a value tokmgr did not write is refused, named, and left as it is") {
    asio::io_context io;
    const auto key = fresh_async_key();
    redis_async_storage store(async_options(io, key));
    tokmgr::redis_options raw_options;
    raw_options.port = fixture_number("port");
    tokmgr::detail::redis::connection raw(raw_options);
    tokmgr::detail::resp::reply r;
    tokmgr::error_info failed;
    REQUIRE(raw.command({"LPUSH", "{" + key + "}", "x"}, r, failed));
    awaiter await{io};
    auto [load_ec, set] = await.loaded(store);
    CHECK(load_ec == errc::storage_foreign);
    CHECK_FALSE(set);
    CHECK(store.last_error().detail.find("a list, not a tokmgr token-set document") != std::string::npos);
    CHECK(await.done([&](auto h) { store.async_store(set_of(1), h); }) == errc::storage_foreign);
    CHECK(await.decided([&](auto h) { store.async_store_if(set_of(1), 0, h); }) ==
          std::make_tuple(make_error_code(errc::storage_foreign), false));
    REQUIRE(raw.command({"LRANGE", "{" + key + "}", "0", "-1"}, r, failed));
    REQUIRE(r.elements.size() == 1);
    CHECK(r.elements[0].text == "x");
}

TEST_CASE("async: a password the server refuses is named in no message") {
    asio::io_context io;
    auto options = async_options(io, fresh_async_key());
    options.password = tokmgr::secret("async-secret-8c1f");  // the fixture's server has none
    redis_async_storage store(options);
    awaiter await{io};
    auto [ec, set] = await.loaded(store);
    CHECK(ec);
    CHECK_FALSE(set);
    CHECK_FALSE(store.last_error().detail.empty());
    CHECK(store.last_error().detail.find("async-secret-8c1f") == std::string::npos);
}

TEST_CASE("async: a lease wait ends when the blocking holder releases, without blocking the executor") {
    asio::io_context io;
    const auto key = fresh_async_key();
    redis_async_storage store(async_options(io, key));
    redis_storage blocking(async_options(io, key));
    auto held = blocking.lock(0ms);
    REQUIRE(held);
    std::thread releaser([&] {
        std::this_thread::sleep_for(300ms);
        held.release();
    });
    bool done = false;
    std::error_code failed;
    redis_async_storage::lease got;
    const auto start = std::chrono::steady_clock::now();
    store.async_lock(3s, [&](std::error_code ec, redis_async_storage::lease l) {
        failed = ec;
        got = std::move(l);
        done = true;
    });
    const auto widest = run_until(io, done);
    const auto took = std::chrono::steady_clock::now() - start;
    releaser.join();
    CHECK_FALSE(failed);
    CHECK(got);
    CHECK(took >= 280ms);
    CHECK(took < 1s);  // the poll steps are at most 50 ms
    CHECK(widest < test::io_gap_bound);
    std::error_code ec;
    CHECK_FALSE(blocking.lock(0ms, ec));  // the async store holds it now
}

TEST_CASE("async: a server stopped by SIGSTOP does not block the executor; the deadlines answer every handler once") {
    asio::io_context io;
    auto options = async_options(io, fresh_async_key());
    options.command_timeout = 400ms;
    options.connect_timeout = 400ms;
    redis_async_storage store(options);
    bool warm = false;
    store.async_load([&](std::error_code ec, std::optional<tokmgr::token_set>) {
        CHECK_FALSE(ec);
        warm = true;
    });
    run_until(io, warm);  // a kept connection: the first failure is sent once more

    int loads = 0, stores = 0, locks = 0, writes = 0;
    std::error_code load_ec, store_ec, lock_ec, write_ec;
    bool done = false;
    const auto all = [&] { done = loads && stores && locks && writes; };
    std::chrono::steady_clock::duration widest{}, took{};
    {
        stopped_redis stopped;
        const auto start = std::chrono::steady_clock::now();
        store.async_load([&](std::error_code ec, std::optional<tokmgr::token_set>) {
            ++loads;
            load_ec = ec;
            all();
        });
        store.async_store(set_of(1), [&](std::error_code ec) {
            ++stores;
            store_ec = ec;
            all();
        });
        store.async_lock(5s, [&](std::error_code ec, redis_async_storage::lease) {
            ++locks;
            lock_ec = ec;
            all();
        });
        store.async_store_if(set_of(1), 0, [&](std::error_code ec, bool) {
            ++writes;
            write_ec = ec;
            all();
        });
        widest = run_until(io, done);
        took = std::chrono::steady_clock::now() - start;
    }
    CHECK(load_ec == errc::storage_failed);  // sent on the kept connection, then on a new one
    CHECK(store_ec);
    CHECK(lock_ec);
    CHECK(write_ec);
    CHECK(store.last_error().detail.find("command_timeout") != std::string::npos);
    CHECK(took >= 4 * 400ms);  // one command at a time, each to its deadline
    CHECK(took < 10s);
    CHECK(widest < test::io_gap_bound);
    io.restart();
    io.run_for(100ms);
    CHECK(loads == 1);
    CHECK(stores == 1);
    CHECK(locks == 1);
    CHECK(writes == 1);

    // Resumed: the next command connects again.
    done = false;
    std::error_code ec;
    store.async_store_if(set_of(1), 0, [&](std::error_code e, bool w) {
        ec = e;
        CHECK(w);
        done = true;
    });
    run_until(io, done);
    CHECK_FALSE(ec);
}

TEST_CASE("async: the store destroyed with a command in flight; its handler is still answered once") {
    asio::io_context io;
    auto options = async_options(io, fresh_async_key());
    options.command_timeout = 300ms;
    options.connect_timeout = 300ms;
    auto store = std::make_unique<redis_async_storage>(options);
    bool warm = false;
    store->async_load([&](std::error_code, std::optional<tokmgr::token_set>) { warm = true; });
    run_until(io, warm);

    int answered = 0, queued = 0;
    std::error_code first, second;
    bool done = false;
    {
        stopped_redis stopped;
        store->async_load([&](std::error_code ec, std::optional<tokmgr::token_set>) {
            ++answered;
            first = ec;
            done = answered && queued;
        });
        store->async_lock(1s, [&](std::error_code ec, redis_async_storage::lease l) {
            ++queued;
            second = ec;
            CHECK_FALSE(l);
            done = answered && queued;
        });
        io.restart();
        io.run_for(50ms);  // the load is on the wire
        store.reset();
        run_until(io, done);
    }
    CHECK(first == errc::shut_down);
    CHECK(second == errc::shut_down);
    io.restart();
    io.run_for(100ms);
    CHECK(answered == 1);
    CHECK(queued == 1);

    // And destroyed before anything ran.
    store = std::make_unique<redis_async_storage>(options);
    done = false;
    store->async_store(set_of(1), [&](std::error_code ec) {
        CHECK(ec == errc::shut_down);
        done = true;
    });
    store.reset();
    run_until(io, done);
}

// ---- an asynchronous manager on the store -----------------------------------

#include <tokmgr/server/reference_server.hpp>
#include <tokmgr/server/stats_json.hpp>
#include <tokmgr/tokmgr.hpp>

TEST_CASE("an asynchronous manager on redis_async_storage: many concurrent awaits, one login, refreshes, no "
          "reuse, and the io thread never waits") {
    asio::io_context io;
    tokmgr::server::server_options server_options;
    server_options.users.emplace("svc", tokmgr::secret("redis-password"));
    server_options.jwt_ttl = 2s;
    server_options.refresh_ttl = 600s;
    tokmgr::server::reference_server server(std::move(server_options));
    server.start();
    tokmgr::asio_transport_options transport_options;
    transport_options.base_url = server.url();
    tokmgr::token_manager<tokmgr::asio_transport, tokmgr::steady_clock, redis_async_storage, tokmgr::simdjson_json>
        manager(tokmgr::asio_transport(io.get_executor(), transport_options),
                tokmgr::credentials{"svc", tokmgr::secret("redis-password")}, tokmgr::manager_options{}, {},
                redis_async_storage(async_options(io, fresh_async_key())));

    constexpr int rounds = 45, callers = 40;
    int answered = 0, failed = 0, round = 0;
    asio::steady_timer next(io);
    std::function<void()> wave = [&] {
        for (int i = 0; i < callers; ++i)
            manager.async_get_token([&](std::error_code ec, tokmgr::token_handle h) {
                ++answered;
                failed += ec || !h;
            });
        if (++round == rounds) return;
        next.expires_after(100ms);
        next.async_wait([&](std::error_code) { wave(); });
    };
    wave();
    const auto widest = test::widest_gap_while(io, [&] { return answered == rounds * callers; }, 30s);
    const auto stats = server.stats();
    INFO("server: " << tokmgr::server::to_json(stats));
    CHECK(answered == rounds * callers);
    CHECK(failed == 0);
    CHECK(stats.logins == 1);
    CHECK(stats.refreshes >= 1);
    CHECK(stats.refresh_tokens_reused == 0);
    CHECK(stats.max_refreshes_in_flight == 1);
    CHECK(widest < test::io_gap_bound);
    io.restart();
    io.run_for(200ms);  // the lease's release
}
