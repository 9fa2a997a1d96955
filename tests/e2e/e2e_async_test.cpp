// async_get_token over the real Asio transport against the reference server:
// callbacks, use_future, use_awaitable, per-waiter cancellation, a crowd of
// coroutines on one thread during a slow refresh, the manager destroyed with
// waiters pending, an io_context stopped mid-flight, and the synchronous call
// that would deadlock on the executor's own thread.
#include <tokmgr/tokmgr.hpp>
#include <tokmgr/server/reference_server.hpp>
#include <tokmgr/server/stats_json.hpp>
#include <tokmgr/testing/shared_storage.hpp>

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <asio/redirect_error.hpp>
#include <asio/require.hpp>
#include <asio/prefer.hpp>
#include <asio/strand.hpp>
#include <asio/system_executor.hpp>
#include <asio/thread_pool.hpp>

#include <algorithm>
#include <atomic>
#include <functional>
#include <future>
#include <string>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

struct fixture {
    std::optional<tokmgr::server::reference_server> server;
    asio::io_context io;
    tokmgr::asio_transport_options transport_options;

    explicit fixture(std::chrono::milliseconds auth_delay = 0ms, std::chrono::seconds jwt_ttl = 30min) {
        tokmgr::server::server_options options;
        options.users.emplace("svc", tokmgr::secret("async-password"));
        options.jwt_ttl = jwt_ttl;
        options.refresh_ttl = 600s;
        options.auth_delay = auth_delay;
        server.emplace(std::move(options));
        server->start();
        transport_options.base_url = server->url();
    }

    std::unique_ptr<tokmgr::token_manager<>> make(tokmgr::manager_options options = {}) {
        options.assumed_lifetimes = tokmgr::lifetimes{};
        return std::make_unique<tokmgr::token_manager<>>(tokmgr::asio_transport(io.get_executor(), transport_options),
                                                         tokmgr::credentials{"svc", tokmgr::secret("async-password")},
                                                         std::move(options));
    }
};

}  // namespace

TEST_CASE("a callback gets the JWT; a second call is served without a request; never inside the initiating call") {
    fixture f;
    auto manager = f.make();
    std::error_code first_ec = tokmgr::errc::protocol_error;
    tokmgr::token_handle first;
    bool returned = false;
    bool completed_inside = false;
    manager->async_get_token([&](std::error_code ec, tokmgr::token_handle h) {
        completed_inside = !returned;
        first_ec = ec;
        first = std::move(h);
    });
    returned = true;
    f.io.run();
    CHECK_FALSE(first_ec);
    REQUIRE(first);
    CHECK_FALSE(completed_inside);

    // Fresh now: completes from the cache, still posted.
    f.io.restart();
    returned = false;
    tokmgr::token_handle second;
    manager->async_get_token([&](std::error_code ec, tokmgr::token_handle h) {
        completed_inside = !returned;
        CHECK_FALSE(ec);
        second = std::move(h);
    });
    returned = true;
    f.io.run();
    CHECK_FALSE(completed_inside);
    CHECK(second.jwt() == first.jwt());
    CHECK(f.server->stats().logins == 1);
    CHECK(manager->counters().logins == 1);
}

TEST_CASE("use_future from another thread while the io_context runs elsewhere") {
    fixture f;
    auto manager = f.make();
    auto guard = asio::make_work_guard(f.io);
    std::thread runner([&] { f.io.run(); });
    std::future<tokmgr::token_handle> future = manager->async_get_token(asio::use_future);
    REQUIRE(future.wait_for(10s) == std::future_status::ready);
    const tokmgr::token_handle handle = future.get();
    CHECK(handle);
    // The synchronous call on a thread that does not run the executor waits
    // for the asynchronous flight, or is served from the cache.
    CHECK(manager->get_token().reveal() == handle.jwt().reveal());
    guard.reset();
    f.io.stop();
    runner.join();
}

