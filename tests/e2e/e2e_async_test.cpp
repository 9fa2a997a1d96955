// async_get_token over the real Asio transport against the reference server:
// callbacks, use_future, use_awaitable, per-waiter cancellation, a crowd of
// coroutines on one thread during a slow refresh, the manager destroyed with
// waiters pending, an io_context stopped mid-flight, and the synchronous call
// that would deadlock on the executor's own thread. On a fake asynchronous
// transport and the manual clock: the hard threshold checked when a
// completion runs, the waiters resumed by one post per executor with no
// allocation per waiter, and allocation failure by count (this binary's
// operator new fails the n-th allocation of a thread when told to).
#include <tokmgr/tokmgr.hpp>
#include <tokmgr/server/reference_server.hpp>
#include <tokmgr/server/stats_json.hpp>
#include <tokmgr/testing/crowd_gate.hpp>
#include <tokmgr/testing/fake_auth_server.hpp>
#include <tokmgr/testing/fake_transport.hpp>
#include <tokmgr/testing/manual_clock.hpp>
#include <tokmgr/testing/shared_storage.hpp>
#include <tokmgr/storage/file.hpp>

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/prefer.hpp>
#include <asio/redirect_error.hpp>
#include <asio/require.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/system_executor.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../failing_new.hpp"
#include "../io_gap.hpp"

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

// ---- authorizing_transport: a crowd of 401s for one JWT -----------------------

namespace {

constexpr int crowd_threads = 64;
constexpr int crowd_coroutines = 10'000;

/// `target` must outlive the request (http_request may view it).
tokmgr::http_request api_get(std::string_view target) {
    tokmgr::http_request request;
    request.method = "GET";
    request.target = target;
    request.content_type = {};
    return request;
}

bool carries(const tokmgr::http_request& request, const std::string& header) {
    auto value = tokmgr::find_header(request.headers, "Authorization");
    return value && *value == header;
}

/// A synchronous transport that holds each request carrying `header` at the
/// gate: nobody's 401 comes back before every thread sent the old JWT.
class gated_transport {
public:
    gated_transport(tokmgr::asio_transport inner, tokmgr::testing::crowd_gate& gate, std::string header)
        : inner_(std::move(inner)), gate_(&gate), header_(std::move(header)) {}
    tokmgr::http_response send(const tokmgr::http_request& request, std::error_code& ec) {
        if (carries(request, header_)) gate_->arrive_and_wait();
        return inner_.send(request, ec);
    }

private:
    tokmgr::asio_transport inner_;
    tokmgr::testing::crowd_gate* gate_;
    std::string header_;
};

/// Requests parked until `release_at` of them carry `header`, then sent all
/// at once; on a single-threaded io_context.
class parking_lot {
public:
    parking_lot(std::string header, std::size_t release_at) : header_(std::move(header)), release_at_(release_at) {}

    /// True when `send` was parked (it runs once the crowd is complete).
    bool park(const tokmgr::http_request& request, std::function<void()>& send) {
        if (released_ || !carries(request, header_)) return false;
        parked_.push_back(std::move(send));
        if (parked_.size() == release_at_) {
            released_ = true;
            for (auto& go : std::exchange(parked_, {})) go();
        }
        return true;
    }

private:
    std::string header_;
    std::size_t release_at_;
    bool released_ = false;
    std::vector<std::function<void()>> parked_;
};

/// fake_transport answered on an executor: an asynchronous transport, for a
/// manager (so that async_send awaits async_get_token) and for the API.
class async_fake_transport {
public:
    async_fake_transport(asio::any_io_executor executor, tokmgr::testing::fake_transport inner,
                         std::shared_ptr<parking_lot> lot = nullptr)
        : executor_(std::move(executor)), inner_(std::move(inner)), lot_(std::move(lot)) {}

    asio::any_io_executor get_executor() const { return executor_; }

