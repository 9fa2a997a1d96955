// Everything chosen at compile time: a transport of your own (here the
// in-memory fake auth server), a manually driven clock, in-memory storage,
// simdjson. Seven simulated days of a 30-minute JWT pass in milliseconds,
// with the rotation that a real server would see.
//
// Builds as C++17 without Asio or OpenSSL: only <tokmgr/token_manager.hpp>
// and the policies it is given.
#include <tokmgr/json/simdjson.hpp>
#include <tokmgr/testing/fake_auth_server.hpp>
#include <tokmgr/testing/fake_transport.hpp>
#include <tokmgr/testing/manual_clock.hpp>
#include <tokmgr/token_manager.hpp>

#include <chrono>
#include <iostream>

using namespace std::chrono_literals;

using simulated_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                                tokmgr::memory_storage, tokmgr::simdjson_json>;

int main() {
    tokmgr::testing::manual_clock clock;
    tokmgr::testing::fake_auth_server server(clock);  // 30-minute JWTs, 10,000-minute refresh tokens
    tokmgr::testing::fake_transport transport(server);

    tokmgr::manager_options options;
    options.assumed_lifetimes = tokmgr::lifetimes{};  // the documented defaults, whatever the environment says
    options.on_event = [](const tokmgr::event& e) {
        if (e.kind == tokmgr::event_kind::login_succeeded) std::cout << "logged in (generation " << e.generation << ")\n";
    };
    simulated_manager manager(transport, tokmgr::credentials{"user@example.com", tokmgr::secret("correct horse battery staple")},
                              options, clock);

    std::uint64_t calls = 0;
    for (auto elapsed = 0s; elapsed < 7 * 24h; elapsed += 10s) {  // a request every 10 s for a week
        std::error_code ec;
        const tokmgr::secret_view jwt = manager.get_token(ec);
        if (ec) {
            std::cerr << "get_token failed: " << manager.last_error().message() << '\n';
            return 1;
        }
        (void)jwt;  // a real service would send "Authorization: " + manager.authorization().reveal()
        ++calls;
        clock.advance(10s);
    }
    const auto counters = manager.counters();
    const auto stats = server.stats();
    std::cout << "simulated one week: " << calls << " get_token calls, " << counters.logins << " login, "
              << counters.refreshes << " refreshes; server saw " << stats.refresh_tokens_reused
              << " reused refresh tokens\n"
              << "a JWT prints as " << manager.get_token() << '\n';
    return stats.refresh_tokens_reused == 0 && counters.logins == 1 ? 0 : 1;
}
