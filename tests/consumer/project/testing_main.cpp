// A C++17 user of the installed tokmgr::testing alone, as a service's test
// suite would be: the fake auth server behind the fake transport, on a
// manual clock, answering a login. Linking only tokmgr::testing must not
// bring in what the default policies need.
#include <tokmgr/testing/fake_auth_server.hpp>
#include <tokmgr/testing/fake_transport.hpp>
#include <tokmgr/testing/manual_clock.hpp>

#include <iostream>
#include <string>

#ifdef ASIO_STANDALONE
#error "tokmgr::testing brought in tokmgr::tokmgr (Asio); it must need tokmgr::core only"
#endif

int main() {
    tokmgr::testing::manual_clock clock;
    const tokmgr::testing::fake_auth_server::settings account;
    tokmgr::testing::fake_auth_server server(clock, account);
    tokmgr::testing::fake_transport transport(server);

    const std::string body = "{\"userName\":\"" + account.user_name + "\",\"password\":\"" + account.password + "\"}";
    tokmgr::http_request request;  // views: `body` outlives it
    request.target = "/api/auth/login";
    request.body = body;
    std::error_code ec;
    const auto response = transport.send(request, ec);
    std::cout << "fake login: status " << response.status << '\n';
    return !ec && response.status == 200 && server.stats().logins == 1 && transport.calls() == 1 ? 0 : 1;
}
