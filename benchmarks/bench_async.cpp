// bench_async.cpp — async_get_token against the synchronous get_token, and a
// crowd of coroutines on one thread waiting for one refresh.
//
// Families:
//   async/fast_path_awaitable   one co_await async_get_token(use_awaitable) on a
//                               fresh JWT, in a coroutine loop on one thread
//   async/fast_path_sync        get_token() on the same manager, same run
//   async/crowd/<N>             N coroutines on one io_context thread, released
//                               together past the JWT's hard threshold, wait
//                               for one refresh the transport answers after
//                               1 ms (an Asio timer: the thread is never parked).
//     Time                      mean, over rounds, from the transport's answer
//                               until the last coroutine has resumed with its JWT
//     last_p50_us / last_max_us the same, median and worst round
//     cpu_p50_us                the io thread's CPU time over the same span,
//                               median round: what a loaded machine (other
//                               processes preempting the thread) cannot inflate
//     requests_per_refresh      transport calls per round: must be 1
//     failures                  coroutines that got an error or no JWT
//   async/baseline_timer_cancel/<N>
//                               the bare cost of resuming N coroutines on one
//                               thread, nothing of tokmgr: N coroutines await
//                               one steady_timer, cancelled at once; time
//                               from the cancel until the last has resumed
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include <time.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <tokmgr/async.hpp>
#include <tokmgr/json/simdjson.hpp>
#include <tokmgr/storage/memory.hpp>
#include <tokmgr/testing/manual_clock.hpp>
#include <tokmgr/transport/detail/asio_executor_ops.hpp>

#include "bench_common.hpp"

