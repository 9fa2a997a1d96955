// redis_fleet — a fleet of worker processes sharing one Textual account
// through one Redis key, as replicas on several hosts would: one login
// between them, one refresh per JWT expiry for the whole fleet.
//
//   redis_fleet <base-url> <user> <redis-url> <workers> <seconds>
//
// <redis-url> is redis://[:password@]host:port/[<db>/]<key> (or
// redis+unix:///path/to/redis.sock?key=K). The Textual password comes from
// TONIC_TEXTUAL_PASSWORD, the Redis password (if any, and not in the URL) from
// TOKMGR_REDIS_PASSWORD. Each worker is a process with its own manager and
// its own Redis connection, asking for the JWT every 10 ms; it prints its
// counters, and the events that matter to an operator of a fleet: who
// logged in or refreshed, and a private session when Redis is unreachable.
#include <tokmgr/storage/redis.hpp>
#include <tokmgr/tokmgr.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

namespace {

using fleet_manager =
    tokmgr::token_manager<tokmgr::asio_transport, tokmgr::coarse_steady_clock, tokmgr::redis_storage, tokmgr::simdjson_json>;

int work(const std::string& url, const std::string& user, const std::string& redis_url, int seconds, int id) {
    tokmgr::asio_transport_options transport;
    transport.base_url = url;

    tokmgr::redis_options store = tokmgr::redis_options::from_url(redis_url);
    if (const char* password = std::getenv("TOKMGR_REDIS_PASSWORD"); password && store.password.empty())
        store.password = tokmgr::secret(password);
    // The lease must outlive a refresh: the transport's connect, handshake
    // and request timeouts, plus a margin.
    store.lease_ttl = tokmgr::redis_options::lease_ttl_for(transport.connect_timeout + transport.handshake_timeout +
                                                           transport.request_timeout);

    tokmgr::manager_options options;
    options.on_event = [id](const tokmgr::event& e) {
        switch (e.kind) {
        case tokmgr::event_kind::login_succeeded:
        case tokmgr::event_kind::refresh_succeeded:
        case tokmgr::event_kind::private_session_started:
        case tokmgr::event_kind::private_session_ended:
            std::cout << "worker " << id << ": " << tokmgr::to_string(e.kind) << " (generation " << e.generation
                      << ")" << std::endl;
            break;
        default: break;
        }
    };
    fleet_manager manager(tokmgr::asio_transport(transport),
                          tokmgr::credentials{user, tokmgr::secret(std::getenv("TONIC_TEXTUAL_PASSWORD"))}, options, {},
                          tokmgr::redis_storage(std::move(store)));
    std::uint64_t served = 0, failed = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < until) {
        std::error_code ec;
        if (manager.get_token(ec).empty() || ec) {
            ++failed;
            std::cerr << "worker " << id << ": " << manager.last_error().message() << "\n";
        } else {
            ++served;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const auto c = manager.counters();
    std::cout << "worker " << id << ": served=" << served << " failed=" << failed << " logins=" << c.logins
              << " refreshes=" << c.refreshes << std::endl;
    return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 6 || std::getenv("TONIC_TEXTUAL_PASSWORD") == nullptr) {
        std::cerr << "usage: redis_fleet <base-url> <user> <redis-url> <workers> <seconds>  (password in "
                     "TONIC_TEXTUAL_PASSWORD, the Redis password in the URL or TOKMGR_REDIS_PASSWORD)\n";
        return 2;
    }
    const int workers = std::atoi(argv[4]), seconds = std::atoi(argv[5]);
    std::vector<pid_t> children;
    for (int i = 0; i < workers; ++i) {
        // Forked before any thread or connection exists, so each worker is
        // what a separate host would run: its own process, its own connection.
        const pid_t pid = ::fork();
        if (pid == 0) {
            try {
                std::_Exit(work(argv[1], argv[2], argv[3], seconds, i));
            } catch (const std::exception& e) {
                std::cerr << "worker " << i << ": " << e.what() << "\n";
                std::_Exit(1);
            }
        }
        if (pid < 0) return 1;
        children.push_back(pid);
    }
    int failed = 0;
    for (pid_t pid : children) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    std::cout << workers - failed << " of " << workers << " workers served every call" << std::endl;
    return failed == 0 ? 0 : 1;
}