TEST_CASE("1,000 coroutines on one thread during a one-second login: one request, and the thread keeps working") {
    fixture f(1000ms);
    auto manager = f.make();
    constexpr int crowd = 1000;
    std::atomic<int> answered{0};
    std::atomic<int> failed{0};
    for (int i = 0; i < crowd; ++i) {
        asio::co_spawn(
            f.io,
            [&]() -> asio::awaitable<void> {
                try {
                    tokmgr::token_handle h = co_await manager->async_get_token(asio::use_awaitable);
                    if (h) ++answered;
                    else ++failed;
                } catch (const std::system_error&) {
                    ++failed;
                }
            },
            asio::detached);
    }
    // Other work on the same thread: a timer that ticks every 10 ms while the
    // login is in flight.
    int ticks = 0;
    asio::steady_timer ticker(f.io);
    std::function<void(std::error_code)> tick = [&](std::error_code ec) {
        if (ec || answered + failed == crowd) return;
        ++ticks;
        ticker.expires_after(10ms);
        ticker.async_wait(tick);
    };
    tick({});
    const auto started = std::chrono::steady_clock::now();
    f.io.run();
    const auto took = std::chrono::steady_clock::now() - started;
    MESSAGE("1,000 coroutines: " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms, "
                                 << ticks << " ticks of other work meanwhile");
    CHECK(answered == crowd);
    CHECK(failed == 0);
    CHECK(f.server->stats().logins == 1);
    CHECK(manager->counters().logins == 1);
    CHECK(ticks >= 50);  // a blocked thread would tick once or twice
}

TEST_CASE("a cancelled waiter completes at once with operation_aborted; the login goes on for the others") {
    fixture f(500ms);
    auto manager = f.make();
    asio::cancellation_signal signal;
    std::error_code cancelled_ec;
    std::chrono::steady_clock::time_point cancelled_at{};
    manager->async_get_token(asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec, tokmgr::token_handle h) {
        cancelled_ec = ec;
        cancelled_at = std::chrono::steady_clock::now();
        CHECK_FALSE(h);
    }));
    tokmgr::token_handle other;
    manager->async_get_token([&](std::error_code ec, tokmgr::token_handle h) {
        CHECK_FALSE(ec);
        other = std::move(h);
    });
    asio::steady_timer cancel_soon(f.io);
    std::chrono::steady_clock::time_point emitted{};
    cancel_soon.expires_after(50ms);
    cancel_soon.async_wait([&](std::error_code) {
        emitted = std::chrono::steady_clock::now();
        signal.emit(asio::cancellation_type::all);
    });
    f.io.run();
    CHECK(cancelled_ec == asio::error::operation_aborted);
    CHECK(cancelled_at - emitted < 300ms);  // well before the 500 ms login ends
    CHECK(other);
    CHECK(f.server->stats().logins == 1);
}

TEST_CASE("the manager destroyed with waiters pending: each completes, with shut_down, and nothing crashes") {
    fixture f(300ms);
    auto manager = f.make();
    std::vector<std::error_code> results;
    for (int i = 0; i < 10; ++i)
        manager->async_get_token([&](std::error_code ec, tokmgr::token_handle) { results.push_back(ec); });
    asio::steady_timer destroy_soon(f.io);
    destroy_soon.expires_after(50ms);
    destroy_soon.async_wait([&](std::error_code) { manager.reset(); });
    f.io.run();
    REQUIRE(results.size() == 10);
    for (const auto& ec : results) CHECK(ec == tokmgr::errc::shut_down);
}

TEST_CASE("an io_context stopped mid-flight: the waiters complete once it runs again") {
    fixture f(200ms);
    auto manager = f.make();
    int answered = 0;
    for (int i = 0; i < 5; ++i)
        manager->async_get_token([&](std::error_code ec, tokmgr::token_handle h) {
            CHECK_FALSE(ec);
            answered += static_cast<bool>(h);
        });
    asio::steady_timer stop_soon(f.io);
    stop_soon.expires_after(50ms);
    stop_soon.async_wait([&](std::error_code) { f.io.stop(); });
    f.io.run();
    CHECK(answered == 0);
    f.io.restart();
    f.io.run();
    CHECK(answered == 5);
    CHECK(f.server->stats().logins == 1);
}

