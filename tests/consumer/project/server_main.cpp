// A C++17 user of the installed tokmgr::server alone: the reference server
// starts on a free loopback port, says where, and stops.
#include <tokmgr/server/reference_server.hpp>

#include <iostream>

int main() {
    tokmgr::server::reference_server server(tokmgr::server::server_options{});  // a free port
    std::error_code ec;
    server.start(ec);
    if (ec) {
        std::cout << "start failed: " << server.last_error().message() << '\n';
        return 1;
    }
    const auto url = server.url();
    std::cout << "reference server at " << url << '\n';
    server.stop();
    return url.rfind("http://127.0.0.1:", 0) == 0 && server.stats().requests == 0 ? 0 : 1;
}
