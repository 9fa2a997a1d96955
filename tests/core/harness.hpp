// A manager wired to the manual clock and the in-memory fake auth server.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include <doctest/doctest.h>

#include <tokmgr/json/simdjson.hpp>
#include <tokmgr/testing/fake_auth_server.hpp>
#include <tokmgr/testing/fake_transport.hpp>
#include <tokmgr/testing/manual_clock.hpp>
#include <tokmgr/token_manager.hpp>

#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <filesystem>
#include <system_error>
#include <thread>
#include <vector>

#if defined(TOKMGR_TEST_FILE_STORAGE)
#include <tokmgr/storage/file.hpp>
#endif

namespace test {

using namespace std::chrono_literals;

#if defined(TOKMGR_TEST_FILE_STORAGE)
/// file_storage on a file of its own in a fresh directory (on /dev/shm when
/// there, so fsync costs little), removed with the last copy: the whole core
/// suite runs unchanged on the file store (tokmgr_core_tests_file_storage).
class temp_file_storage : public tokmgr::file_storage {
public:
    temp_file_storage() : temp_file_storage(std::make_shared<directory>()) {}

private:
    struct directory {
        std::string path;
        directory() {
            std::string pattern = (std::filesystem::exists("/dev/shm") ? std::string("/dev/shm")
                                                                       : std::filesystem::temp_directory_path().string()) +
                                  "/tokmgr-core-XXXXXX";
            path = ::mkdtemp(pattern.data());
        }
        ~directory() {
            std::error_code ec;
            std::filesystem::remove_all(path, ec);
        }
    };
    explicit temp_file_storage(std::shared_ptr<directory> dir)
        : tokmgr::file_storage(dir->path + "/token.json"), dir_(std::move(dir)) {}
    std::shared_ptr<directory> dir_;
};
using storage_type = temp_file_storage;
#else
using storage_type = tokmgr::memory_storage;
#endif

using manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock, storage_type,
                                      tokmgr::simdjson_json>;

inline const std::string password = "correct horse battery staple";

/// A fresh directory for file_storage tests, removed afterwards.
struct temp_dir {
    std::filesystem::path path;
    temp_dir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "tokmgr-core-XXXXXX").string();
        path = ::mkdtemp(pattern.data());
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

struct harness {
    tokmgr::testing::manual_clock clock;
    tokmgr::testing::fake_auth_server server;
    tokmgr::testing::fake_transport transport;
    tokmgr::manager_options options;

    explicit harness(std::chrono::seconds jwt_lifetime = 30min, std::chrono::seconds refresh_lifetime = 10000min)
        : server(clock, settings(jwt_lifetime, refresh_lifetime)), transport(server) {
        options.assumed_lifetimes = tokmgr::lifetimes{jwt_lifetime, refresh_lifetime};
        options.jitter_fraction = 0;  // exact thresholds; jitter has its own tests
        options.jitter_seed = 42;
    }

    static tokmgr::testing::fake_auth_server::settings settings(std::chrono::seconds jwt, std::chrono::seconds refresh) {
        tokmgr::testing::fake_auth_server::settings s;
        s.password = password;
        s.jwt_lifetime = jwt;
        s.refresh_lifetime = refresh;
        return s;
    }

    std::unique_ptr<manager> make(std::string pw = password) {
        return std::make_unique<manager>(transport, tokmgr::credentials{"user@example.com", tokmgr::secret(pw)},
                                         options, clock);
    }

