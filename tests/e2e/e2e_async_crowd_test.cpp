// async_get_token end to end, part 2: authorizing_transport with a crowd of
// 401s for one JWT (64 threads, 10,000 coroutines) on the reference server
// and on the fake transport, and a single-use body. Part of e2e_async_test.
#include "e2e_async_support.hpp"

namespace {

constexpr int crowd_threads = 64;
constexpr int crowd_coroutines = 10'000;

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
                    co_await api.async_send(tokmgr::testing::get_request(target), asio::redirect_error(asio::use_awaitable, ec));
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
            const auto response = api.send(tokmgr::testing::get_request(target), ec);
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
    send_and_run(api, tokmgr::testing::get_request("/api/items/1"));
    CHECK_FALSE(ec);
    CHECK(response.status == 200);
    CHECK(f.server->stats().refreshes == 1);

    // Nothing listening: the error names the request, never the header.
    auto nowhere = f.transport_options;
    nowhere.base_url = "http://127.0.0.1:1";
    api_type dead(tokmgr::asio_transport(f.io.get_executor(), nowhere), *manager);
    send_and_run(dead, tokmgr::testing::get_request("/api/items/2"));
    CHECK(ec);
    CHECK(dead.last_error().detail.find("/api/items/2") != std::string::npos);
    CHECK(dead.last_error().message().find("Bearer") == std::string::npos);
    CHECK(dead.counters().replayed == 0);
}