TEST_CASE("a synchronous get_token on the executor's own thread that would wait gets would_block at once") {
    fixture f(100ms);
    auto manager = f.make();
    std::error_code ec;
    std::chrono::steady_clock::duration took{};
    asio::post(f.io, [&] {
        const auto started = std::chrono::steady_clock::now();
        manager->get_token(ec);
        took = std::chrono::steady_clock::now() - started;
    });
    f.io.run();
    CHECK(ec == tokmgr::errc::would_block);
    CHECK(took < 50ms);
    // The login it started still ran: the next call is served.
    CHECK(f.server->stats().logins == 1);
    tokmgr::token_handle later;
    f.io.restart();
    manager->async_get_token([&](std::error_code, tokmgr::token_handle h) { later = std::move(h); });
    f.io.run();
    CHECK(later);
    CHECK(f.server->stats().logins == 1);
}

TEST_CASE("a refresh due on a 3-second JWT runs asynchronously while callers are served") {
    fixture f(0ms, 3s);
    auto manager = f.make();
    std::atomic<int> ok{0}, failed{0};
    asio::co_spawn(
        f.io,
        [&]() -> asio::awaitable<void> {
            asio::steady_timer pause(co_await asio::this_coro::executor);
            const auto until = std::chrono::steady_clock::now() + 5s;
            while (std::chrono::steady_clock::now() < until) {
                std::error_code ec;
                tokmgr::token_handle h = co_await manager->async_get_token(asio::redirect_error(asio::use_awaitable, ec));
                if (!ec && h) ++ok;
                else ++failed;
                pause.expires_after(5ms);
                co_await pause.async_wait(asio::use_awaitable);
            }
        },
        asio::detached);
    f.io.run();
    const auto stats = f.server->stats();
    INFO("server: " << tokmgr::server::to_json(stats));
    CHECK(failed == 0);
    CHECK(ok > 100);
    CHECK(stats.logins == 1);
    CHECK(stats.refreshes >= 2);
    CHECK(stats.refresh_tokens_reused == 0);
    CHECK(stats.max_refreshes_in_flight == 1);
}

TEST_CASE("a storage lease held elsewhere does not block the executor's thread; the login runs once it is free") {
    fixture f;
    tokmgr::testing::shared_storage store;
    tokmgr::manager_options options;
    options.assumed_lifetimes = tokmgr::lifetimes{};
    tokmgr::token_manager<tokmgr::asio_transport, tokmgr::steady_clock, tokmgr::testing::shared_storage,
                          tokmgr::simdjson_json>
        manager(tokmgr::asio_transport(f.io.get_executor(), f.transport_options),
                tokmgr::credentials{"svc", tokmgr::secret("async-password")}, options, {}, store);
    auto outsider = std::make_unique<tokmgr::testing::shared_storage::lease>(store.hold_from_outside());
    tokmgr::token_handle got;
    manager.async_get_token([&](std::error_code ec, tokmgr::token_handle h) {
        CHECK_FALSE(ec);
        got = std::move(h);
    });
    int ticks = 0;
    asio::steady_timer ticker(f.io);
    std::function<void(std::error_code)> tick = [&](std::error_code ec) {
        if (ec || got) return;
        if (++ticks == 30) outsider.reset();  // ~300 ms later the other holder lets go
        ticker.expires_after(10ms);
        ticker.async_wait(tick);
    };
    tick({});
    f.io.run();
    CHECK(got);
    CHECK(ticks >= 30);  // the thread kept running while the lease was taken
    CHECK(f.server->stats().logins == 1);
    REQUIRE(store.stored());
    CHECK(store.stored()->generation == 1);
}

TEST_CASE("a manager on a transport with a private io_context completes async_get_token with invalid_configuration") {
    fixture f;
    tokmgr::manager_options options;
    options.assumed_lifetimes = tokmgr::lifetimes{};
    tokmgr::token_manager<> manager(tokmgr::asio_transport(f.transport_options),
                                    tokmgr::credentials{"svc", tokmgr::secret("async-password")}, options);
    std::future<tokmgr::token_handle> future = manager.async_get_token(asio::use_future);
    REQUIRE(future.wait_for(10s) == std::future_status::ready);
    try {
        future.get();
        FAIL("expected invalid_configuration");
    } catch (const std::system_error& e) {
        CHECK(e.code() == tokmgr::errc::invalid_configuration);
    }
    CHECK(f.server->stats().logins == 0);  // nothing was sent, nothing blocked
    std::promise<std::error_code> got;
    manager.async_get_token([&](std::error_code ec, tokmgr::token_handle) { got.set_value(ec); });
    auto callback = got.get_future();
    REQUIRE(callback.wait_for(10s) == std::future_status::ready);
    CHECK(callback.get() == tokmgr::errc::invalid_configuration);
}