    /// The requests sent to `target` so far.
    std::size_t sent(const std::string& target) const {
        std::size_t n = 0;
        for (const auto& r : transport.requests()) n += r.target == target;
        return n;
    }
};

inline tokmgr::http_response status(int code, std::string body = "{}") { return {code, {}, std::move(body)}; }

/// Past the soft threshold of a 30-minute JWT, before its hard one.
inline std::chrono::seconds past_soft(const tokmgr::manager_options& options) {
    return std::chrono::duration_cast<std::chrono::seconds>(tokmgr::schedule_for(30min, options, 0).soft) + 1s;
}

/// The end of a fault-injection run: each manager gets a JWT again within
/// three tries 40 minutes apart (past every threshold and backoff), and no
/// refresh token was reused.
template <class... Managers>
void served_again_without_reuse(harness& h, Managers&... managers) {
    std::error_code ec;
    auto serve = [&](auto& manager) {
        bool served = false;
        for (int attempt = 0; attempt < 3 && !served; ++attempt) {
            h.clock.advance(std::chrono::minutes(40));
            served = !manager.get_token(ec).empty();
        }
        CHECK(served);
    };
    (serve(managers), ...);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
}

/// A TCP socket listening on a free loopback port (written to `port`): the
/// kernel completes handshakes whether or not anyone accepts.
inline int listen_on_loopback(int& port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port = ntohs(addr.sin_port);
    REQUIRE(::listen(fd, 8) == 0);
    return fd;
}

/// A token set of `generation` for the stores' tests; `writer` tells apart
/// the sets two writers make of one generation.
inline tokmgr::token_set set_of(std::uint64_t generation, bool spent = false, const std::string& writer = "") {
    tokmgr::token_set set;
    set.jwt = tokmgr::secret("eyJhbGciOiJIUzI1NiJ9.eyJnIjo" + std::to_string(generation) + writer + "fQ.c2ln");
    if (!spent) set.refresh_token = tokmgr::secret("rt-SECRET-" + std::to_string(generation));
    set.refresh_token_spent = spent;
    set.received_at = std::chrono::system_clock::time_point(std::chrono::seconds(1764625200));
    set.jwt_lifetime = 1800s;
    set.refresh_lifetime = 600000s;
    set.generation = generation;
    return set;
}

/// Each manager called from a thread of its own, `calls` times per round,
/// for ten rounds with the clock moved past the hard threshold after each:
/// the number of calls that got no JWT.
template <class Managers>
int call_across_ten_expiries(test::harness& h, Managers& managers, int calls) {
    const auto step = tokmgr::schedule_for(60s, h.options, 0).hard;
    std::atomic<int> failures{0};
    for (int expiry = 0; expiry < 10; ++expiry) {
        std::vector<std::thread> callers;
        for (auto& manager : managers) {
            callers.emplace_back([&] {
                for (int call = 0; call < calls; ++call) {
                    std::error_code ec;
                    if (manager->get_token(ec).empty() || ec) ++failures;
                }
            });
        }
        for (auto& t : callers) t.join();
        h.clock.advance(step + 1s);  // past the hard threshold: somebody must refresh
    }
    return failures;
}

/// A manager whose store's lease another process holds past lease_wait:
/// soft-expired, the JWT is still served (the refresh cannot start); hard-
/// expired, lease_timeout; no refresh is ever sent. `hold_elsewhere()`
/// returns the outsider's lease, held until the scenario ends.
template <class Make, class HoldElsewhere>
void a_lease_held_elsewhere_past_lease_wait(test::harness& h, Make make, HoldElsewhere hold_elsewhere) {
    h.options.lease_wait = 50ms;
    auto manager = make();
    const std::string first(manager->get_token().reveal());
    auto outsider = hold_elsewhere();
    REQUIRE(outsider);
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft + 1s);
    CHECK(manager->get_token().reveal() == first);  // soft-expired, the refresh could not start: still served
    CHECK(h.server.stats().refreshes == 0);
    h.clock.advance(30min + 1h);  // hard-expired, past any backoff; the outsider still holds the lease
    std::error_code ec;
    CHECK(manager->get_token(ec).empty());
    CHECK(ec == tokmgr::errc::lease_timeout);
    CHECK(h.server.stats().refreshes == 0);
    CHECK(h.server.stats().logins == 1);
}

/// Two processes, A and B, share a store and hold the same set; A refreshes
/// (its refresh token is now spent), then `lose` empties or rolls back the
/// store; B's next flight must not send the token A spent.
template <class Make, class Lose>
void another_process_refreshes_then_the_store_loses_it(test::harness& h, Make make, Lose lose) {
    auto a = make();
    auto b = make();
    CHECK_FALSE(a->get_token().empty());
    CHECK_FALSE(b->get_token().empty());  // adopts A's set from the store
    REQUIRE(h.server.stats().logins == 1);
    h.clock.advance(past_soft(h.options));
    CHECK_FALSE(a->get_token().empty());  // A refreshes: its old refresh token is spent
    REQUIRE(h.server.stats().refreshes == 1);
    // Some time later (a set received at the same instant as the one a
    // process holds is not adopted: a tie costs one more login, no reuse).
    h.clock.advance(1min);
    lose();
    std::error_code ec;
    CHECK_FALSE(b->get_token(ec).empty());  // B's JWT is soft-expired: B's flight reads the store
    CHECK_FALSE(ec);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
    h.clock.advance(30min);  // both past the hard threshold: every JWT served is fresh
    CHECK_FALSE(a->get_token(ec).empty());
    CHECK_FALSE(b->get_token(ec).empty());
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
}

}  // namespace test
