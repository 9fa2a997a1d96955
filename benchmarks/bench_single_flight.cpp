// bench_single_flight.cpp — a crowd of threads released together at a due
// refresh, against a fake transport that takes 1 ms.
//
// Each round moves the manager's (manual) clock past the JWT's hard
// threshold, so no caller may be handed the old JWT, then releases every
// thread of the crowd at once into get_token(). The transport answers only
// after its 1 ms delay and after every other thread of the crowd has joined
// the flight, so the whole crowd is waiting for the one refresh.
//
// Reported per crowd size:
//   Time                 mean, over rounds, of the time from the transport's
//                        answer until the last thread of the crowd has its JWT
//   last_p50_us/_max_us  the same, median and worst round
//   woken_p50_us         median time from the answer until the manager had
//                        published the JWT and called notify on the waiters
//   calls_per_refresh    transport calls per round: must be 1
//   joined_per_refresh   callers that waited for the flight another started
//   failures             rounds in which a thread got an error or no JWT
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <tokmgr/json/simdjson.hpp>
#include <tokmgr/storage/memory.hpp>
#include <tokmgr/testing/manual_clock.hpp>
#include <tokmgr/token_manager.hpp>

#include "bench_common.hpp"

namespace {

using tokmgr_bench::counting_transport;
using manager_type = tokmgr::token_manager<counting_transport, tokmgr::testing::manual_clock,
                                           tokmgr::memory_storage, tokmgr::simdjson_json>;

/// N threads parked on a condition variable; each round releases all of them
/// into `work` (get_token) and records when each one had its answer. The gate
/// never spins: a thread that has its answer sleeps at once, so the threads
/// still waking up get the cores (libstdc++'s atomic wait would spin and
/// yield first, stealing them).
class crowd {
public:
    crowd(std::size_t size, std::function<bool()> work) : work_(std::move(work)), done_ns_(size), ok_(size) {
        threads_.reserve(size);
        for (std::size_t i = 0; i < size; ++i) threads_.emplace_back([this, i] { run(i); });
    }

    crowd(const crowd&) = delete;
    crowd& operator=(const crowd&) = delete;

    ~crowd() {
        {
            std::lock_guard<std::mutex> lock(gate_);
            stop_ = true;
            ++round_;
        }
        go_.notify_all();
        for (auto& t : threads_) t.join();
    }

    /// Releases the crowd and returns once every thread has its answer.
    void release() {
        start();
        finish();
    }

    void start() {
        arrived_.store(0, std::memory_order_relaxed);
        {
            std::lock_guard<std::mutex> lock(gate_);
            finished_ = 0;
            ++round_;
        }
        go_.notify_all();
    }

    void finish() {
        std::unique_lock<std::mutex> lock(gate_);
        all_done_.wait(lock, [this] { return finished_ == size(); });
    }

    /// Waits (up to a second) until every thread has entered get_token.
    void await_arrivals() const {
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        while (arrived_.load(std::memory_order_acquire) != size() && std::chrono::steady_clock::now() < give_up)
            std::this_thread::yield();
    }

    std::size_t size() const noexcept { return threads_.size(); }
    std::int64_t last_done_ns() const { return *std::max_element(done_ns_.begin(), done_ns_.end()); }
    bool all_ok() const { return std::all_of(ok_.begin(), ok_.end(), [](char ok) { return ok != 0; }); }

private:
    void run(std::size_t index) {
        std::uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(gate_);
                go_.wait(lock, [&] { return round_ != seen; });
                seen = round_;
                if (stop_) return;
            }
            arrived_.fetch_add(1, std::memory_order_acq_rel);
            const bool ok = work_();
            done_ns_[index] = counting_transport::now_ns();
            ok_[index] = ok;
            std::lock_guard<std::mutex> lock(gate_);
            if (++finished_ == size()) all_done_.notify_one();
        }
    }

    std::function<bool()> work_;
    std::vector<std::thread> threads_;
    std::vector<std::int64_t> done_ns_;
    std::vector<char> ok_;
    std::mutex gate_;
    std::condition_variable go_;
    std::condition_variable all_done_;
    std::uint64_t round_ = 0;     // guarded by gate_
    std::size_t finished_ = 0;    // guarded by gate_
    bool stop_ = false;           // guarded by gate_
    std::atomic<std::size_t> arrived_{0};
};

void report_spread(benchmark::State& state, std::vector<double>& last_us) {
    std::sort(last_us.begin(), last_us.end());
    state.counters["last_p50_us"] = last_us[last_us.size() / 2];
    state.counters["last_max_us"] = last_us.back();
}