TEST_CASE("destroyed mid-login or mid-refresh on an io_context run by two threads: the transport is never raced") {
    // The connection's close (from the destructor) and the request's own
    // handlers must not run at once on the two threads (ThreadSanitizer
    // checks), whatever moment the destruction hits: many rounds, destroying
    // from at once to a little after a request takes.
    fixture f;
    auto guard = asio::make_work_guard(f.io);
    std::thread first([&] { f.io.run(); });
    std::thread second([&] { f.io.run(); });
    tokmgr::manager_options options;
    options.min_forced_refresh_interval = 0ms;
    // The shortest of a few logins: the destructions spread over it.
    auto request_time = std::chrono::steady_clock::duration::max();
    for (int i = 0; i < 3; ++i) {
        auto manager = f.make(options);
        const auto started = std::chrono::steady_clock::now();
        auto login = manager->async_get_token(asio::use_future);
        REQUIRE(login.wait_for(10s) == std::future_status::ready);
        request_time = std::min(request_time, std::chrono::steady_clock::now() - started);
    }
    constexpr int rounds = 64;
    int answered = 0;
    for (int round = 0; round < rounds; ++round) {
        const bool mid_refresh = round % 2 == 1;
        CAPTURE(round);
        auto manager = f.make(options);
        if (mid_refresh) {
            auto login = manager->async_get_token(asio::use_future);
            REQUIRE(login.wait_for(10s) == std::future_status::ready);
            manager->invalidate(login.get().jwt());  // the next call refreshes
        }
        std::promise<std::error_code> done;
        manager->async_get_token([&](std::error_code ec, tokmgr::token_handle) { done.set_value(ec); });
        const auto until = std::chrono::steady_clock::now() + request_time * (round / 2 % 8) / 8;
        while (std::chrono::steady_clock::now() < until) std::this_thread::yield();
        manager.reset();
        auto result = done.get_future();
        REQUIRE(result.wait_for(10s) == std::future_status::ready);
        const std::error_code ec = result.get();
        CHECK((!ec || ec == tokmgr::errc::shut_down));
        answered += !ec;
    }
    guard.reset();
    first.join();
    second.join();
    MESSAGE(answered << " of " << rounds << " rounds were answered before the destruction");
}

namespace {

/// Each executor kind docs/async.md names, as a transport is given it.
struct executor_kind {
    const char* name;
    std::function<asio::any_io_executor(asio::io_context&, asio::thread_pool&)> make;
    bool recognised;  // whether its threads can be told (would_block), or only max_wait bounds a wait there
};

std::vector<executor_kind> executor_kinds() {
    using asio::execution::blocking;
    using asio::execution::outstanding_work;
    return {
        {"io_context", [](asio::io_context& io, asio::thread_pool&) { return asio::any_io_executor(io.get_executor()); }, true},
        {"strand", [](asio::io_context& io, asio::thread_pool&) { return asio::any_io_executor(asio::make_strand(io)); }, true},
        {"blocking.never",
         [](asio::io_context& io, asio::thread_pool&) {
             return asio::any_io_executor(asio::require(io.get_executor(), blocking.never));
         },
         true},
        {"outstanding_work.tracked",
         [](asio::io_context& io, asio::thread_pool&) {
             return asio::any_io_executor(asio::prefer(io.get_executor(), outstanding_work.tracked));
         },
         true},
        {"strand, blocking.never",
         [](asio::io_context& io, asio::thread_pool&) {
             return asio::any_io_executor(asio::require(asio::make_strand(io), blocking.never));
         },
         true},
        {"thread_pool", [](asio::io_context&, asio::thread_pool& pool) { return asio::any_io_executor(pool.get_executor()); }, true},
        {"strand on a thread_pool",
         [](asio::io_context&, asio::thread_pool& pool) { return asio::any_io_executor(asio::make_strand(pool)); },
         true},
        {"system_executor", [](asio::io_context&, asio::thread_pool&) { return asio::any_io_executor(asio::system_executor()); }, false},
    };
}

}  // namespace

