// bench_hot_path.cpp — the cost of handing out a fresh JWT, per call, by
// tokmgr and by the strategies its peers use, at 1, 2, ... threads.
//
// Every family reads the same ~300-byte JWT, fresh for the whole run, with the
// clock the default manager uses (tokmgr::coarse_steady_clock: on Linux
// CLOCK_MONOTONIC_COARSE, the cheapest adequate time source). Reported "Time"
// is wall time per call per thread (UseRealTime): a design that scales keeps
// it flat as threads are added.
//
//   get_token/limit              one coarse clock read, one acquire load of a
//                                pointer, one compare: the least any correct
//                                design does
//   get_token/limit_steady       the same with std::chrono::steady_clock (the
//                                floor before the coarse clock)
//   get_token/tokmgr             token_manager::get_token()
//   get_token/tokmgr_ec          token_manager::get_token(std::error_code&)
//   get_token/mutex              std::mutex, check, copy out (Go oauth2's
//                                ReuseTokenSource, google-cloud-cpp's cache)
//   get_token/shared_mutex       shared lock, check, copy out (Azure SDK for C++)
//   get_token/atomic_shared_ptr  std::atomic<std::shared_ptr<const token>>
//                                load, check, use
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>

#include <tokmgr/clock.hpp>

#include "bench_common.hpp"

#if __has_include(<tokmgr/impl/token_manager.hpp>)
#include <tokmgr/json/simdjson.hpp>
#include <tokmgr/storage/memory.hpp>
#include <tokmgr/token_manager.hpp>
#define TOKMGR_BENCH_HAS_MANAGER 1
#else
#define TOKMGR_BENCH_HAS_MANAGER 0
#endif

namespace {

using clock_type = tokmgr::coarse_steady_clock;  // the default manager's clock
const clock_type bench_clock{};

/// What every peer strategy caches: the JWT and the point after which it is
/// no longer handed out without a refresh.
struct token {
    std::string jwt;
    clock_type::time_point deadline;
};

token make_token() {
    return {tokmgr_bench::make_jwt(std::chrono::minutes(30)), bench_clock.now() + std::chrono::minutes(25)};
}

[[noreturn]] void expired() {
    std::fputs("the benchmark token expired: the run took longer than 25 minutes\n", stderr);
    std::abort();
}

// ---- limit -----------------------------------------------------------------

struct limit_cache {
    token value = make_token();
    std::atomic<const token*> current{&value};
};

/// `Clock` is coarse_steady_clock (limit) or steady_clock (limit_steady): both
/// give std::chrono::steady_clock's time points, so one cached token serves.
template <class Clock>
void get_token_limit(benchmark::State& state) {
    static const Clock clock{};
    static limit_cache cache;
    for (auto _ : state) {
        const auto now = clock.now();
        const token* t = cache.current.load(std::memory_order_acquire);
        if (now >= t->deadline) [[unlikely]]
            expired();
        std::string_view jwt(t->jwt);
        benchmark::DoNotOptimize(jwt);
    }
}

// ---- tokmgr ------------------------------------------------------------------

#if TOKMGR_BENCH_HAS_MANAGER
using bench_manager = tokmgr::token_manager<tokmgr_bench::counting_transport, clock_type,
                                            tokmgr::memory_storage, tokmgr::simdjson_json>;

bench_manager& manager() {
    static tokmgr_bench::counting_transport::state transport_state;
    static const auto m = [] {
        auto mgr = std::make_unique<bench_manager>(tokmgr_bench::counting_transport(transport_state),
                                                   tokmgr::credentials{"bench-user", tokmgr::secret("bench-password")});
        if (mgr->get_token().size() < 250) std::abort();  // logs in once, before any timing
        return mgr;
    }();
    return *m;
}

void get_token_tokmgr(benchmark::State& state) {
    auto& mgr = manager();
    for (auto _ : state) {
        auto jwt = mgr.get_token();
        benchmark::DoNotOptimize(jwt);
    }
}

// Not a required family: the error_code overload, to show what the throwing
// overload's bookkeeping costs on the hot path.
void get_token_tokmgr_ec(benchmark::State& state) {
    auto& mgr = manager();
    for (auto _ : state) {
        std::error_code ec;
        auto jwt = mgr.get_token(ec);
        benchmark::DoNotOptimize(jwt);
        benchmark::DoNotOptimize(ec);
    }
}
#endif

// ---- mutex / shared_mutex: lock, check, copy out ------------------------------

/// The peers' cache: a lock around the token; the caller gets its own copy,
/// since the cached one may be replaced as soon as the lock is released.
template <class Mutex, template <class> class Lock>
struct locked_cache {
    Mutex mutex;
    token value = make_token();

    std::string get() {
        Lock<Mutex> lock(mutex);
        if (bench_clock.now() >= value.deadline) expired();
        return value.jwt;
    }
};

template <class Cache>
void get_token_locked(benchmark::State& state) {
    static Cache cache;
    for (auto _ : state) {
        std::string jwt = cache.get();
        benchmark::DoNotOptimize(jwt.data());
    }
}

// std::mutex: Go oauth2's ReuseTokenSource, google-cloud-cpp's cached credentials.
using mutex_cache = locked_cache<std::mutex, std::lock_guard>;
// std::shared_mutex with a shared lock: the Azure SDK for C++ token cache.
using shared_mutex_cache = locked_cache<std::shared_mutex, std::shared_lock>;

// ---- atomic<shared_ptr>: load, check, use --------------------------------------

struct atomic_shared_ptr_cache {
    std::atomic<std::shared_ptr<const token>> current{std::make_shared<const token>(make_token())};
};

void get_token_atomic_shared_ptr(benchmark::State& state) {
    static atomic_shared_ptr_cache cache;
    for (auto _ : state) {
        std::shared_ptr<const token> t = cache.current.load(std::memory_order_acquire);
        if (bench_clock.now() >= t->deadline) [[unlikely]]
            expired();
        std::string_view jwt(t->jwt);
        benchmark::DoNotOptimize(jwt);
    }
}

/// Every thread count from 1 to the machine's cores (at least 2), so a run on
/// a wider machine shows the scaling without edits.
void thread_counts(benchmark::internal::Benchmark* b) {
    const int cores = static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
    for (int n = 1; n <= cores; ++n) b->Threads(n);
    b->UseRealTime();
}

BENCHMARK_TEMPLATE(get_token_limit, clock_type)->Name("get_token/limit")->Apply(thread_counts);
BENCHMARK_TEMPLATE(get_token_limit, tokmgr::steady_clock)->Name("get_token/limit_steady")->Apply(thread_counts);
#if TOKMGR_BENCH_HAS_MANAGER
BENCHMARK(get_token_tokmgr)->Name("get_token/tokmgr")->Apply(thread_counts);
BENCHMARK(get_token_tokmgr_ec)->Name("get_token/tokmgr_ec")->Apply(thread_counts);
#endif
BENCHMARK_TEMPLATE(get_token_locked, mutex_cache)->Name("get_token/mutex")->Apply(thread_counts);
BENCHMARK_TEMPLATE(get_token_locked, shared_mutex_cache)->Name("get_token/shared_mutex")->Apply(thread_counts);
BENCHMARK(get_token_atomic_shared_ptr)->Name("get_token/atomic_shared_ptr")->Apply(thread_counts);

}  // namespace

BENCHMARK_MAIN();
