// bench_storage.cpp — what a coordinating store adds to one refresh: take
// the lease, re-read the set, store the write-ahead mark (store_if), check
// the lease is still held (holds, just before the request would be sent),
// store the new pair (store_if), release — the calls of the manager's
// flight, in its order; a store with store_if_and_release stores the pair
// and releases with it, as the manager has it do. The refresh request
// itself is left out.
//
//   refresh_cycle/disk   file_storage in a directory on the disk:
//                        $TOKMGR_BENCH_DIR, or the current directory (run it
//                        from the work tree)
//   refresh_cycle/shm    file_storage in /dev/shm (tmpfs: fsync costs
//                        nothing), which isolates the file-system calls from
//                        the flushes
//   refresh_cycle/redis  redis_storage on the server $TOKMGR_BENCH_REDIS
//                        names (redis://host:port/[db/]key; the key is
//                        overwritten); skipped when it is not set. Three round
//                        trips, each an EVAL: the lease with the read, the
//                        fenced mark (holds answers from it), the pair with
//                        the release
//   refresh_cycle/postgres  postgres_storage on the database
//                        $TOKMGR_BENCH_POSTGRES names (a postgresql://…?key=K
//                        URL; the row is overwritten; the password from
//                        TOKMGR_POSTGRES_PASSWORD or PGPASSFILE); skipped
//                        when it is not set. Six statements, one round trip
//                        each
//
// Time is the mean of the whole cycle; p50_us and p99_us are over the same
// samples; lock_us, load_us, spent_us, holds_us, pair_us are the p50 of each step (the
// release is in the cycle's time only). Two fsyncs of the file and two of
// the directory per store_if: on a disk they are nearly the whole cost.
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <tokmgr/concepts.hpp>
#include <tokmgr/storage/file.hpp>
#if TOKMGR_BENCH_WITH_REDIS
#include <tokmgr/storage/redis.hpp>
#endif
#if TOKMGR_BENCH_WITH_POSTGRES
#include <tokmgr/storage/postgres.hpp>
#endif

#include "bench_common.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

std::string bench_directory(const std::string& base) {
    std::string pattern = base + "/tokmgr-bench-storage-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
        std::perror("mkdtemp");
        std::exit(1);
    }
    return pattern;
}

tokmgr::token_set pair_of(std::uint64_t generation) {
    tokmgr::token_set set;
    set.jwt = tokmgr::secret(tokmgr_bench::make_jwt(std::chrono::minutes(30), generation));
    set.refresh_token = tokmgr::secret("rt-" + std::to_string(generation) + "-9b0f1c55a2e84d0f8f3b6c1d2e7a9f40");
    set.received_at = std::chrono::system_clock::now();
    set.jwt_lifetime = std::chrono::minutes(30);
    set.refresh_lifetime = std::chrono::hours(24 * 7);
    set.generation = generation;
    return set;
}

double p(std::vector<double>& samples, double q) {
    std::sort(samples.begin(), samples.end());
    return samples[static_cast<std::size_t>(q * static_cast<double>(samples.size() - 1))] * 1e6;
}

template <class Storage>
void refresh_cycle(benchmark::State& state, Storage& storage) {
    std::error_code ec;
    storage.store(pair_of(1), ec);
    if (ec) {
        state.SkipWithError(storage.last_error().message().c_str());
        return;
    }
    std::vector<double> cycle, lock, load, spent, held, pair;
    auto seconds = [](clock_type::time_point a, clock_type::time_point b) {
        return std::chrono::duration<double>(b - a).count();
    };
    for (auto _ : state) {
        const auto t0 = clock_type::now();
        auto lease = storage.lock(std::chrono::seconds(5), ec);
        const auto t1 = clock_type::now();
        auto current = storage.load(ec);
        const auto t2 = clock_type::now();
        if (!lease || !current) {
            state.SkipWithError(storage.last_error().message().c_str());
            break;
        }
        tokmgr::token_set mark = *current;  // the write-ahead mark: same JWT, token spent
        mark.refresh_token.clear();
        mark.refresh_token_spent = true;
        mark.generation = current->generation + 1;
        const bool marked = storage.store_if(mark, current->generation, ec);
        const auto t3 = clock_type::now();
        const bool holds = storage.holds(lease, ec);
        const auto t3h = clock_type::now();
        bool stored = false;
        if constexpr (tokmgr::releases_with_write_v<Storage>)
            stored = storage.store_if_and_release(pair_of(mark.generation + 1), mark.generation, lease, ec);
        else
            stored = storage.store_if(pair_of(mark.generation + 1), mark.generation, ec);
        const auto t4 = clock_type::now();
        lease.release();  // nothing left to do when the write released it
        const auto t5 = clock_type::now();
        if (!marked || !holds || !stored) {
            state.SkipWithError(storage.last_error().message().c_str());
            break;
        }
        state.SetIterationTime(seconds(t0, t5));
        cycle.push_back(seconds(t0, t5));
        lock.push_back(seconds(t0, t1));
        load.push_back(seconds(t1, t2));
        spent.push_back(seconds(t2, t3));
        held.push_back(seconds(t3, t3h));
        pair.push_back(seconds(t3h, t4));
    }
    if (!cycle.empty()) {
        state.counters["p50_us"] = p(cycle, 0.50);
        state.counters["p99_us"] = p(cycle, 0.99);
        state.counters["lock_us"] = p(lock, 0.50);
        state.counters["load_us"] = p(load, 0.50);
        state.counters["spent_us"] = p(spent, 0.50);
        state.counters["holds_us"] = p(held, 0.50);
        state.counters["pair_us"] = p(pair, 0.50);
    }
}