    template <class Handler>
    void async_send(const tokmgr::http_request& request, Handler&& handler) {
        std::error_code ec;
        auto response = std::make_shared<tokmgr::http_response>(inner_.send(request, ec));
        auto h = std::make_shared<std::decay_t<Handler>>(std::forward<Handler>(handler));
        std::function<void()> complete = [executor = executor_, h, ec, response] {
            asio::post(executor, [h, ec, response] { (*h)(ec, std::move(*response)); });
        };
        if (lot_ && lot_->park(request, complete)) return;
        complete();
    }

private:
    asio::any_io_executor executor_;
    tokmgr::testing::fake_transport inner_;
    std::shared_ptr<parking_lot> lot_;
};

/// Asynchronous requests over a few keep-alive connections to the reference
/// server (a transport carries one request at a time), parked first as above.
class pooled_transport {
public:
    pooled_transport(asio::any_io_executor executor, const tokmgr::asio_transport_options& options,
                     std::size_t connections, std::shared_ptr<parking_lot> lot)
        : state_(std::make_shared<state>()) {
        state_->executor = executor;
        state_->lot = std::move(lot);
        for (std::size_t i = 0; i < connections; ++i)
            state_->idle.push_back(std::make_shared<tokmgr::asio_transport>(executor, options));
    }

    asio::any_io_executor get_executor() const { return state_->executor; }

    template <class Handler>
    void async_send(const tokmgr::http_request& request, Handler&& handler) {
        auto copy = std::make_shared<tokmgr::detail::owned_request>(request);
        auto h = std::make_shared<std::decay_t<Handler>>(std::forward<Handler>(handler));
        auto s = state_;
        std::function<void()> enqueue = [s, copy, h] {
            s->queue.push_back(job{copy, [h](std::error_code ec, tokmgr::http_response r) { (*h)(ec, std::move(r)); }});
            pump(s);
        };
        if (s->lot && s->lot->park(request, enqueue)) return;
        enqueue();
    }

private:
    struct job {
        std::shared_ptr<tokmgr::detail::owned_request> request;
        std::function<void(std::error_code, tokmgr::http_response)> done;
    };
    struct state {
        asio::any_io_executor executor;
        std::shared_ptr<parking_lot> lot;
        std::vector<std::shared_ptr<tokmgr::asio_transport>> idle;
        std::deque<job> queue;
    };

    static void pump(const std::shared_ptr<state>& s) {
        while (!s->idle.empty() && !s->queue.empty()) {
            auto connection = s->idle.back();
            s->idle.pop_back();
            job next = std::move(s->queue.front());
            s->queue.pop_front();
            connection->async_send(next.request->view(),
                                   [s, connection, next](std::error_code ec, tokmgr::http_response response) {
                                       next.done(ec, std::move(response));
                                       s->idle.push_back(connection);
                                       pump(s);
                                   });
        }
    }

    std::shared_ptr<state> state_;
};

/// The manager's first JWT, through async_get_token on `io`.
template <class Manager>
std::string first_jwt(asio::io_context& io, Manager& manager) {
    std::string jwt;
    manager.async_get_token([&](std::error_code, tokmgr::token_handle h) { jwt = std::string(h.jwt().reveal()); });
    io.restart();
    io.run();
    return jwt;
}

struct crowd_tally {
    std::atomic<int> ok{0}, refused{0}, replayed{0}, failed{0};
};

/// What every crowd case asks for: each request refused once with the old
/// JWT, sent once more with the new one, one forced refresh between them all
/// and no refresh token reused. `Stats`: the reference server's or the fake's.
template <class Stats>
void check_one_refresh_for_the_crowd(const crowd_tally& tally, int crowd, int invalidations,
                                     const tokmgr::manager_counters& counters, const Stats& stats) {
    CHECK(tally.ok == crowd);
    CHECK(tally.failed == 0);
    CHECK(tally.refused == crowd);
    CHECK(tally.replayed == crowd);
    CHECK(invalidations == 1);
    CHECK(counters.logins == 1);
    CHECK(counters.refreshes == 1);
    CHECK(stats.refreshes == 1);
    CHECK(stats.refresh_tokens_reused == 0);
    CHECK(stats.revoked_jwts_presented == std::uint64_t(crowd));  // the old JWT never went out again
    CHECK(stats.unauthorized == std::uint64_t(crowd));
    CHECK(stats.resources_served == std::uint64_t(crowd));
}

/// Spawns `crowd` coroutines on `io`, each sending one GET through its own
/// authorizing transport built by `make_api`, and runs them to the end.
template <class MakeApi>
void run_crowd(asio::io_context& io, int crowd, MakeApi make_api, crowd_tally& tally) {
    for (int i = 0; i < crowd; ++i) {
        asio::co_spawn(
            io,
            [&, i]() -> asio::awaitable<void> {
                auto api = make_api();
                std::error_code ec;
                const std::string target = "/api/items/" + std::to_string(i);
                tokmgr::http_response response =
                    co_await api.async_send(api_get(target), asio::redirect_error(asio::use_awaitable, ec));
                if (!ec && response.status == 200) ++tally.ok;
                else ++tally.failed;
                tally.refused += static_cast<int>(api.counters().refused);
                tally.replayed += static_cast<int>(api.counters().replayed);
            },
            asio::detached);
    }
    io.restart();
    io.run();
}

}  // namespace

