#!/usr/bin/env bash
# Builds the fuzz targets of tests/fuzz with clang's libFuzzer (plus ASan and
# UBSan) and runs each one, starting from its seed corpus in the tree.
#
#   scripts/fuzz.sh short   # CI: FUZZ_SECONDS (10) per target
#   scripts/fuzz.sh long    # the campaign: FUZZ_RUNS (1,000,000) executions per target
#
# Run one target only with FUZZ_TARGETS="url request_parser". New inputs
# that grow coverage go to build-fuzz/corpus/<target>/ (not into the tree);
# a failing input is kept as build-fuzz/artifacts/<target>-crash-*. A
# finding becomes a regression: copy the input to tests/fuzz/corpus/<target>/
# (fuzz_replay_test then runs it in the normal suite) and add a unit test
# that names the behaviour. The executions per target are printed at the end
# and, for a long campaign, written to build-fuzz/campaign.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-short}
case "$mode" in
  short) budget=(-max_total_time="${FUZZ_SECONDS:-10}") ;;
  long)  budget=(-runs="${FUZZ_RUNS:-1000000}") ;;
  *) echo "usage: scripts/fuzz.sh [short|long]" >&2; exit 2 ;;
esac

clangxx=$(command -v clang++ || true)
if [ -z "$clangxx" ]; then
  echo "fuzz: clang++ is missing; scripts/install-deps.sh installs it (Debian: clang, libclang-rt-14-dev)" >&2
  exit 1
fi

build=${FUZZ_BUILD_DIR:-build-fuzz}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$clangxx" \
      -DTOKMGR_FUZZ=ON -DTOKMGR_BUILD_TESTS=OFF -DTOKMGR_BUILD_EXAMPLES=OFF -DTOKMGR_BUILD_BENCHMARKS=OFF \
      -DTOKMGR_BUILD_TOOLS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)"

targets=${FUZZ_TARGETS:-$(cd "$build/tests/fuzz" && ls fuzz_* | sed 's/^fuzz_//' | sort)}
mkdir -p "$build/artifacts" "$build/logs"
summary="$build/summary.txt"
: >"$summary"
for target in $targets; do
  work="$build/corpus/$target"
  mkdir -p "$work"
  log="$build/logs/$target.log"
  echo "=== fuzz $target (${budget[*]})"
  started=$(date +%s)
  status=0
  # -max_len: the largest input a parser here meets in one piece is far
  # smaller than the 1 MiB body cap, and short inputs mutate faster.
  # -timeout: any single input that takes 30 s is a finding (a hang); less
  # would report a process starved of CPU on a loaded machine (seen at 10 s
  # with a 64 ms input under load average 14).
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$build/tests/fuzz/fuzz_$target" "${budget[@]}" -max_len=4096 -timeout=30 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$build/artifacts/$target-" "$work" "tests/fuzz/corpus/$target" \
      >"$log" 2>&1 || status=$?
  seconds=$(( $(date +%s) - started ))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  printf '%-20s %12s executions %6s s\n' "$target" "${runs:-?}" "$seconds" | tee -a "$summary"
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $target FAILED (exit $status); the last lines of $log:" >&2
    tail -n 40 "$log" >&2
    echo "fuzz: reproduce with $build/tests/fuzz/fuzz_$target $build/artifacts/$target-<file>" >&2
    exit 1
  fi
done
if [ "$mode" = long ]; then
  { echo "long campaign, $(date -u +%Y-%m-%d), ${budget[*]}:"; cat "$summary"; } >"$build/campaign.txt"
fi
echo "=== fuzz: every target held ($mode)"
