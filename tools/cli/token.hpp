// tools/cli/token.hpp — `tokmgr token`: log in and print the JWT, like
// `gcloud auth print-access-token`.
#pragma once

#include <iostream>

#include <tokmgr/tokmgr.hpp>

#include "client_setup.hpp"
#include "exit_status.hpp"
#include "output.hpp"

namespace tokmgr_cli {

inline int run_token(int argc, char** argv) {
    option_spec spec;
    spec.valued = {"url", "user", "ca-file", "proxy"};
    spec.flags = {"insecure"};
    const auto args = parse_options(argc, argv, 2, spec, "token");
    auto options = transport_options(args);
    auto creds = login_credentials(args);

    std::error_code ec;
    tokmgr::asio_transport transport(std::move(options), ec);
    if (ec) {
        print_error("token", transport.last_error().code ? transport.last_error() : tokmgr::error_info{ec, "the transport"});
        return exit_status_for(ec);
    }
    tokmgr::token_manager<> manager(std::move(transport), std::move(creds));
    const auto jwt = manager.get_token(ec);
    if (ec) {
        print_error("token", manager.last_error().code ? manager.last_error() : tokmgr::error_info{ec, "login"});
        return exit_status_for(ec);
    }
    std::cout << jwt.reveal() << '\n' << std::flush;
    return std::cout ? exit_ok : exit_other;
}

}  // namespace tokmgr_cli
