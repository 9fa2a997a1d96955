// What the three files of e2e_async_test share: the reference-server fixture
// and the posting transport over the fake auth server with its fixture.
#pragma once

#include <tokmgr/tokmgr.hpp>
#include <tokmgr/server/reference_server.hpp>
#include <tokmgr/server/stats_json.hpp>
#include <tokmgr/testing/crowd_gate.hpp>
#include <tokmgr/testing/fake_auth_server.hpp>
#include <tokmgr/testing/fake_transport.hpp>
#include <tokmgr/testing/manual_clock.hpp>
#include <tokmgr/testing/shared_storage.hpp>
#include <tokmgr/storage/file.hpp>

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


}  // namespace
