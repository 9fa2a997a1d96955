// One fuzz target per parser or policy. A harness defines its body with
// TOKMGR_FUZZ_TARGET(name) and checks its properties with FUZZ_CHECK.
//
// Built with clang's -fsanitize=fuzzer (TOKMGR_FUZZ=ON, scripts/fuzz.sh) the
// macro defines libFuzzer's entry point, one executable per harness. Built
// otherwise (TOKMGR_FUZZ_REPLAY, the normal test suite) it registers the body
// under its name, and fuzz_replay_test runs every registered target over its
// seed corpus and the regression inputs that fuzzing found, so each finding
// stays a test under every compiler and sanitizer the suite uses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

namespace tokmgr_fuzz {

using target_function = int (*)(const std::uint8_t*, std::size_t);

inline std::map<std::string, target_function>& targets() {
    static std::map<std::string, target_function> registered;
    return registered;
}

inline bool register_target(const char* name, target_function f) {
    targets().emplace(name, f);
    return true;
}

[[noreturn]] inline void property_failed(const char* what, const char* file, int line) {
    std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n", file, line, what);
    std::abort();
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

}  // namespace tokmgr_fuzz

#define FUZZ_CHECK(condition) \
    ((condition) ? (void)0 : ::tokmgr_fuzz::property_failed(#condition, __FILE__, __LINE__))

#ifdef TOKMGR_FUZZ_REPLAY
#define TOKMGR_FUZZ_TARGET(name)                                                                    \
    static int name##_one_input(const std::uint8_t* data, std::size_t size);                       \
    [[maybe_unused]] static const bool name##_registered =                                         \
        ::tokmgr_fuzz::register_target(#name, &name##_one_input);                                  \
    static int name##_one_input(const std::uint8_t* data, std::size_t size)
#else
#define TOKMGR_FUZZ_TARGET(name) extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
#endif
