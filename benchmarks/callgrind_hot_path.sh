#!/usr/bin/env bash
# callgrind_hot_path.sh — instructions per get_token call on one thread, for
# each hot-path family: a cross-check of bench_hot_path that no other load on
# the machine can disturb (it counts instructions, not time, and says nothing
# about contention between threads).
#
# Usage: callgrind_hot_path.sh [path/to/bench_hot_path]   (needs valgrind)
set -euo pipefail

bench=${1:-$(cd "$(dirname "$0")/.." && pwd)/build-bench/benchmarks/bench_hot_path}
command -v valgrind >/dev/null || { echo "valgrind not found: skipped"; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The function holding each family's timed loop, as callgrind names it.
declare -A loop=(
    [limit]='get_token_limit<tokmgr::coarse_steady_clock>('
    [limit_steady]='get_token_limit<tokmgr::steady_clock>('
    [tokmgr]='get_token_tokmgr('
    [tokmgr_ec]='get_token_tokmgr_ec('
    [mutex]='locked_cache<std::mutex, std::lock_guard>'
    [shared_mutex]='locked_cache<std::shared_mutex, std::shared_lock>'
    [atomic_shared_ptr]='get_token_atomic_shared_ptr('
)

printf "%-20s %14s\n" family "Ir per call"
for family in limit limit_steady tokmgr tokmgr_ec mutex shared_mutex atomic_shared_ptr; do
    valgrind --tool=callgrind --callgrind-out-file="$work/out" "$bench" \
        --benchmark_filter="^get_token/$family/real_time/threads:1\$" --benchmark_min_time=0.2 >/dev/null 2>&1
    callgrind_annotate --inclusive=yes --tree=caller "$work/out" 2>/dev/null >"$work/tree"
    # Inclusive instructions of the loop function, divided by the iterations:
    # the largest call count from that function to anything it calls once per
    # iteration (the clock, or get_token).
    awk -v fn="${loop[$family]}" -v name="$family" '
        index($0, fn) && / \*  / { gsub(",", "", $1); total = $1 }
        index($0, fn) && /^ *[0-9,]+ .* < / && match($0, /\(([0-9,]+)x\)/) {
            n = substr($0, RSTART + 1, RLENGTH - 3); gsub(",", "", n); if (n + 0 > iters) iters = n + 0 }
        END { if (iters > 0) printf "%-20s %14.1f\n", name, total / iters; else printf "%-20s %14s\n", name, "?" }
    ' "$work/tree"
done
