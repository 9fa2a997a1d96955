// async_service — a small coroutine service on one io_context that awaits the
// JWT for every request it makes to the Textual API.
//
//   async_service <base-url> <user> <seconds> [workers]
//
// The password comes from TONIC_TEXTUAL_PASSWORD. Each worker coroutine loops: await
// the JWT (no thread blocks while a login or refresh is in flight), GET a
// protected resource with it, and count the answer. Its authorizing transport
// does both: it awaits the JWT, and after a 401 retires that JWT and sends
// the request once more (one refresh for all workers). One thread runs it all.
// Exits 0 when every request was answered 2xx, 1 otherwise.
#include <tokmgr/tokmgr.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>

namespace {

struct tally {
    std::uint64_t ok = 0, unauthorized = 0, failed = 0;
};

/// One worker: its own keep-alive connection for the API calls (a transport
/// carries one request at a time, and the manager's flights use their own).
asio::awaitable<void> worker(tokmgr::token_manager<>& manager, tokmgr::asio_transport_options api_options, int id,
                             std::chrono::steady_clock::time_point until, tally& counts) {
    auto executor = co_await asio::this_coro::executor;
    tokmgr::authorizing_transport<tokmgr::asio_transport, tokmgr::token_manager<>> api(
        tokmgr::asio_transport(executor, std::move(api_options)), manager);
    asio::steady_timer pause(executor);
    while (std::chrono::steady_clock::now() < until) {
        std::error_code ec;
        tokmgr::http_request request;
        request.method = "GET";
        const std::string target = "/api/items/" + std::to_string(id);
        request.target = target;
        request.content_type = {};
        tokmgr::http_response response = co_await api.async_send(request, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            std::cerr << "worker " << id << ": " << api.last_error().message() << "\n";
            ++counts.failed;
        } else if (response.status == 401) {
            ++counts.unauthorized;  // refused again after the one retry with a new JWT
        } else if (response.ok()) {
            ++counts.ok;
        } else {
            ++counts.failed;
        }
        pause.expires_after(std::chrono::milliseconds(20));
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::cerr << "usage: async_service <base-url> <user> <seconds> [workers]  (password in TONIC_TEXTUAL_PASSWORD)\n";
        return 2;
    }
    const char* password = std::getenv("TONIC_TEXTUAL_PASSWORD");
    if (password == nullptr) {
        std::cerr << "async_service: set TONIC_TEXTUAL_PASSWORD\n";
        return 2;
    }
    const auto seconds = std::chrono::seconds(std::atoi(argv[3]));
    const int workers = argc > 4 ? std::atoi(argv[4]) : 16;

    asio::io_context io(1);
    tokmgr::asio_transport_options transport_options;
    transport_options.base_url = argv[1];
    try {
        // The manager gets its own transport on the same io_context.
        tokmgr::token_manager<> manager(tokmgr::asio_transport(io.get_executor(), transport_options),
                                        tokmgr::credentials{argv[2], tokmgr::secret(password)});
        tally counts;
        const auto until = std::chrono::steady_clock::now() + seconds;
        for (int i = 0; i < workers; ++i)
            asio::co_spawn(io, worker(manager, transport_options, i, until, counts), asio::detached);
        io.run();
        const auto c = manager.counters();
        std::cout << "requests ok=" << counts.ok << " unauthorized=" << counts.unauthorized
                  << " failed=" << counts.failed << "; logins=" << c.logins << " refreshes=" << c.refreshes
                  << " joined=" << c.joined << "\n";
        return counts.ok > 0 && counts.unauthorized == 0 && counts.failed == 0 ? 0 : 1;
    } catch (const std::exception& e) {
        std::cerr << "async_service: " << e.what() << "\n";
        return 1;
    }
}
