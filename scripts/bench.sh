#!/usr/bin/env bash
# bench.sh — builds the benchmarks (Release) and runs them all, printing the
# figures BENCHMARKS.md reports, then the ratios read against the targets.
#
#   scripts/bench.sh              everything, in under five minutes on 2 cores (build included)
#   BUILD_DIR=... scripts/bench.sh   another build tree (default: build-bench)
#
# Needs: cmake, ninja, a C++20 compiler, libbenchmark-dev, libcurl4-openssl-dev,
# plus what tokmgr needs (libasio-dev, libsimdjson-dev, libssl-dev); python3
# for the ratios and valgrind for the instruction counts are optional. Figures
# are only as quiet as the machine: the script prints how idle the CPUs were
# just before it started (the load average is no guide once it has run: the
# single-flight benchmark alone starts 1,000 threads).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"  # a fresh machine: the packages the benchmarks need
build=${BUILD_DIR:-$root/build-bench}
out=$build/bench-results
start=$(date +%s)

echo "== machine"
echo "$(nproc) cores: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1); $(uname -srm)"
echo "compiler: $(${CXX:-c++} --version | head -1)"
cpu_idle() {  # percent of CPU time idle over the next 2 seconds
    local a b
    read -r -a a </proc/stat
    sleep 2
    read -r -a b </proc/stat
    local idle=$(( b[4] - a[4] )) total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
    echo $(( 100 * idle / (total > 0 ? total : 1) ))
}
echo "CPU idle before the run: $(cpu_idle)%; load average:$(uptime | sed 's/.*load average://')"

echo "== build (Release, benchmarks only)"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTOKMGR_BUILD_TESTS=OFF \
    -DTOKMGR_BUILD_EXAMPLES=OFF -DTOKMGR_BUILD_TOOLS=ON -DTOKMGR_BUILD_BENCHMARKS=ON >/dev/null
targets=(bench_hot_path bench_single_flight bench_round_trip bench_async bench_storage bench_service tokmgr)
cmake --build "$build" --target "${targets[@]}"
mkdir -p "$out"

run() {  # run NAME ARGS...: prints the console table, keeps JSON for the summary
    local name=$1
    shift
    echo "== $name"
    "$build/benchmarks/$name" --benchmark_out="$out/$name.json" --benchmark_out_format=json "$@"
}

# 1. Hot path: 5 repetitions, medians. Time is wall time per call divided by
#    the number of threads (Google Benchmark's convention); the summary turns
#    it into the cost of one call on one thread.
run bench_hot_path --benchmark_repetitions=5 --benchmark_report_aggregates_only=true --benchmark_min_time=0.3
#    The same families counted in instructions (valgrind; skipped without it).
echo "== hot path, instructions per call (callgrind, 1 thread)"
"$root/benchmarks/callgrind_hot_path.sh" "$build/benchmarks/bench_hot_path"
# 2. Single flight under a crowd.
run bench_single_flight
# 3. Refresh round trip over loopback.
run bench_round_trip
# 3b. async_get_token: fast path against get_token, coroutines waiting for one refresh.
run bench_async --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
# 3c. file_storage: what a refresh pays for the lease, re-read and fenced writes,
#     on the work tree's disk; then processes sharing one file.
TOKMGR_BENCH_DIR="$root" run bench_storage
echo "== processes sharing one token file (tokmgr load --store)"
"$root/benchmarks/store_processes.sh" "$build/tools/tokmgr" 20 | tee "$out/store_processes.txt"
# 3d. tokmgr inside a service: the load loop with and without a manager.
echo "== bench_service"
"$build/benchmarks/bench_service" --json "$out/bench_service.json"
# 4. Compile time.
echo "== compile time"
"$root/benchmarks/compile_time/compile_time.sh" 2 | tee "$out/compile_time.txt"

echo "== summary"
if command -v python3 >/dev/null; then
    python3 "$root/benchmarks/summary.py" "$out"
else
    echo "python3 not found: the ratios are not computed (the tables above hold the figures)"
fi
echo "== done in $(( $(date +%s) - start )) s"
