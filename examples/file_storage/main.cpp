// file_storage — several worker processes on one host share one token file:
// one login between them, one refresh per JWT expiry for the whole group.
//
//   file_storage <base-url> <user> <token-file> <workers> <seconds>
//
// The password comes from TONIC_TEXTUAL_PASSWORD. The parent forks the workers
// before anything else runs (no threads, no io_context yet), as a pre-fork
// server does; each worker builds its own manager on the same file and asks
// it for the JWT every 10 ms, then prints its counters. The file's lease
// (flock) makes one of them refresh when the JWT is due; the others find the
// new set in the file and adopt it without a request.
#include <tokmgr/storage/file.hpp>
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

using shared_manager =
    tokmgr::token_manager<tokmgr::asio_transport, tokmgr::coarse_steady_clock, tokmgr::file_storage, tokmgr::simdjson_json>;

int work(const std::string& url, const std::string& user, const std::string& file, int seconds, int id) {
    tokmgr::asio_transport_options transport;
    transport.base_url = url;
    shared_manager manager(tokmgr::asio_transport(transport),
                           tokmgr::credentials{user, tokmgr::secret(std::getenv("TONIC_TEXTUAL_PASSWORD"))}, {}, {},
                           tokmgr::file_storage(file));
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
        std::cerr << "usage: file_storage <base-url> <user> <token-file> <workers> <seconds>  (password in "
                     "TONIC_TEXTUAL_PASSWORD)\n";
        return 2;
    }
    const int workers = std::atoi(argv[4]), seconds = std::atoi(argv[5]);
    std::vector<pid_t> children;
    for (int i = 0; i < workers; ++i) {
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