void single_flight(benchmark::State& state) {
    const auto crowd_size = static_cast<std::size_t>(state.range(0));

    counting_transport::state transport;
    transport.delay = std::chrono::milliseconds(1);
    tokmgr::testing::manual_clock clock;
    tokmgr::manager_options options;
    options.jitter_seed = 42;
    // The manager reports refresh_succeeded after it has published the new JWT
    // and woken the waiters: answer -> event is the manager's own part.
    std::atomic<std::int64_t> published_ns{0};
    options.on_event = [&published_ns](const tokmgr::event& e) {
        if (e.kind == tokmgr::event_kind::refresh_succeeded)
            published_ns.store(counting_transport::now_ns(), std::memory_order_release);
    };
    manager_type manager(counting_transport(transport), tokmgr::credentials{"bench-user", tokmgr::secret("bench-pw")},
                         options, clock);
    crowd threads(crowd_size, [&manager] {
        std::error_code ec;
        const auto jwt = manager.get_token(ec);
        return !ec && jwt.size() > 250;
    });
    threads.release();  // the first round logs in: not timed
    // The answer waits until every other thread of the crowd has joined the
    // flight (the manager counts it before the caller parks), so the timed
    // part is the release of waiters, not their arrival.
    std::atomic<std::uint64_t> joined_target{0};
    transport.before_answer = [&] {
        threads.await_arrivals();
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        while (manager.counters().joined < joined_target.load() && std::chrono::steady_clock::now() < give_up)
            std::this_thread::yield();
    };

    std::vector<double> last_us, published_us;
    std::uint64_t calls = 0, joined = 0, rounds = 0, failures = 0;
    for (auto _ : state) {
        clock.advance(std::chrono::minutes(31));  // past the 30-minute JWT's hard threshold
        const auto calls_before = transport.calls.load();
        const auto joined_before = manager.counters().joined;
        joined_target.store(joined_before + crowd_size - 1);
        threads.release();
        const auto answer_ns = transport.last_answer_ns.load(std::memory_order_acquire);
        const double seconds = static_cast<double>(threads.last_done_ns() - answer_ns) * 1e-9;
        state.SetIterationTime(seconds);
        last_us.push_back(seconds * 1e6);
        published_us.push_back(static_cast<double>(published_ns.load(std::memory_order_acquire) - answer_ns) * 1e-3);
        calls += transport.calls.load() - calls_before;
        joined += manager.counters().joined - joined_before;
        failures += threads.all_ok() ? 0 : 1;
        ++rounds;
    }
    transport.before_answer = nullptr;

    state.counters["calls_per_refresh"] = static_cast<double>(calls) / static_cast<double>(rounds);
    state.counters["joined_per_refresh"] = static_cast<double>(joined) / static_cast<double>(rounds);
    state.counters["failures"] = static_cast<double>(failures);
    report_spread(state, last_us);
    std::sort(published_us.begin(), published_us.end());
    state.counters["woken_p50_us"] = published_us[published_us.size() / 2];
}

/// The floor under single_flight: the same crowd parked on one futex (as
/// tokmgr's waiters are), woken by one notify_all after 1 ms, with no token
/// manager at all. What the kernel and the cores cost to wake N threads.
void wake_floor(benchmark::State& state) {
    const auto crowd_size = static_cast<std::size_t>(state.range(0));
    std::atomic<std::uint32_t> answer{0};
    std::atomic<std::uint32_t> expected{0};
    crowd threads(crowd_size, [&] {
        const auto want = expected.load(std::memory_order_acquire);
        for (auto a = answer.load(std::memory_order_acquire); a != want; a = answer.load(std::memory_order_acquire))
            answer.wait(a, std::memory_order_acquire);
        return true;
    });

    std::vector<double> last_us;
    double notify_ns = 0;
    for (auto _ : state) {
        expected.fetch_add(1, std::memory_order_release);
        threads.start();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        threads.await_arrivals();
        const auto answer_ns = counting_transport::now_ns();
        answer.fetch_add(1, std::memory_order_release);
        answer.notify_all();
        notify_ns += static_cast<double>(counting_transport::now_ns() - answer_ns);
        threads.finish();
        const double seconds = static_cast<double>(threads.last_done_ns() - answer_ns) * 1e-9;
        state.SetIterationTime(seconds);
        last_us.push_back(seconds * 1e6);
    }
    report_spread(state, last_us);
    state.counters["notify_all_us"] = notify_ns / static_cast<double>(last_us.size()) * 1e-3;
}

/// Every crowd from 1 to twice the machine's cores, so a wider machine shows
/// the scaling without edits, then the large crowds of 16, 256 and 1,000.
void crowd_sizes() {
    const int cores = static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
    std::vector<int> sizes;
    for (int n = 1; n <= 2 * cores; ++n) sizes.push_back(n);
    for (int n : {16, 256, 1000})
        if (n > 2 * cores) sizes.push_back(n);
    for (int threads : sizes) {
        // Fewer rounds for the larger crowds: a round of 1,000 threads costs milliseconds.
        const int rounds = threads <= 64 ? 200 : threads <= 256 ? 50 : 30;
        benchmark::RegisterBenchmark("single_flight/tokmgr", single_flight)
            ->Arg(threads)
            ->Iterations(rounds)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark("single_flight/wake_floor", wake_floor)
            ->Arg(threads)
            ->Iterations(rounds)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
    }
}

}  // namespace

int main(int argc, char** argv) { return tokmgr_bench::run_benchmarks(argc, argv, crowd_sizes); }
