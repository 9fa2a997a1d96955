// A token manager whose HTTP goes through libcurl instead of Asio.
//
//   curl_transport_example
//       starts the reference server in-process on a loopback port, with
//       4-second JWTs, and shows a login, a use and a refresh ahead of expiry
//   TONIC_TEXTUAL_BASE_URL=https://textual.example.com TONIC_TEXTUAL_USERNAME=... TONIC_TEXTUAL_PASSWORD=... curl_transport_example
//       does the same against a real Textual server
//
// Exits 0 when the manager logged in, a protected call was answered 200 and
// the JWT was refreshed before it expired. Prints no token.
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include <tokmgr/authorizing_transport.hpp>
#include <tokmgr/clock.hpp>
#include <tokmgr/json/simdjson.hpp>
#include <tokmgr/server/reference_server.hpp>
#include <tokmgr/storage/memory.hpp>
#include <tokmgr/token_manager.hpp>

#include "curl_transport.hpp"

using manager_type = tokmgr::token_manager<curl_example::curl_transport, tokmgr::coarse_steady_clock,
                                           tokmgr::memory_storage, tokmgr::simdjson_json>;
/// The API through libcurl too, with the manager's JWT (one retry after a 401).
using api_type = tokmgr::authorizing_transport<curl_example::curl_transport, manager_type>;

namespace {

std::string env(const char* name) {
    const char* value = std::getenv(name);
    return value != nullptr ? value : "";
}

/// One call of the API the JWT is for.
int call_api(api_type& api) {
    tokmgr::http_request request;
    request.method = "GET";
    request.target = "/api/users/me";
    std::error_code ec;
    const auto response = api.send(request, ec);
    if (ec) {
        std::cerr << api.last_error().message() << "\n";
        return 0;
    }
    return response.status;
}

}  // namespace

int main() try {
    std::unique_ptr<tokmgr::server::reference_server> server;
    curl_example::curl_transport::options http_options;
    tokmgr::credentials login;
    std::chrono::milliseconds wait_for_refresh(3900);  // less than the 4 s JWT

    http_options.base_url = env("TONIC_TEXTUAL_BASE_URL");
    if (http_options.base_url.empty()) {
        tokmgr::server::server_options options;
        options.users.emplace("demo", tokmgr::secret("demo-password"));
        options.jwt_ttl = std::chrono::seconds(4);
        server = std::make_unique<tokmgr::server::reference_server>(std::move(options));
        server->start();
        http_options.base_url = server->url();
        login = {"demo", tokmgr::secret("demo-password")};
    } else {
        login = {env("TONIC_TEXTUAL_USERNAME"), tokmgr::secret(env("TONIC_TEXTUAL_PASSWORD"))};
        wait_for_refresh = std::chrono::milliseconds(0);  // real JWTs live 30 minutes: no refresh to show
    }

    manager_type manager(curl_example::curl_transport(http_options), std::move(login));
    api_type api(curl_example::curl_transport(http_options), manager);

    std::error_code ec;
    const auto logged_in_at = std::chrono::steady_clock::now();
    const auto first = manager.get_token(ec);
    if (ec) {
        std::cerr << "login failed: " << manager.last_error().message() << "\n";
        return 1;
    }
    std::cout << "logged in at " << api.endpoint() << " through libcurl: JWT of " << first.size()
              << " characters (" << first << ")\n";
    const std::string first_jwt(first.reveal());  // kept only to tell whether it changed

    const int status = call_api(api);
    std::cout << "GET /api/users/me with the JWT: " << status << "\n";

    // The refresh point of a 4 s JWT falls between about 1.9 and 2.7 s after
    // the login (its exp claim is whole seconds, and the jitter spreads it), so
    // poll rather than sleep a fixed time; any change before the JWT's 4 s are
    // up is a refresh ahead of expiry.
    bool refreshed = true;
    if (wait_for_refresh.count() > 0) {
        const auto deadline = logged_in_at + wait_for_refresh;
        refreshed = false;
        while (!refreshed && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            const auto next = manager.get_token(ec);
            if (ec) break;
            refreshed = next.reveal() != first_jwt;
        }
        const auto after = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                                 logged_in_at);
        std::cout << "after " << after.count() << " ms: " << (refreshed ? "refreshed" : "NOT refreshed")
                  << ", GET /api/users/me: " << call_api(api) << "\n";
    }

    const auto counters = manager.counters();
    std::cout << "logins " << counters.logins << ", refreshes " << counters.refreshes << ", failures "
              << counters.failures << "\n";
    if (server) server->stop();
    return status == 200 && refreshed && counters.logins == 1 ? 0 : 1;
} catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
}
