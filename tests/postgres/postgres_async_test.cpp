// postgres_async_storage (members 6–11 of the Storage concept) against the
// fixture's PostgreSQL: each member on an io_context, and a database that
// stalls (a statement behind another session's lock, a server that never
// answers) while a 10 ms ticker on the same io_context keeps ticking: the
// executor's thread is never blocked on the database.
#include <doctest/doctest.h>

#include <tokmgr/concepts.hpp>
#include <tokmgr/storage/postgres_async.hpp>

#include "postgres_test_support.hpp"

#include "../io_gap.hpp"

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <optional>
#include <string>

using namespace std::chrono_literals;
using tokmgr::errc;
using tokmgr::postgres_async_options;
using tokmgr::postgres_async_storage;
using postgres_test::postgres_port;
using postgres_test::set_of;
using postgres_test::silent_server;

static_assert(tokmgr::is_async_storage_v<postgres_async_storage>);
static_assert(tokmgr::is_coordinating_storage_v<postgres_async_storage>);

namespace {

std::string fresh_async_key() {
    static std::atomic<int> n{0};
    return "async:" + std::to_string(::getpid()) + ":" + std::to_string(++n);
}

postgres_async_options async_options(asio::io_context& io, const std::string& key, int port = postgres_port()) {
    postgres_async_options o;
    o.connection = "host=127.0.0.1 port=" + std::to_string(port) + " dbname=postgres user=postgres";  // port: maybe not the fixture's
    o.password = tokmgr::secret("fixture-password");
    o.key = key;
    o.lease_ttl = 5s;
    o.executor = io.get_executor();
    return o;
}

/// Runs `io` until `done` is set (with a 20 s safety limit), counting the
/// ticks of a 10 ms timer on the same io_context meanwhile.
int run_until(asio::io_context& io, const bool& done) {
    int ticks = 0;
    asio::steady_timer ticker(io);
    std::function<void()> tick = [&] {
        ticker.expires_after(10ms);
        ticker.async_wait([&](const std::error_code& ec) {
            if (ec || done) return;
            ++ticks;
            tick();
        });
    };
    tick();
    const auto limit = std::chrono::steady_clock::now() + 20s;
    io.restart();
    while (!done && std::chrono::steady_clock::now() < limit) io.run_for(5ms);
    ticker.cancel();
    io.run_for(1ms);
    REQUIRE(done);
    return ticks;
}

}  // namespace

TEST_CASE("async members: load, store, store_if, lock, holds, release, each completing once") {
    asio::io_context io;
    const auto key = fresh_async_key();
    postgres_async_storage store(async_options(io, key)), other(async_options(io, key));
    bool done = false;
    int calls = 0;

    std::optional<tokmgr::token_set> loaded = set_of(99);
    store.async_load([&](std::error_code ec, std::optional<tokmgr::token_set> set) {
        ++calls;
        CHECK_FALSE(ec);
        loaded = std::move(set);
        done = true;
    });
    run_until(io, done);
    CHECK_FALSE(loaded);

    done = false;
    store.async_store(set_of(1), [&](std::error_code ec) {
        ++calls;
        CHECK_FALSE(ec);
        done = true;
    });
    run_until(io, done);
    CHECK(store.load()->generation == 1);  // the blocking members see it

    done = false;
    bool wrote_stale = true, wrote = false;
    store.async_store_if(set_of(2), 0, [&](std::error_code ec, bool w) {
        CHECK_FALSE(ec);
        wrote_stale = w;
        store.async_store_if(set_of(2), 1, [&](std::error_code ec2, bool w2) {
            CHECK_FALSE(ec2);
            wrote = w2;
            done = true;
        });
    });
    run_until(io, done);
    CHECK_FALSE(wrote_stale);
    CHECK(wrote);

    done = false;
    postgres_async_storage::lease held, refused;
    std::error_code refused_ec;
    bool holding = false;
    store.async_lock(1s, [&](std::error_code ec, postgres_async_storage::lease l) {
        CHECK_FALSE(ec);
        held = std::move(l);
        other.async_lock(50ms, [&](std::error_code ec2, postgres_async_storage::lease l2) {
            refused_ec = ec2;
            refused = std::move(l2);
            store.async_holds(held, [&](std::error_code ec3, bool h) {
                CHECK_FALSE(ec3);
                holding = h;
                done = true;
            });
        });
    });
    run_until(io, done);
    REQUIRE(held);
    CHECK_FALSE(refused);
    CHECK(refused_ec == errc::lease_timeout);
    CHECK(holding);

    done = false;
    postgres_async_storage::lease after_release;
    store.async_release(std::move(held), [&](std::error_code ec) {
        CHECK_FALSE(ec);
        other.async_lock(0ms, [&](std::error_code ec2, postgres_async_storage::lease l) {
            CHECK_FALSE(ec2);
            after_release = std::move(l);
            done = true;
        });
    });
    run_until(io, done);
    CHECK(after_release);
    CHECK(calls == 2);
    after_release.release();
}