TEST_CASE("each executor kind: its threads are recognised, and a synchronous get_token there never waits forever") {
    using ops = tokmgr::detail::executor_ops<asio::any_io_executor>;
    for (const executor_kind& kind : executor_kinds()) {
        CAPTURE(kind.name);
        fixture f;
        asio::thread_pool pool(2);
        const asio::any_io_executor executor = kind.make(f.io, pool);
        CHECK_FALSE(ops::running_in_this_thread(executor));  // this thread runs none of them
        tokmgr::manager_options options;
        options.max_wait = 10s;
        options.assumed_lifetimes = tokmgr::lifetimes{};
        tokmgr::token_manager<> manager(tokmgr::asio_transport(executor, f.transport_options),
                                        tokmgr::credentials{"svc", tokmgr::secret("async-password")}, options);
        // The executor a transport on it works on (its own strand on it).
        const tokmgr::asio_transport probe(executor, f.transport_options);
        CHECK_FALSE(ops::running_in_this_thread(probe.get_executor()));
        struct seen {
            bool on_given = false;
            bool on_transport = false;
            std::error_code ec;
            std::string jwt;
        };
        std::promise<seen> result;
        // On a thread running the executor: the login it needs runs there too.
        asio::post(executor, [&] {
            seen s;
            s.on_given = ops::running_in_this_thread(executor);
            s.on_transport = ops::running_in_this_thread(probe.get_executor());
            s.jwt = std::string(manager.get_token(s.ec).reveal());
            result.set_value(std::move(s));
        });
        auto future = result.get_future();
        std::thread runner([&] { f.io.run(); });
        REQUIRE(future.wait_for(20s) == std::future_status::ready);
        const seen s = future.get();
        CHECK(s.on_given == kind.recognised);
        CHECK(s.on_transport == kind.recognised);
        if (kind.recognised) {
            CHECK(s.ec == tokmgr::errc::would_block);
        } else {
            // system_executor: another of its threads runs the login.
            CHECK_FALSE(s.ec);
            CHECK_FALSE(s.jwt.empty());
        }
        // The login that was started is served to a caller elsewhere.
        std::error_code later_ec;
        CHECK_FALSE(std::string(manager.get_token(later_ec).reveal()).empty());
        CHECK_FALSE(later_ec);
        f.io.stop();  // an outstanding_work.tracked executor keeps it running
        runner.join();
        pool.join();
    }
}

TEST_CASE("a manager destroyed after its io_context touches nothing of it and says so") {
    // The wrong order (docs/async.md#destruction-order): nothing may be
    // posted to, or closed on, the dead io_context (AddressSanitizer checks),
    // whether the transport is idle or a login is waiting for its answer.
    for (const bool mid_login : {false, true}) {
        CAPTURE(mid_login);
        fixture f(mid_login ? 300ms : 0ms);
        auto events = std::make_shared<std::vector<tokmgr::transport_event_kind>>();
        f.transport_options.on_event = [events](const tokmgr::transport_event& e) { events->push_back(e.kind); };
        std::unique_ptr<tokmgr::token_manager<>> manager;
        {
            asio::io_context io;
            tokmgr::manager_options options;
            options.assumed_lifetimes = tokmgr::lifetimes{};
            options.max_wait = 100ms;
            manager = std::make_unique<tokmgr::token_manager<>>(
                tokmgr::asio_transport(io.get_executor(), f.transport_options),
                tokmgr::credentials{"svc", tokmgr::secret("async-password")}, options);
            // Starts the login on the io_context; no asynchronous waiter is
            // left (completing one would post to its handler's executor).
            std::error_code ec;
            manager->get_token(ec);
            CHECK(ec == tokmgr::errc::wait_timeout);
            if (mid_login) {
                io.run_for(50ms);  // sent; the answer comes 300 ms later
            } else {
                io.run();
                std::error_code served_ec;
                CHECK_FALSE(std::string(manager->get_token(served_ec).reveal()).empty());
            }
        }
        manager.reset();
        CHECK(std::count(events->begin(), events->end(), tokmgr::transport_event_kind::execution_context_gone) == 1);
    }
}
