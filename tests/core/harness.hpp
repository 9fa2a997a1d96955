// A manager wired to the manual clock and the in-memory fake auth server.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <tokmgr/json/simdjson.hpp>
#include <tokmgr/testing/fake_auth_server.hpp>
#include <tokmgr/testing/fake_transport.hpp>
#include <tokmgr/testing/manual_clock.hpp>
#include <tokmgr/token_manager.hpp>

namespace test {

using namespace std::chrono_literals;
using manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                      tokmgr::memory_storage, tokmgr::simdjson_json>;

inline const std::string password = "correct horse battery staple";

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

}  // namespace test
