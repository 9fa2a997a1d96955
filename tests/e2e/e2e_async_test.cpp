// async_get_token over the real Asio transport against the reference server:
// callbacks, use_future, use_awaitable, per-waiter cancellation, a crowd of
// coroutines on one thread during a slow refresh, the manager destroyed with
// waiters pending, an io_context stopped mid-flight, and the synchronous call
// that would deadlock on the executor's own thread. On a fake asynchronous
// transport and the manual clock: the hard threshold checked when a
// completion runs, the waiters resumed by one post per executor with no
// allocation per waiter, and allocation failure by count (this binary's
// operator new fails the n-th allocation of a thread when told to).
// The crowds of authorizing_transport and the stalling stores are in
// e2e_async_crowd_test.cpp and e2e_async_store_test.cpp (same binary: three
// translation units compile in parallel).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "e2e_async_support.hpp"

#include "../failing_new.hpp"

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

namespace {
// A coroutine written once for either credential source.
template <class Source>
asio::awaitable<std::string> header_through(Source& source) {
    const tokmgr::token_handle held = co_await source.async_get_token(asio::use_awaitable);
    co_return std::string(held.authorization().reveal());
}
}  // namespace

TEST_CASE("api_key_source::async_get_token follows the manager's conventions, so code switches by a type") {
    fixture f;
    auto manager = f.make();
    const tokmgr::api_key_source key(tokmgr::secret("tt_live_async"));
    std::string from_manager, from_key;
    asio::co_spawn(
        f.io,
        [&]() -> asio::awaitable<void> {
            from_manager = co_await header_through(*manager);
            from_key = co_await header_through(key);
        },
        asio::detached);
    f.io.run();
    CHECK(from_manager.rfind("Bearer ", 0) == 0);
    CHECK(from_key == "tt_live_async");

    // A callback runs through its associated executor, never inside the call.
    f.io.restart();
    bool returned = false, completed_inside = true, on_io_thread = false;
    std::error_code got = tokmgr::errc::protocol_error;
    tokmgr::token_handle held;
    key.async_get_token(asio::bind_executor(f.io, [&](std::error_code ec, tokmgr::token_handle handle) {
        completed_inside = !returned;
        on_io_thread = f.io.get_executor().running_in_this_thread();
        got = ec;
        held = std::move(handle);
    }));
    returned = true;
    f.io.run();
    CHECK_FALSE(got);
    CHECK_FALSE(completed_inside);
    CHECK(on_io_thread);
    CHECK(held.jwt().reveal() == "tt_live_async");

    // Without an executor of its own (use_future): the system executor.
    auto future = key.async_get_token(asio::use_future);
    REQUIRE(future.wait_for(10s) == std::future_status::ready);
    CHECK(future.get().authorization().reveal() == "tt_live_async");
}

