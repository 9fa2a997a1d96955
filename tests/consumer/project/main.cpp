// A C++17 user of the installed package: the umbrella header and the default
// manager type, built and run against nothing (the login fails fast: nothing
// listens on the port), which is enough to prove it links and reports errors.
#include <tokmgr/tokmgr.hpp>
#include <tokmgr/transport/async.hpp>  // async_send's template, also under separate compilation

#include <asio/io_context.hpp>

#include <iostream>
#include <type_traits>

static_assert(__cplusplus == 201703L, "this consumer proves the C++17 build");
static_assert(std::is_same_v<tokmgr::token_manager<>::transport_type, tokmgr::asio_transport>);
static_assert(std::is_same_v<tokmgr::token_manager<>::json_type, tokmgr::simdjson_json>);

int main() {
    tokmgr::asio_transport_options transport;
    transport.base_url = "http://127.0.0.1:1";  // nothing listens on port 1
    tokmgr::manager_options options;
    options.assumed_lifetimes = tokmgr::lifetimes{};
    tokmgr::token_manager<> manager(tokmgr::asio_transport(transport),
                                    tokmgr::credentials{"user", tokmgr::secret("password")}, options);
    std::error_code ec;
    manager.get_token(ec);
    std::cout << "expected failure: " << manager.last_error().message() << '\n';
    // The asynchronous path, on the caller's io_context.
    asio::io_context io;
    tokmgr::asio_transport async_transport(io.get_executor(), transport);
    tokmgr::http_request request;
    request.target = "/api/auth/login";
    std::error_code async_ec;
    async_transport.async_send(request, [&](std::error_code e, tokmgr::http_response) { async_ec = e; });
    io.run();

    tokmgr::api_key_source key(tokmgr::secret("installed-package-key"));
    return ec == tokmgr::errc::connection_refused && async_ec == tokmgr::errc::connection_refused &&
                   key.authorization().reveal() == "installed-package-key"
               ? 0
               : 1;
}
