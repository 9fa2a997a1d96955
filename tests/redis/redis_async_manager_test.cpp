// An asynchronous manager (asio_transport on an io_context) on the blocking
// redis_storage, with the fixture's redis-server stopped by SIGSTOP for 1.2 s
// mid-login: the store's calls wait on the manager's storage thread, never on
// the io thread, whose 10 ms ticker keeps ticking; every await is answered.
#include <doctest/doctest.h>

#include "../io_gap.hpp"
#include "redis_test_support.hpp"

#include <tokmgr/storage/redis.hpp>
#include <tokmgr/tokmgr.hpp>
#include <tokmgr/server/reference_server.hpp>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

using namespace std::chrono_literals;

using redis_test::fixture_number;

TEST_CASE("an asynchronous manager on redis_storage while redis-server is stopped (SIGSTOP): the io thread never "
          "waits, every await is answered") {
    asio::io_context io;
    tokmgr::server::server_options server_options;
    server_options.users.emplace("svc", tokmgr::secret("redis-password"));
    server_options.refresh_ttl = 600s;
    tokmgr::server::reference_server server(std::move(server_options));
    server.start();
    tokmgr::asio_transport_options transport_options;
    transport_options.base_url = server.url();
    tokmgr::redis_options store_options;
    store_options.port = fixture_number("port");
    store_options.key = "tokmgr-test:async-manager:" + std::to_string(::getpid());
    store_options.command_timeout = 5s;
    tokmgr::manager_options options;
    options.assumed_lifetimes = tokmgr::lifetimes{};
    tokmgr::token_manager<tokmgr::asio_transport, tokmgr::steady_clock, tokmgr::redis_storage, tokmgr::simdjson_json>
        manager(tokmgr::asio_transport(io.get_executor(), transport_options),
                tokmgr::credentials{"svc", tokmgr::secret("redis-password")}, options, {},
                tokmgr::redis_storage(store_options));

    const pid_t redis = fixture_number("redis.pid");
    REQUIRE(::kill(redis, SIGSTOP) == 0);
    std::thread resume([redis] {
        std::this_thread::sleep_for(1200ms);
        ::kill(redis, SIGCONT);
    });
    constexpr int callers = 50;
    int answered = 0, failed = 0;
    for (int i = 0; i < callers; ++i)
        manager.async_get_token([&](std::error_code ec, tokmgr::token_handle h) {
            ++answered;
            failed += ec || !h;
        });
    const auto start = std::chrono::steady_clock::now();
    const auto widest = test::widest_gap_while(io, [&] { return answered == callers; });
    resume.join();
    CHECK(answered == callers);
    CHECK(failed == 0);
    CHECK(std::chrono::steady_clock::now() - start >= 1100ms);  // the login waited for Redis
    CHECK(widest < test::io_gap_bound);                                        // the io thread never did
    CHECK(server.stats().logins == 1);
    io.restart();
    io.run_for(200ms);  // the lease's release
}