TEST_CASE("a manager on a transport with a private io_context completes async_get_token with invalid_configuration") {
    fixture f;
    tokmgr::manager_options options;
    options.assumed_lifetimes = tokmgr::lifetimes{};
    tokmgr::token_manager<> manager(tokmgr::asio_transport(f.transport_options),
                                    tokmgr::credentials{"svc", tokmgr::secret("async-password")}, options);
    // A shared_future keeps the shared state, and with it the exception, alive in this thread: with a plain
    // future the system executor's thread frees the exception when it drops the promise, through libstdc++'s
    // reference count, which ThreadSanitizer cannot see (libstdc++ is not instrumented) and reports as a race
    // with the read of e.code() below.
    std::shared_future<tokmgr::token_handle> future = manager.async_get_token(asio::use_future).share();
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

// ---- on a fake asynchronous transport and the manual clock ------------------

namespace {

/// A handler with an associated allocator that counts what it allocates.
struct counted {
    std::size_t* allocations;
};
template <class T>
struct counting_allocator {
    using value_type = T;
    std::size_t* allocations;
    explicit counting_allocator(std::size_t* count) noexcept : allocations(count) {}
    template <class U>
    counting_allocator(const counting_allocator<U>& other) noexcept : allocations(other.allocations) {}
    T* allocate(std::size_t n) {
        ++*allocations;
        return std::allocator<T>().allocate(n);
    }
    void deallocate(T* p, std::size_t n) noexcept { std::allocator<T>().deallocate(p, n); }
    friend bool operator==(const counting_allocator& a, const counting_allocator& b) noexcept {
        return a.allocations == b.allocations;
    }
    friend bool operator!=(const counting_allocator& a, const counting_allocator& b) noexcept { return !(a == b); }
};
struct allocating_handler {
    std::size_t* allocations;
    std::error_code* got;
    using allocator_type = counting_allocator<void>;
    allocator_type get_allocator() const noexcept { return allocator_type(allocations); }
    void operator()(std::error_code ec, tokmgr::token_handle) const { *got = ec; }
};

/// An io_context's executor whose n-th post throws bad_alloc (counted over
/// its copies): where a completion's post fails.
struct flaky_executor {
    asio::io_context::executor_type inner;
    std::shared_ptr<int> posts_until_failure;  // <= 0: never fails

    asio::execution_context& query(asio::execution::context_t) const noexcept { return inner.context(); }
    static constexpr asio::execution::blocking_t query(asio::execution::blocking_t) noexcept {
        return asio::execution::blocking.never;
    }
    flaky_executor require(asio::execution::blocking_t::never_t) const noexcept { return *this; }

    template <class F>
    void execute(F&& f) const {
        if (*posts_until_failure > 0 && --*posts_until_failure == 0) throw std::bad_alloc();
        asio::execution::execute(asio::require(inner, asio::execution::blocking.never), std::forward<F>(f));
    }
    friend bool operator==(const flaky_executor& a, const flaky_executor& b) noexcept {
        return a.inner == b.inner && a.posts_until_failure == b.posts_until_failure;
    }
    friend bool operator!=(const flaky_executor& a, const flaky_executor& b) noexcept { return !(a == b); }
};

}  // namespace

TEST_CASE("a completion whose post fails is answered with an error, never dropped (the n-th post, for every n)") {
    static_assert(asio::execution::is_executor<flaky_executor>::value);
    for (int n = 1; n <= 4; ++n) {
        CAPTURE(n);
        posting_fixture f;
        auto manager = f.make();
        flaky_executor flaky{f.io.get_executor(), std::make_shared<int>(n)};
        constexpr int waiters = 3;
        int calls[waiters] = {};
        std::error_code got[waiters];
        for (int i = 0; i < waiters; ++i)
            manager->async_get_token(asio::bind_executor(flaky, [&calls, &got, i](std::error_code ec, tokmgr::token_handle h) {
                ++calls[i];
                got[i] = ec;
                CHECK(static_cast<bool>(h) == !ec);
            }));
        f.run();
        for (int i = 0; i < waiters; ++i) {
            CAPTURE(i);
            CHECK(calls[i] == 1);
        }
    }
}

TEST_CASE("an io_context stopped between the answer and the completions: a JWT expired meanwhile is not handed out") {
    posting_fixture f;
    auto manager = f.make();
    f.stops->store(1);  // stop right after the login's answer, before the waiters resume
    std::vector<std::pair<std::error_code, std::uint64_t>> got;
    for (int i = 0; i < 3; ++i)
        manager->async_get_token([&](std::error_code ec, tokmgr::token_handle h) { got.emplace_back(ec, h.generation()); });
    f.run();
    CHECK(got.empty());
    CHECK(f.server.stats().logins == 1);
    f.clock.advance(30min);  // the 30-minute JWT is past its hard threshold when the completions run
    f.run();
    REQUIRE(got.size() == 3);
    for (const auto& [ec, generation] : got) {
        CHECK_FALSE(ec);
        CHECK(generation > 1);  // the refresh's JWT, not the expired one
    }
    CHECK(f.server.stats().logins == 1);
    CHECK(f.server.stats().refreshes == 1);  // one for the three of them
}

TEST_CASE("the operation is allocated with the handler's associated allocator") {
    posting_fixture f;
    auto manager = f.make();
    std::size_t allocations = 0;
    std::error_code got = tokmgr::errc::protocol_error;
    manager->async_get_token(allocating_handler{&allocations, &got});
    f.run();
    CHECK_FALSE(got);
    CHECK(allocations >= 1);
}

TEST_CASE("waiters on one executor are resumed with no allocation per waiter") {
    auto allocations_during_run = [](int waiters) {
        posting_fixture f;
        auto manager = f.make();
        int answered = 0;
        for (int i = 0; i < waiters; ++i)
            manager->async_get_token([&](std::error_code ec, tokmgr::token_handle h) { answered += !ec && h; });
        allocations_counted = 0;
        counting_allocations = true;
        f.run();
        counting_allocations = false;
        CHECK(answered == waiters);
        return allocations_counted;
    };
    const std::size_t one = allocations_during_run(1);
    const std::size_t many = allocations_during_run(500);
    CAPTURE(one);
    CHECK(many <= one + 2);  // the login's own work is the same; 500 waiters add no allocation each
}

TEST_CASE("allocation failure by count: every waiter is answered exactly once, whichever allocation fails") {
    std::size_t n = 1;
    for (;; ++n) {
        CAPTURE(n);
        posting_fixture f;
        auto manager = f.make();
        auto strand = asio::make_strand(f.io);
        constexpr int waiters = 6;
        int calls[waiters] = {};
        bool initiated[waiters] = {};
        fail_allocation(n);
        for (int i = 0; i < waiters; ++i) {
            auto count = [&calls, i](std::error_code, tokmgr::token_handle) { ++calls[i]; };
            try {
                if (i % 2 == 0) manager->async_get_token(count);
                else manager->async_get_token(asio::bind_executor(strand, count));
                initiated[i] = true;
            } catch (const std::bad_alloc&) {  // the initiating call may fail: nothing was started for it
            }
        }
        f.run();
        const bool failed = stop_failing();
        for (int i = 0; i < waiters; ++i) {
            CAPTURE(i);
            CHECK(calls[i] == (initiated[i] ? 1 : 0));
        }
        if (!failed || n > 20000) break;
    }
    MESSAGE("allocations failed one by one: " << n - 1);
    CHECK(n < 20000);
}

// ---- a store that stalls: the io thread never waits for it ------------------