TEST_CASE("authorizing_transport, 64 threads against the reference server: one JWT revoked, one forced refresh, "
          "every request replayed once") {
    fixture f;
    tokmgr::manager_options options;
    options.assumed_lifetimes = tokmgr::lifetimes{};
    std::atomic<int> invalidations{0};
    options.on_event = [&](const tokmgr::event& e) { invalidations += e.kind == tokmgr::event_kind::invalidated; };
    tokmgr::token_manager<> manager(tokmgr::asio_transport(f.transport_options),
                                    tokmgr::credentials{"svc", tokmgr::secret("async-password")}, options);
    const std::string old_jwt(manager.get_token().reveal());
    REQUIRE(f.server->revoke_jwt(old_jwt));
    tokmgr::testing::crowd_gate gate(crowd_threads);
    crowd_tally tally;
    std::vector<std::thread> workers;
    for (int i = 0; i < crowd_threads; ++i) {
        workers.emplace_back([&, i] {
            tokmgr::authorizing_transport<gated_transport, tokmgr::token_manager<>> api(
                gated_transport(tokmgr::asio_transport(f.transport_options), gate, "Bearer " + old_jwt), manager);
            std::error_code ec;
            const std::string target = "/api/items/" + std::to_string(i);
            const auto response = api.send(api_get(target), ec);
            if (!ec && response.status == 200) ++tally.ok;
            else ++tally.failed;
            tally.refused += static_cast<int>(api.counters().refused);
            tally.replayed += static_cast<int>(api.counters().replayed);
        });
    }
    for (auto& w : workers) w.join();
    check_one_refresh_for_the_crowd(tally, crowd_threads, invalidations, manager.counters(), f.server->stats());
}

TEST_CASE("authorizing_transport, 10,000 coroutines against the reference server: one forced refresh, each "
          "request replayed once") {
    fixture f;
    std::atomic<int> invalidations{0};
    tokmgr::manager_options options;
    options.on_event = [&](const tokmgr::event& e) { invalidations += e.kind == tokmgr::event_kind::invalidated; };
    auto manager = f.make(options);
    const std::string old_jwt = first_jwt(f.io, *manager);
    REQUIRE_FALSE(old_jwt.empty());
    REQUIRE(f.server->revoke_jwt(old_jwt));
    auto lot = std::make_shared<parking_lot>("Bearer " + old_jwt, crowd_coroutines);
    pooled_transport pool(f.io.get_executor(), f.transport_options, 32, lot);
    crowd_tally tally;
    run_crowd(f.io, crowd_coroutines,
              [&] { return tokmgr::authorizing_transport<pooled_transport, tokmgr::token_manager<>>(pool, *manager); },
              tally);
    check_one_refresh_for_the_crowd(tally, crowd_coroutines, invalidations, manager->counters(), f.server->stats());
}

