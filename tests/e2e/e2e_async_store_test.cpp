// async_get_token end to end, part 3: stores that stall or fail under an
// asynchronous manager (blocking and asynchronous stores, fault injection
// by count over the asynchronous driver, file_storage's lease held by
// another process). Part of e2e_async_test.
#include "e2e_async_support.hpp"

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
