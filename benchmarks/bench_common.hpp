// bench_common.hpp — what the benchmarks share: a JWT of realistic size and
// a scriptable fake transport that counts its calls and stamps its answers.
#pragma once

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include <tokmgr/detail/base64url.hpp>
#include <tokmgr/http.hpp>

namespace tokmgr_bench {

/// A signed-looking HS256 JWT of about 300 bytes, as the Textual API issues
/// them: header, a payload with iat/exp `lifetime` apart (starting at the wall
/// clock's now), and a 32-byte signature. The signature is not real; the
/// client never verifies it.
inline std::string make_jwt(std::chrono::seconds lifetime, std::uint64_t serial = 1) {
    using namespace std::chrono;
    const auto iat = duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
    const std::string header = R"({"alg":"HS256","typ":"JWT"})";
    const std::string payload = R"({"sub":"svc-ingest@textual.example.com","userId":"3f9c1b2e-8d4a-4c47-9e61-)" +
                                std::to_string(100000000000ULL + serial) + R"(","iat":)" + std::to_string(iat) +
                                R"(,"exp":)" + std::to_string(iat + lifetime.count()) +
                                R"(,"iss":"textual","aud":"textual-api"})";
    std::string signature(32, '\0');
    for (std::size_t i = 0; i < signature.size(); ++i)
        signature[i] = static_cast<char>((serial * 131 + i * 197) & 0xff);
    using tokmgr::detail::base64url_encode;
    return base64url_encode(header) + "." + base64url_encode(payload) + "." + base64url_encode(signature);
}

/// A Transport policy that answers every login and refresh with a fresh JWT
/// after an optional delay, counts its calls, and records when it answered
/// (steady clock), so a benchmark can time what happens after the answer.
class counting_transport {
public:
    struct state {
        std::atomic<std::uint64_t> calls{0};
        std::atomic<std::int64_t> last_answer_ns{0};  ///< steady_clock, when send returned
        std::chrono::microseconds delay{0};
        std::chrono::seconds lifetime{std::chrono::minutes(30)};
        std::function<void()> before_answer;  ///< runs after the delay, before the answer is stamped
    };

    explicit counting_transport(state& s) : state_(&s) {}

    tokmgr::http_response send(const tokmgr::http_request&, std::error_code& ec) {
        ec.clear();
        const auto n = state_->calls.fetch_add(1, std::memory_order_relaxed) + 1;
        tokmgr::http_response response;
        response.status = 200;
        response.headers.push_back({"Content-Type", "application/json"});
        response.body = R"({"jwt":")" + make_jwt(state_->lifetime, n) + R"(","refreshToken":"rt-)" +
                        std::to_string(n) + R"(-9b0f1c55a2e84d0f8f3b6c1d2e7a9f40"})";
        if (state_->delay.count() > 0) std::this_thread::sleep_for(state_->delay);
        if (state_->before_answer) state_->before_answer();
        state_->last_answer_ns.store(now_ns(), std::memory_order_release);
        return response;
    }

    std::string endpoint() const { return "fake://bench"; }

    static std::int64_t now_ns() noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }

private:
    state* state_;
};

/// main() for a benchmark whose families are registered at run time.
inline int run_benchmarks(int argc, char** argv, void (*register_families)()) {
    register_families();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

}  // namespace tokmgr_bench