TEST_CASE("authorizing_transport, 10,000 coroutines on the fake transport: one forced refresh, each request "
          "replayed once") {
    using fake_manager = tokmgr::token_manager<async_fake_transport, tokmgr::testing::manual_clock,
                                               tokmgr::memory_storage, tokmgr::simdjson_json>;
    asio::io_context io(1);
    tokmgr::testing::manual_clock clock;
    tokmgr::testing::fake_auth_server server(clock);
    tokmgr::manager_options options;
    options.assumed_lifetimes = tokmgr::lifetimes{};
    std::atomic<int> invalidations{0};
    options.on_event = [&](const tokmgr::event& e) { invalidations += e.kind == tokmgr::event_kind::invalidated; };
    fake_manager manager(async_fake_transport(io.get_executor(), tokmgr::testing::fake_transport(server)),
                         tokmgr::credentials{"user@example.com", tokmgr::secret("correct horse battery staple")},
                         options, clock);
    const std::string old_jwt = first_jwt(io, manager);
    REQUIRE_FALSE(old_jwt.empty());
    server.revoke_jwt(old_jwt);
    auto lot = std::make_shared<parking_lot>("Bearer " + old_jwt, crowd_coroutines);
    tokmgr::testing::fake_transport resources(server);
    async_fake_transport api_side(io.get_executor(), resources, lot);
    crowd_tally tally;
    run_crowd(io, crowd_coroutines,
              [&] { return tokmgr::authorizing_transport<async_fake_transport, fake_manager>(api_side, manager); },
              tally);
    check_one_refresh_for_the_crowd(tally, crowd_coroutines, invalidations, manager.counters(), server.stats());
    CHECK(resources.calls() == 2 * crowd_coroutines);
}