namespace {

/// CPU time of the calling thread.
std::int64_t thread_cpu_ns() noexcept {
    timespec now{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return static_cast<std::int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
}
std::int64_t answer_cpu_ns = 0;  // the io thread's, when the transport answered

/// An asynchronous Transport: answers like counting_transport, after a delay
/// kept by an Asio timer on its executor.
class timer_transport {
public:
    timer_transport(asio::any_io_executor executor, tokmgr_bench::counting_transport::state& state)
        : executor_(std::move(executor)), state_(&state) {}

    asio::any_io_executor get_executor() const noexcept { return executor_; }
    bool runs_on_executor() const noexcept { return true; }
    void close() noexcept {}

    template <class Handler>
    void async_send(const tokmgr::http_request& request, Handler&& handler) {
        auto timer = std::make_shared<asio::steady_timer>(executor_, state_->delay);
        timer->async_wait([this, timer, request, h = std::forward<Handler>(handler)](std::error_code) mutable {
            std::error_code ec;
            auto delay = state_->delay;
            state_->delay = std::chrono::microseconds(0);  // the timer kept it
            tokmgr::http_response response = tokmgr_bench::counting_transport(*state_).send(request, ec);
            state_->delay = delay;
            answer_cpu_ns = thread_cpu_ns();
            std::move(h)(ec, std::move(response));
        });
    }

private:
    asio::any_io_executor executor_;
    tokmgr_bench::counting_transport::state* state_;
};

using async_manager = tokmgr::token_manager<timer_transport, tokmgr::testing::manual_clock, tokmgr::memory_storage,
                                            tokmgr::simdjson_json>;

tokmgr::manager_options bench_options() {
    tokmgr::manager_options options;
    options.assumed_lifetimes = tokmgr::lifetimes{};
    options.jitter_fraction = 0;
    options.jitter_seed = 7;
    return options;
}

/// One io_context, an asynchronous manager on it, the first login done
/// (untimed). A synchronous get_token there would wait for a flight that
/// only io.run() can carry, so the login is awaited.
struct setup {
    asio::io_context io{1};
    tokmgr_bench::counting_transport::state transport_state;
    tokmgr::testing::manual_clock clock;
    async_manager manager{timer_transport(io.get_executor(), transport_state), {"svc", tokmgr::secret("pw")},
                          bench_options(), clock};

    explicit setup(std::chrono::microseconds delay = std::chrono::microseconds(0)) {
        transport_state.delay = delay;
        manager.async_get_token([](std::error_code, tokmgr::token_handle) {});
        io.run();
        io.restart();
    }
};

void fast_path_awaitable(benchmark::State& state) {
    setup s;
    asio::co_spawn(
        s.io,
        [&]() -> asio::awaitable<void> {
            for (auto _ : state) {
                tokmgr::token_handle h = co_await s.manager.async_get_token(asio::use_awaitable);
                benchmark::DoNotOptimize(h);
            }
        },
        asio::detached);
    s.io.run();
}

void fast_path_sync(benchmark::State& state) {
    setup s;
    for (auto _ : state) benchmark::DoNotOptimize(s.manager.get_token());
}

void crowd(benchmark::State& state) {
    const int size = static_cast<int>(state.range(0));
    setup s(std::chrono::milliseconds(1));
    auto& [io, transport_state, clock, manager] = s;
    std::vector<double> last_us, cpu_us;
    std::uint64_t failures = 0;
    const auto calls_before = transport_state.calls.load();
    for (auto _ : state) {
        clock.advance(std::chrono::minutes(31));  // past the hard threshold: everybody waits
        io.restart();
        std::int64_t last_resumed = 0, last_resumed_cpu = 0;
        for (int i = 0; i < size; ++i) {
            asio::co_spawn(
                io,
                [&]() -> asio::awaitable<void> {
                    tokmgr::token_handle h;
                    try {
                        h = co_await manager.async_get_token(asio::use_awaitable);
                    } catch (const std::system_error&) {
                    }
                    if (!h) ++failures;
                    last_resumed = std::max(last_resumed, tokmgr_bench::counting_transport::now_ns());
                    last_resumed_cpu = std::max(last_resumed_cpu, thread_cpu_ns());
                },
                asio::detached);
        }
        io.run();
        const double us = static_cast<double>(last_resumed - transport_state.last_answer_ns.load()) / 1000.0;
        last_us.push_back(us);
        cpu_us.push_back(static_cast<double>(last_resumed_cpu - answer_cpu_ns) / 1000.0);
        state.SetIterationTime(us / 1e6);
    }
    std::sort(last_us.begin(), last_us.end());
    const auto rounds = static_cast<double>(last_us.size());
    state.counters["requests_per_refresh"] =
        static_cast<double>(transport_state.calls.load() - calls_before) / rounds;
    state.counters["last_p50_us"] = last_us[last_us.size() / 2];
    state.counters["last_max_us"] = last_us.back();
    std::sort(cpu_us.begin(), cpu_us.end());
    state.counters["cpu_p50_us"] = cpu_us[cpu_us.size() / 2];
    state.counters["failures"] = static_cast<double>(failures);
}

void baseline_timer_cancel(benchmark::State& state) {
    const int size = static_cast<int>(state.range(0));
    asio::io_context io{1};
    std::vector<double> last_us, cpu_us;
    for (auto _ : state) {
        io.restart();
        asio::steady_timer timer(io, std::chrono::hours(1));
        std::int64_t cancelled_at = 0, last_resumed = 0, cancelled_cpu = 0, last_resumed_cpu = 0;
        for (int i = 0; i < size; ++i) {
            asio::co_spawn(
                io,
                [&]() -> asio::awaitable<void> {
                    std::error_code ec;
                    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                    last_resumed = std::max(last_resumed, tokmgr_bench::counting_transport::now_ns());
                    last_resumed_cpu = std::max(last_resumed_cpu, thread_cpu_ns());
                },
                asio::detached);
        }
        // Queued behind every coroutine's start: all of them are waiting by then.
        asio::post(io, [&] {
            cancelled_at = tokmgr_bench::counting_transport::now_ns();
            cancelled_cpu = thread_cpu_ns();
            timer.cancel();
        });
        io.run();
        const double us = static_cast<double>(last_resumed - cancelled_at) / 1000.0;
        last_us.push_back(us);
        cpu_us.push_back(static_cast<double>(last_resumed_cpu - cancelled_cpu) / 1000.0);
        state.SetIterationTime(us / 1e6);
    }
    std::sort(last_us.begin(), last_us.end());
    state.counters["last_p50_us"] = last_us[last_us.size() / 2];
    state.counters["last_max_us"] = last_us.back();
    std::sort(cpu_us.begin(), cpu_us.end());
    state.counters["cpu_p50_us"] = cpu_us[cpu_us.size() / 2];
}

void register_families() {
    benchmark::RegisterBenchmark("async/fast_path_awaitable", fast_path_awaitable);
    benchmark::RegisterBenchmark("async/fast_path_sync", fast_path_sync);
    for (int size : {1, 100, 10000})
        benchmark::RegisterBenchmark("async/crowd", crowd)
            ->Arg(size)
            ->UseManualTime()
            ->Iterations(size >= 10000 ? 20 : 100)
            ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("async/baseline_timer_cancel", baseline_timer_cancel)
        ->Arg(10000)
        ->UseManualTime()
        ->Iterations(20)
        ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) { return tokmgr_bench::run_benchmarks(argc, argv, register_families); }