void file_cycle(benchmark::State& state, const std::string& base) {
    const std::string dir = bench_directory(base);
    tokmgr::file_storage storage(dir + "/tokens.json");
    refresh_cycle(state, storage);
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
}

/// The cycle on a shared store, once a first load shows it answers.
template <class Storage>
void shared_store_cycle(benchmark::State& state, Storage storage) {
    std::error_code ec;
    storage.load(ec);
    if (ec) {
        state.SkipWithError(storage.last_error().message().c_str());
        return;
    }
    refresh_cycle(state, storage);
}

/// TOKMGR_BENCH_REDIS names the store (rediss:// for TLS, with the CA that
/// signs the server's certificate in TOKMGR_BENCH_REDIS_CA).
void redis_cycle(benchmark::State& state) {
    const char* url = std::getenv("TOKMGR_BENCH_REDIS");
#if TOKMGR_BENCH_WITH_REDIS
    if (url && *url) {
        auto options = tokmgr::redis_options::from_url(url);
        if (const char* ca = std::getenv("TOKMGR_BENCH_REDIS_CA"); ca && *ca) options.tls_ca_file = ca;
        return shared_store_cycle(state, tokmgr::redis_storage(std::move(options)));
    }
#endif
    state.SkipWithError(url ? "built without tokmgr::redis"
                            : "set TOKMGR_BENCH_REDIS=redis[s]://host:port/key (it is overwritten)");
}

void postgres_cycle(benchmark::State& state) {
    const char* url = std::getenv("TOKMGR_BENCH_POSTGRES");
#if TOKMGR_BENCH_WITH_POSTGRES
    if (url && *url) {
        auto options = tokmgr::postgres_options::from_url(url);
        if (const char* password = std::getenv("TOKMGR_POSTGRES_PASSWORD"); password && *password)
            options.password = tokmgr::secret(password);
        return shared_store_cycle(state, tokmgr::postgres_storage(std::move(options)));
    }
#endif
    state.SkipWithError(url ? "built without libpq"
                            : "set TOKMGR_BENCH_POSTGRES=postgresql://user@host:port/db?key=K (the row is overwritten)");
}

void register_families() {
    const char* env = std::getenv("TOKMGR_BENCH_DIR");
    const std::string disk = env && *env ? env : ".";
    benchmark::RegisterBenchmark("refresh_cycle/disk", [disk](benchmark::State& s) { file_cycle(s, disk); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->MinTime(2.0);
    benchmark::RegisterBenchmark("refresh_cycle/shm", [](benchmark::State& s) { file_cycle(s, "/dev/shm"); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->MinTime(1.0);
    using family_function = void (*)(benchmark::State&);
    for (auto [name, family] : {std::pair<const char*, family_function>{"refresh_cycle/redis", redis_cycle},
                                std::pair<const char*, family_function>{"refresh_cycle/postgres", postgres_cycle}})
        benchmark::RegisterBenchmark(name, family)->UseManualTime()->Unit(benchmark::kMicrosecond)->MinTime(2.0);
}

}  // namespace

int main(int argc, char** argv) { return tokmgr_bench::run_benchmarks(argc, argv, register_families); }