TEST_CASE("authorizing_transport::async_send: a single-use body is not replayed, its 401 still retires the JWT, "
          "and a failure is reported without the header") {
    fixture f;
    auto manager = f.make();
    REQUIRE(f.server->revoke_jwt(first_jwt(f.io, *manager)));
    using api_type = tokmgr::authorizing_transport<tokmgr::asio_transport, tokmgr::token_manager<>>;
    api_type api(tokmgr::asio_transport(f.io.get_executor(), f.transport_options), *manager);
    std::error_code ec;
    tokmgr::http_response response;
    const auto send_and_run = [&](api_type& through, auto request) {
        through.async_send(request, [&](std::error_code e, tokmgr::http_response r) {
            ec = e;
            response = std::move(r);
        });
        f.io.restart();
        f.io.run();
    };
    const std::string body = R"({"name":"once"})";
    tokmgr::http_request upload;
    upload.method = "POST";
    upload.target = "/api/files";
    upload.body = body;
    send_and_run(api, tokmgr::single_use(upload));
    CHECK_FALSE(ec);
    CHECK(response.status == 401);
    CHECK(tokmgr::find_header(response.headers, "WWW-Authenticate") == std::string_view("Bearer"));
    CHECK(api.counters().replayed == 0);
    CHECK(f.server->stats().revoked_jwts_presented == 1);

    // The next request takes the JWT the 401 retired and forces the refresh.
    send_and_run(api, api_get("/api/items/1"));
    CHECK_FALSE(ec);
    CHECK(response.status == 200);
    CHECK(f.server->stats().refreshes == 1);

    // Nothing listening: the error names the request, never the header.
    auto nowhere = f.transport_options;
    nowhere.base_url = "http://127.0.0.1:1";
    api_type dead(tokmgr::asio_transport(f.io.get_executor(), nowhere), *manager);
    send_and_run(dead, api_get("/api/items/2"));
    CHECK(ec);
    CHECK(dead.last_error().detail.find("/api/items/2") != std::string::npos);
    CHECK(dead.last_error().message().find("Bearer") == std::string::npos);
    CHECK(dead.counters().replayed == 0);
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

/// An asynchronous transport over the fake auth server: the answer is posted
/// to the io_context, and the io_context can be stopped right after the
/// first answer, before the waiters' completions run.
class posting_transport {
public:
    posting_transport(asio::io_context& io, tokmgr::testing::fake_transport inner, std::shared_ptr<std::atomic<int>> stops)
        : io_(&io), inner_(std::move(inner)), stops_(std::move(stops)) {}

    asio::any_io_executor get_executor() const noexcept { return io_->get_executor(); }
    bool runs_on_executor() const noexcept { return true; }
    void close() noexcept {}

    template <class Handler>
    void async_send(const tokmgr::http_request& request, Handler&& handler) {
        std::error_code ec;
        tokmgr::http_response response = inner_.send(request, ec);
        asio::post(*io_, [io = io_, stops = stops_, ec, response = std::move(response),
                          h = std::forward<Handler>(handler)]() mutable {
            std::move(h)(ec, std::move(response));
            if (stops->load() > 0) {
                stops->fetch_sub(1);
                io->stop();
            }
        });
    }

private:
    asio::io_context* io_;
    tokmgr::testing::fake_transport inner_;
    std::shared_ptr<std::atomic<int>> stops_;
};

using posting_manager = tokmgr::token_manager<posting_transport, tokmgr::testing::manual_clock,
                                              tokmgr::memory_storage, tokmgr::simdjson_json>;

struct posting_fixture {
    asio::io_context io{1};
    tokmgr::testing::manual_clock clock;
    tokmgr::testing::fake_auth_server server{clock};
    std::shared_ptr<std::atomic<int>> stops = std::make_shared<std::atomic<int>>(0);

    std::unique_ptr<posting_manager> make() {
        tokmgr::manager_options options;
        options.assumed_lifetimes = tokmgr::lifetimes{};
        options.jitter_fraction = 0;
        options.jitter_seed = 3;
        return std::make_unique<posting_manager>(
            posting_transport(io, tokmgr::testing::fake_transport(server), stops),
            tokmgr::credentials{"user@example.com", tokmgr::secret("correct horse battery staple")}, options, clock);
    }

    /// Runs until nothing is left, whatever a handler throws.
    void run() {
        io.restart();
        for (;;) {
            try {
                io.run();
                return;
            } catch (const std::bad_alloc&) {
            }
        }
    }
};

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

namespace {

/// shared_storage whose every call takes `stall` first (a Redis behind a
/// congested link, a file store's fsync on a busy disk), set after the
/// manager's constructor read it.
class stalling_storage {
public:
    using lease = tokmgr::testing::shared_storage::lease;
    stalling_storage(tokmgr::testing::shared_storage inner, std::shared_ptr<std::atomic<int>> stall_ms)
        : inner_(std::move(inner)), stall_ms_(std::move(stall_ms)) {}

    std::optional<tokmgr::token_set> load(std::error_code& ec) { return pause(), inner_.load(ec); }
    void store(const tokmgr::token_set& set, std::error_code& ec) { pause(), inner_.store(set, ec); }
    lease lock(std::chrono::milliseconds wait, std::error_code& ec) { return pause(), inner_.lock(wait, ec); }
    bool holds(const lease& held, std::error_code& ec) { return pause(), inner_.holds(held, ec); }
    bool store_if(const tokmgr::token_set& set, std::uint64_t expected, std::error_code& ec) {
        return pause(), inner_.store_if(set, expected, ec);
    }

protected:
    void pause() const { std::this_thread::sleep_for(std::chrono::milliseconds(stall_ms_->load())); }
    tokmgr::testing::shared_storage inner_;
    std::shared_ptr<std::atomic<int>> stall_ms_;
};

/// The same, with the Storage concept's asynchronous form: each call
/// completes on a thread of its own after the stall.
class stalling_async_storage : public stalling_storage {
public:
    using stalling_storage::stalling_storage;

    template <class H>
    void async_load(H handler) {
        later([this, handler]() mutable {
            std::error_code ec;
            auto got = inner_.load(ec);
            handler(ec, std::move(got));
        });
    }
    template <class H>
    void async_store(const tokmgr::token_set& set, H handler) {
        later([this, set, handler]() mutable {
            std::error_code ec;
            inner_.store(set, ec);
            handler(ec);
        });
    }
    template <class H>
    void async_lock(std::chrono::milliseconds wait, H handler) {
        later([this, wait, handler]() mutable {
            std::error_code ec;
            lease taken = inner_.lock(wait, ec);
            handler(ec, std::move(taken));
        });
    }
    template <class H>
    void async_holds(const lease& held, H handler) {
        std::error_code ec;
        const bool still = inner_.holds(held, ec);  // answered later, as a server would
        later([ec, still, handler]() mutable { handler(ec, still); });
    }
    template <class H>
    void async_store_if(const tokmgr::token_set& set, std::uint64_t expected, H handler) {
        later([this, set, expected, handler]() mutable {
            std::error_code ec;
            const bool written = inner_.store_if(set, expected, ec);
            handler(ec, written);
        });
    }
    template <class H>
    void async_release(lease held, H handler) {
        auto kept = std::make_shared<lease>(std::move(held));
        later([kept, handler]() mutable {
            kept.reset();
            handler(std::error_code());
        });
    }
    ~stalling_async_storage() {
        if (!threads_) return;  // moved from
        // The manager may go with the last handler, on one of these threads.
        for (auto& t : *threads_) {
            if (!t.joinable()) continue;
            if (t.get_id() == std::this_thread::get_id()) t.detach();
            else t.join();
        }
    }
    stalling_async_storage(stalling_async_storage&&) = default;

private:
    template <class F>
    void later(F work) {
        const int ms = stall_ms_->load();
        threads_->emplace_back([ms, work]() mutable {
            std::this_thread::sleep_for(std::chrono::milliseconds(ms));
            work();
        });
    }
    std::shared_ptr<std::vector<std::thread>> threads_ = std::make_shared<std::vector<std::thread>>();
};

/// 100 async_get_token callers and a 10 ms ticker on one io thread, through
/// a login and a refresh on a store that stalls 250 ms per call: the largest
/// gap between ticks, which must stay small, and every caller answered.
template <class Store>
void stalling_store_scenario() {
    fixture f(0ms, 4s);
    tokmgr::testing::shared_storage shared;
    auto stall = std::make_shared<std::atomic<int>>(0);
    tokmgr::manager_options options;
    options.assumed_lifetimes = tokmgr::lifetimes{};
    tokmgr::token_manager<tokmgr::asio_transport, tokmgr::steady_clock, Store, tokmgr::simdjson_json> manager(
        tokmgr::asio_transport(f.io.get_executor(), f.transport_options),
        tokmgr::credentials{"svc", tokmgr::secret("async-password")}, options, {}, Store(shared, stall));
    stall->store(250);
    for (int phase = 0; phase < 2; ++phase) {
        CAPTURE(phase);
        int answered = 0, failed = 0;
        constexpr int callers = 100;
        for (int i = 0; i < callers; ++i)
            manager.async_get_token([&](std::error_code ec, tokmgr::token_handle h) {
                ++answered;
                failed += ec || !h;
            });
        const auto widest = test::widest_gap_while(f.io, [&] { return answered == callers; });
        CHECK(answered == callers);
        CHECK(failed == 0);
        // The store's 250 ms stalls never show on the io thread.
        CHECK(widest < test::io_gap_bound);
        if (phase == 0) std::this_thread::sleep_for(3500ms);  // past the 4-second JWT's soft threshold
    }
    stall->store(0);
    f.io.restart();
    f.io.run_for(500ms);  // the last lease release
    CHECK(f.server->stats().logins == 1);
    CHECK(f.server->stats().refreshes >= 1);
    CHECK(f.server->stats().refresh_tokens_reused == 0);
}

}  // namespace

TEST_CASE("an asynchronous manager on a blocking store that stalls: the io thread never waits for it") {
    stalling_store_scenario<stalling_storage>();
}

TEST_CASE("an asynchronous manager on an asynchronous store that stalls: its calls complete later, the io thread "
          "never waits") {
    static_assert(tokmgr::is_async_storage_v<stalling_async_storage>);
    stalling_store_scenario<stalling_async_storage>();
}

// ---- fault injection by count through the asynchronous driver ---------------

TEST_CASE("asynchronous driver: the n-th load or store failing, or the lease lost, for every n, across two managers "
          "on one store: every await answered once, no refresh token sent twice") {
    using shared_posting_manager = tokmgr::token_manager<posting_transport, tokmgr::testing::manual_clock,
                                                         tokmgr::testing::shared_storage, tokmgr::simdjson_json>;
    for (int kind = 0; kind < 3; ++kind) {
        for (std::size_t n = 1; n <= 16; ++n) {
            CAPTURE(kind);
            CAPTURE(n);
            posting_fixture f;
            tokmgr::testing::shared_storage store;
            if (kind == 0) store.fail_load(n);
            if (kind == 1) store.fail_store(n);
            if (kind == 2) store.lose_lease_at_store(n);
            tokmgr::manager_options options;
            options.assumed_lifetimes = tokmgr::lifetimes{};
            options.jitter_fraction = 0;
            options.lease_wait = 2s;  // the other manager's lease goes back on its storage thread
            auto make = [&] {
                return std::make_unique<shared_posting_manager>(
                    posting_transport(f.io, tokmgr::testing::fake_transport(f.server), f.stops),
                    tokmgr::credentials{"user@example.com", tokmgr::secret("correct horse battery staple")}, options,
                    f.clock, store);
            };
            auto a = make();
            auto b = make();
            int asked = 0, answered = 0;
            auto ask = [&](shared_posting_manager& m) {
                ++asked;
                m.async_get_token([&](std::error_code, tokmgr::token_handle) { ++answered; });
            };
            auto settle = [&] {
                // The blocking store runs on each manager's own thread: run
                // the io_context until every await is answered.
                const auto limit = std::chrono::steady_clock::now() + 10s;
                while (answered < asked && std::chrono::steady_clock::now() < limit) {
                    f.io.restart();
                    f.io.run_for(2ms);
                }
                f.io.restart();
                f.io.run_for(5ms);  // the lease releases
                CHECK(answered == asked);
            };
            for (int round = 0; round < 4; ++round) {
                ask(*a);
                ask(*b);
                settle();
                f.clock.advance(tokmgr::schedule_for(30min, options, 0).soft + 1s);
                if (round == 2) store.replace(std::nullopt);  // and the store loses its data
            }
            f.clock.advance(2h);  // past every backoff: both get a JWT again
            for (auto* m : {a.get(), b.get()}) {
                std::error_code got = make_error_code(tokmgr::errc::policy_error);
                ++asked;
                m->async_get_token([&](std::error_code ec, tokmgr::token_handle) {
                    ++answered;
                    got = ec;
                });
                settle();
                if (got) {  // a flight left over from the last round may have held the lease: once more
                    f.clock.advance(1min);  // past the backoff that failure started
                    ++asked;
                    m->async_get_token([&](std::error_code ec, tokmgr::token_handle) {
                        ++answered;
                        got = ec;
                    });
                    settle();
                }
                CHECK_FALSE(got);
            }
            CHECK(f.server.stats().refresh_tokens_reused == 0);
            CHECK(f.server.stats().families_revoked == 0);
        }
    }
}

TEST_CASE("an asynchronous manager on file_storage whose lease another process holds: the io thread never waits") {
    fixture f;
    char pattern[] = "/tmp/tokmgr-e2e-XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);
    const std::string dir = pattern, path = dir + "/token.json";
    tokmgr::manager_options options;
    options.assumed_lifetimes = tokmgr::lifetimes{};
    tokmgr::token_manager<tokmgr::asio_transport, tokmgr::steady_clock, tokmgr::file_storage, tokmgr::simdjson_json>
        manager(tokmgr::asio_transport(f.io.get_executor(), f.transport_options),
                tokmgr::credentials{"svc", tokmgr::secret("async-password")}, options, {}, tokmgr::file_storage(path));
    tokmgr::file_storage other(path);  // another process's store on the same file
    std::error_code ec;
    auto held = std::make_unique<decltype(other.lock(0ms, ec))>(other.lock(0ms, ec));
    REQUIRE_FALSE(ec);
    std::thread let_go([&] {
        std::this_thread::sleep_for(600ms);
        held.reset();
    });
    bool got = false;
    manager.async_get_token([&](std::error_code e, tokmgr::token_handle h) { got = !e && h; });
    const auto widest = test::widest_gap_while(f.io, [&] { return got; }, 10s);
    let_go.join();
    CHECK(got);
    CHECK(widest < test::io_gap_bound);
    CHECK(f.server->stats().logins == 1);
    f.io.restart();
    f.io.run_for(100ms);
    std::filesystem::remove_all(dir);
}
