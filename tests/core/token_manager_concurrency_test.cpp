// Single flight under a crowd, and invalidate racing with refreshes.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

/// Releases every thread at once, so they all find the same due refresh.
class start_gate {
public:
    void wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [this] { return open_; });
    }
    void open() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            open_ = true;
        }
        cv_.notify_all();
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool open_ = false;
};

struct crowd_result {
    std::vector<std::string> tokens;
    std::vector<std::error_code> errors;
};

crowd_result run_crowd(test::manager& manager, int threads) {
    crowd_result result;
    result.tokens.resize(threads);
    result.errors.resize(threads);
    start_gate gate;
    std::vector<std::thread> crowd;
    for (int i = 0; i < threads; ++i) {
        crowd.emplace_back([&, i] {
            gate.wait();
            std::error_code ec;
            result.tokens[i] = std::string(manager.get_token(ec).reveal());
            result.errors[i] = ec;
        });
    }
    gate.open();
    for (auto& t : crowd) t.join();
    return result;
}

}  // namespace

TEST_CASE("64 threads at an expired JWT: one refresh request, every waiter gets the same JWT") {
    test::harness h;
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    h.clock.advance(30min);  // past the hard threshold: everyone must wait
    h.transport.set_delay(50ms);
    const auto result = run_crowd(*manager, 64);
    CHECK(h.transport.calls() == 2);
    const std::set<std::string> distinct(result.tokens.begin(), result.tokens.end());
    CHECK(distinct.size() == 1);
    CHECK(*distinct.begin() != first);
    for (const auto& ec : result.errors) CHECK_FALSE(ec);
    CHECK(manager->counters().joined >= 1);
    CHECK(manager->counters().joined <= 63);
}

TEST_CASE("64 threads at an expired JWT with a failing server: one request, every waiter gets the same error") {
    test::harness h;
    auto manager = h.make();
    manager->get_token();
    h.clock.advance(30min);
    h.transport.set_delay(50ms);
    h.transport.set_handler([](const tokmgr::http_request&) { return test::status(503); });
    const auto result = run_crowd(*manager, 64);
    CHECK(h.transport.calls() == 2);
    for (int i = 0; i < 64; ++i) {
        CHECK(result.errors[i] == tokmgr::errc::service_unavailable);
        CHECK(result.tokens[i].empty());
    }
}

TEST_CASE("64 threads past the soft threshold: one refresh, nobody else waits for it") {
    test::harness h;
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft);
    // The refresh is held until the 63 other callers have returned: if any of
    // them waited for it, they would never return and the gate would time out.
    std::atomic<int> returned{0};
    std::atomic<bool> others_returned_first{false};
    h.transport.set_handler([&](const tokmgr::http_request& r) {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (returned.load() < 63 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
        others_returned_first = returned.load() == 63;
        return h.server(r);
    });
    std::vector<std::string> tokens(64);
    std::vector<std::thread> crowd;
    start_gate gate;
    for (int i = 0; i < 64; ++i) {
        crowd.emplace_back([&, i] {
            gate.wait();
            tokens[i] = std::string(manager->get_token().reveal());
            if (tokens[i] == first) ++returned;
        });
    }
    gate.open();
    for (auto& t : crowd) t.join();
    CHECK(others_returned_first);
    CHECK(h.transport.calls() == 2);
    CHECK(manager->counters().joined == 0);
    CHECK(std::count(tokens.begin(), tokens.end(), first) == 63);  // served the current JWT at once
    CHECK(std::count_if(tokens.begin(), tokens.end(), [&](const std::string& t) { return !t.empty() && t != first; }) == 1);
}

TEST_CASE("with an executor, the caller that finds a refresh due does not run it") {
    test::harness h;
    std::vector<std::function<void()>> queued;
    h.options.executor = [&](std::function<void()> task) { queued.push_back(std::move(task)); };
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft);
    CHECK(manager->get_token().reveal() == first);
    CHECK(manager->get_token().reveal() == first);
    CHECK(h.transport.calls() == 1);
    REQUIRE(queued.size() == 1);  // handed over once, not once per caller
    queued.front()();
    CHECK(h.transport.calls() == 2);
    CHECK(manager->get_token().reveal() != first);
}

TEST_CASE("invalidate(current) makes the next caller start one refresh; invalidate(old) does nothing") {
    test::harness h;
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    manager->invalidate(tokmgr::secret_view(first));
    const std::string second(manager->get_token().reveal());
    CHECK(second != first);
    CHECK(h.sent("/api/auth/token_refresh") == 1);
    manager->invalidate(tokmgr::secret_view(first));  // a late 401 for the replaced JWT
    CHECK(manager->get_token().reveal() == second);
    CHECK(h.sent("/api/auth/token_refresh") == 1);
}

TEST_CASE("invalidate racing with a refresh in flight: no second refresh, no reuse") {
    test::harness h;
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    h.clock.advance(30min);
    h.transport.set_delay(100ms);
    std::thread refresher([&] { manager->get_token(); });
    std::this_thread::sleep_for(30ms);  // the refresh is in flight
    manager->invalidate(tokmgr::secret_view(first));
    std::string after;
    std::thread late([&] { after = std::string(manager->get_token().reveal()); });
    refresher.join();
    late.join();
    CHECK(after != first);
    CHECK(h.sent("/api/auth/token_refresh") == 1);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("threads hammering get_token and invalidate while time passes never break the chain") {
    test::harness h(5min, 10000min);
    auto manager = h.make();
    std::atomic<bool> stop{false};
    std::vector<std::thread> workers;
    for (int w = 0; w < 8; ++w) {
        workers.emplace_back([&, w] {
            for (int i = 0; i < 1'000'000 && !stop; ++i) {  // until the clock has run: bounded all the same
                std::error_code ec;
                const std::string jwt(manager->get_token(ec).reveal());
                if (!ec && (i + w) % 97 == 0) manager->invalidate(tokmgr::secret_view(jwt));
            }
        });
    }
    for (int i = 0; i < 200; ++i) {
        h.clock.advance(7s);
        std::this_thread::sleep_for(1ms);  // let the workers run between steps
    }
    stop = true;
    for (auto& t : workers) t.join();
    const auto stats = h.server.stats();
    CHECK(stats.logins == 1);
    CHECK(stats.refresh_tokens_reused == 0);
    CHECK(stats.refreshes_rejected == 0);
}

TEST_CASE("get_token_handle keeps its JWT alive across later calls and other threads") {
    test::harness h;
    auto manager = h.make();
    const tokmgr::token_handle handle = manager->get_token_handle();
    const std::string first(handle.jwt().reveal());
    manager->invalidate(handle.jwt());
    manager->get_token();  // replaces this thread's cached snapshot
    std::string seen;
    std::thread([&] { seen = std::string(handle.jwt().reveal()); }).join();
    CHECK(seen == first);
    CHECK(handle.generation() == 1);
    CHECK(std::string(handle.authorization().reveal()) == "Bearer " + first);
}

TEST_CASE("an executor that refuses the refresh leaves the caller to run it, not a flight pending forever") {
    test::harness h;
    h.options.executor = [](std::function<void()>) { throw std::runtime_error("queue full"); };
    auto manager = h.make();
    const std::string first(manager->get_token().reveal());
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft);
    CHECK(manager->get_token().reveal() != first);
    h.clock.advance(30min);  // hard-expired: a pending flight would hang here
    CHECK_FALSE(manager->get_token().empty());
}
