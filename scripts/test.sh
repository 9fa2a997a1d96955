#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: installs what is missing, then
# builds and runs ctest three times — plain (with the installed-package C++17
# consumer), under ThreadSanitizer, and under AddressSanitizer + UBSan — then
# the examples and end-to-end tests built in Release, then every fuzz target
# for a short budget (scripts/fuzz.sh short: 10 s each).
# Usage: scripts/test.sh [plain|tsan|asan|release|fuzz]...   (default: all five)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

jobs=$(nproc)
# run_suite NAME CMAKE_ARGS... builds and runs everything; with BUILD_TARGETS
# and TEST_REGEX set, only those targets and the tests matching the regex.
run_suite() {
  local name=$1; shift
  echo "=== tokmgr test suite: $name ==="
  cmake -S . -B "build-$name" -G Ninja "$@" >/dev/null
  # shellcheck disable=SC2086  # BUILD_TARGETS is a list
  cmake --build "build-$name" -j"$jobs" ${BUILD_TARGETS:+--target $BUILD_TARGETS}
  ctest --test-dir "build-$name" --output-on-failure --timeout 600 ${TEST_REGEX:+-R "$TEST_REGEX"} \
    ${TEST_EXCLUDE:+-E "$TEST_EXCLUDE"}
}

# The tests the ASan+UBSan suite runs, as a ctest regex, less the fixtures'
# setup and cleanup (the plain suite's own tests may need them): configuring
# its build is enough to list them (ctest -N).
asan_configure_args=(-DCMAKE_BUILD_TYPE=Debug -DTOKMGR_SANITIZE=address,undefined -DTOKMGR_BUILD_EXAMPLES=OFF
                     -DTOKMGR_BUILD_BENCHMARKS=OFF)
asan_tests_regex() {
  cmake -S . -B build-asan -G Ninja "${asan_configure_args[@]}" >/dev/null
  local names
  names=$(ctest --test-dir build-asan -N | sed -n 's/^ *Test *#[0-9]*: //p' | grep -Ev '_(setup|cleanup)$' | paste -sd'|')
  echo "^(${names})\$"
}

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(plain tsan asan release fuzz)
for suite in "${suites[@]}"; do
  case "$suite" in
    # Benchmarks too: proves they build (they run via scripts/bench.sh). The
    # examples are built and run by the release suite, as users build them.
    # When the ASan suite runs too, the plain suite builds everything but runs
    # only what ASan does not: the tests kept out of the sanitizer builds (the
    # fleets, the C++17 and file-store runs, the installed package, the doc
    # snippets). The others run under ASan+UBSan, in the same Debug build
    # with checks added; running them here too cost about a minute and a half.
    plain) exclude=""
           if [[ " ${suites[*]} " == *" asan "* ]]; then exclude=$(asan_tests_regex); fi
           TEST_EXCLUDE="$exclude" run_suite plain -DCMAKE_BUILD_TYPE=Debug -DTOKMGR_BUILD_EXAMPLES=OFF ;;
    # ThreadSanitizer where threads meet: the manager, the stores, the
    # transport, the reference server's sockets, end to end. Parsers, JSON,
    # the fuzz replay, the C++17 compile check and the command-line program
    # (with the hostile-client test, which runs it) are left to ASan+UBSan
    # and the plain suite: about 4 minutes of TSan compiling saved. Line
    # tables (-g1) are all a report needs (function, file, line); full debug
    # information at -O2 made each file compile about 40% longer (38 s
    # against 52 s for one end-to-end file).
    tsan)  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
           BUILD_TARGETS="tokmgr_core_tests tokmgr_storage_tests tokmgr_redis_tests transport_asio_test
                          server_socket_test e2e_token_manager_test e2e_async_test" \
           TEST_REGEX="^(tokmgr_(core|storage|redis)_tests|redis_(setup|cleanup)|transport_(asio_test|tls_setup|tls_cleanup|proxy_setup|proxy_cleanup)|server_socket_test|e2e_.*)$" \
           run_suite tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTOKMGR_SANITIZE=thread -DTOKMGR_BUILD_EXAMPLES=OFF \
                          -DTOKMGR_BUILD_BENCHMARKS=OFF "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" ;;
    asan)  ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1" \
           run_suite asan "${asan_configure_args[@]}" ;;
    # What users build (CMake's Release: -O3 -DNDEBUG): the examples and the
    # end-to-end tests, with the `tokmgr serve` they run against. A request
    # target that viewed a freed temporary worked in Debug and failed here.
    release) BUILD_TARGETS="examples/all tests/e2e/all tools/all" TEST_REGEX="^(tokmgr_example_|example_|e2e_)" \
             run_suite release -DCMAKE_BUILD_TYPE=Release -DTOKMGR_BUILD_BENCHMARKS=OFF ;;
    fuzz)  echo "=== tokmgr test suite: fuzz ==="
           scripts/fuzz.sh short ;;
    *) echo "unknown suite '$suite': use plain, tsan, asan, release or fuzz" >&2; exit 2 ;;
  esac
done
echo "=== all suites passed: ${suites[*]} ==="