TEST_CASE("async: a statement stalled behind another session's lock does not block the executor; it ends at statement_timeout") {
    asio::io_context io;
    const auto key = fresh_async_key();
    auto options = async_options(io, key);
    options.statement_timeout = 500ms;
    postgres_async_storage store(options);
    REQUIRE(store.store_if(set_of(1), 0));
    tokmgr::detail::postgres::connection_ptr blocker(PQconnectdb(
        ("host=127.0.0.1 port=" + std::to_string(postgres_port()) + " dbname=postgres user=postgres password=fixture-password")
            .c_str()));
    REQUIRE(PQstatus(blocker.get()) == CONNECTION_OK);
    tokmgr::detail::postgres::result_ptr(PQexec(blocker.get(), "begin"));
    tokmgr::detail::postgres::result_ptr(PQexec(blocker.get(), "lock table tokmgr_token_sets in access exclusive mode"));
    bool done = false;
    std::error_code failed;
    const auto start = std::chrono::steady_clock::now();
    store.async_load([&](std::error_code ec, std::optional<tokmgr::token_set>) {
        failed = ec;
        done = true;
    });
    const int ticks = run_until(io, done);
    const auto took = std::chrono::steady_clock::now() - start;
    tokmgr::detail::postgres::result_ptr(PQexec(blocker.get(), "rollback"));
    CHECK(failed == errc::storage_failed);
    CHECK(store.last_error().detail.find("statement_timeout") != std::string::npos);
    CHECK(took >= 500ms);
    CHECK(took < 2s);
    // 10 ms ticks through the whole stall (a loaded machine may slow them, not stop them).
    CHECK(ticks >= 20);
}

TEST_CASE("async: a server that accepts and never answers does not block the executor; the connect deadline ends it") {
    asio::io_context io;
    silent_server silent;
    auto options = async_options(io, fresh_async_key(), silent.port());
    options.connect_timeout = 2s;
    postgres_async_storage store(options);
    bool done = false;
    std::error_code failed;
    store.async_lock(5s, [&](std::error_code ec, postgres_async_storage::lease l) {
        CHECK_FALSE(l);
        failed = ec;
        done = true;
    });
    const auto start = std::chrono::steady_clock::now();
    const int ticks = run_until(io, done);
    const auto took = std::chrono::steady_clock::now() - start;
    CHECK(failed == errc::storage_failed);
    CHECK(store.last_error().detail.find("connect_timeout") != std::string::npos);
    CHECK(took >= 1900ms);
    CHECK(took < 4s);
    CHECK(ticks >= 80);
}

// ---- an asynchronous manager on the database --------------------------------

#include <tokmgr/tokmgr.hpp>
#include <tokmgr/server/reference_server.hpp>

#include <thread>

TEST_CASE("an asynchronous manager on postgres_async_storage whose database stalls: the io thread never waits, "
          "every await is answered") {
    asio::io_context io;
    tokmgr::server::server_options server_options;
    server_options.users.emplace("svc", tokmgr::secret("pg-password"));
    server_options.refresh_ttl = 600s;
    tokmgr::server::reference_server server(std::move(server_options));
    server.start();
    tokmgr::asio_transport_options transport_options;
    transport_options.base_url = server.url();
    auto options = async_options(io, fresh_async_key());
    options.statement_timeout = 5s;
    tokmgr::manager_options manager_options;
    manager_options.assumed_lifetimes = tokmgr::lifetimes{};
    tokmgr::token_manager<tokmgr::asio_transport, tokmgr::steady_clock, postgres_async_storage, tokmgr::simdjson_json>
        manager(tokmgr::asio_transport(io.get_executor(), transport_options),
                tokmgr::credentials{"svc", tokmgr::secret("pg-password")}, manager_options, {},
                postgres_async_storage(options));

    // Another session holds the table for 1.5 s: every statement waits for it.
    tokmgr::detail::postgres::connection_ptr blocker(PQconnectdb(
        ("host=127.0.0.1 port=" + std::to_string(postgres_port()) + " dbname=postgres user=postgres password=fixture-password")
            .c_str()));
    REQUIRE(PQstatus(blocker.get()) == CONNECTION_OK);
    tokmgr::detail::postgres::result_ptr(PQexec(blocker.get(), "begin"));
    tokmgr::detail::postgres::result_ptr(PQexec(blocker.get(), "lock table tokmgr_token_sets in access exclusive mode"));
    std::thread release([&] {
        std::this_thread::sleep_for(1500ms);
        tokmgr::detail::postgres::result_ptr(PQexec(blocker.get(), "rollback"));
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
    release.join();
    CHECK(answered == callers);
    CHECK(failed == 0);
    CHECK(std::chrono::steady_clock::now() - start >= 1400ms);  // the login waited for the database
    CHECK(widest < test::io_gap_bound);  // the io thread never did
    CHECK(server.stats().logins == 1);
    io.restart();
    io.run_for(200ms);  // the lease's release
}
