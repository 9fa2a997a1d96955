// tools/cli/load.cpp — `tokmgr load`. Each thread has its own authorizing
// transport (its own keep-alive connection) for the resource, on the shared
// manager: it sets the JWT on every request, and after a 401 retires that
// JWT and sends the request once more with the next one. Counts:
// `requests` is the number of loop iterations; each ends as exactly one of
// `ok`, `unauthorized` (still 401 after the one retry) or `errors` (no
// token, a network failure, another status).
#include "load.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

#include <tokmgr/tokmgr.hpp>

#include "client_setup.hpp"
#include "exit_status.hpp"
#include "output.hpp"
#include "store.hpp"

namespace tokmgr_cli {

namespace {

/// Set by SIGTERM or SIGINT: every worker stops and the run is reported as
/// if its duration had ended (a test or an operator ends a long run early).
std::atomic<bool>& load_stop_requested() {
    static std::atomic<bool> requested{false};
    return requested;
}
extern "C" void request_load_stop(int) { load_stop_requested().store(true); }

template <class Manager>
class load_run {
public:
    load_run(Manager& manager, tokmgr::asio_transport_options options, std::string path)
        : manager_(manager), options_(std::move(options)), path_(std::move(path)) {}

    void run(unsigned threads, std::chrono::steady_clock::duration duration) {
        const auto deadline = std::chrono::steady_clock::now() + duration;
        std::vector<std::thread> workers;
        workers.reserve(threads);
        for (unsigned i = 0; i < threads; ++i) workers.emplace_back([this, deadline] { worker(deadline); });
        for (auto& w : workers) w.join();
    }

    std::string summary_json() const {
        const auto counters = manager_.counters();
        return "{\"requests\": " + std::to_string(requests_) + ", \"ok\": " + std::to_string(ok_) +
               ", \"unauthorized\": " + std::to_string(unauthorized_) + ", \"errors\": " + std::to_string(errors_) +
               ", \"logins\": " + std::to_string(counters.logins) +
               ", \"refreshes\": " + std::to_string(counters.refreshes) + "}";
    }

    bool clean() const { return errors_ == 0 && unauthorized_ == 0; }
    std::uint64_t unauthorized() const { return unauthorized_; }

    /// The first failure seen, for the one stderr line and the exit status.
    tokmgr::error_info first_error() const {
        std::lock_guard<std::mutex> lock(error_mutex_);
        return first_error_;
    }

private:
    enum class outcome { ok, unauthorized, failed };

    void record(const tokmgr::error_info& info) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!first_error_) first_error_ = info;
    }

    /// One GET with the current JWT, sent again once after a 401.
    outcome attempt(tokmgr::authorizing_transport<tokmgr::asio_transport, Manager>& api) {
        tokmgr::http_request request;
        request.method = "GET";
        request.target = path_;
        request.content_type = {};
        tokmgr::error_info failed;
        // This call's own failure: last_error() may already hold another
        // thread's (or be empty after its success).
        const auto response = api.send(request, failed);
        if (failed) {
            record(failed);
            // Nothing will change if the server refuses the password or
            // the URL is wrong: stop every thread instead of hammering it.
            if (!tokmgr::is_retryable(failed.code)) stop_ = true;
            return outcome::failed;
        }
        if (response.status == 401) return outcome::unauthorized;
        if (response.ok()) return outcome::ok;
        record({make_error_code(tokmgr::errc::request_rejected),
                "GET " + path_ + " answered status " + std::to_string(response.status)});
        return outcome::failed;
    }

    void worker(std::chrono::steady_clock::time_point deadline) {
        std::error_code ec;
        tokmgr::asio_transport transport(options_, ec);
        if (ec) {
            record(failure_of(transport.last_error(), ec, "the transport"));
            stop_ = true;
            ++errors_;
            return;
        }
        tokmgr::authorizing_transport<tokmgr::asio_transport, Manager> api(std::move(transport), manager_);
        while (!stop_ && !load_stop_requested().load() && std::chrono::steady_clock::now() < deadline) {
            ++requests_;
            switch (attempt(api)) {
            case outcome::ok: ++ok_; break;
            case outcome::unauthorized:
                ++unauthorized_;
                record({make_error_code(tokmgr::errc::request_rejected),
                        "GET " + path_ + " answered 401, and again to the one retry with another JWT (or there "
                        "was no other JWT to retry with)"});
                break;
            case outcome::failed:
                ++errors_;
                // The manager answers at once during its backoff: pause so a
                // failure does not turn into a busy loop.
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
                break;
            }
        }
    }

    Manager& manager_;
    const tokmgr::asio_transport_options options_;
    const std::string path_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> requests_{0}, ok_{0}, unauthorized_{0}, errors_{0};
    mutable std::mutex error_mutex_;
    tokmgr::error_info first_error_;
};

/// Runs the load and reports it: one JSON line, and the first error.
template <class Manager>
int report_load(Manager& manager, const tokmgr::asio_transport_options& options, const std::string& path,
                unsigned thread_count, double seconds) {
    load_run<Manager> run(manager, options, path);
    load_stop_requested().store(false);  // initialised before a handler can touch it
    std::signal(SIGTERM, request_load_stop);
    std::signal(SIGINT, request_load_stop);
    run.run(thread_count, std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(seconds)));
    std::cout << run.summary_json() << std::endl;
    if (run.clean()) return exit_ok;
    const auto failure = run.first_error();
    print_error("load", failure);
    if (failure.code == tokmgr::errc::request_rejected && run.unauthorized() > 0) return exit_rejected;
    return exit_status_for(failure.code);
}

}  // namespace

int run_load(int argc, char** argv) {
    option_spec spec;
    spec.valued = {"url", "user", "threads", "duration", "path", "ca-file", "store", "lease-wait", "lease-ttl",
                   "store-ca-file", "store-cert-file", "store-key-file", "proxy"};
    const auto args = parse_options(argc, argv, 2, spec, "load");
    const auto threads = args.get("threads"), duration = args.get("duration"), path = args.get("path");
    if (!threads || !duration || !path) throw usage_error{"load needs --threads N, --duration SECONDS and --path PATH"};
    const auto thread_count = static_cast<unsigned>(parse_integer(*threads, 1, 4096, "--threads"));
    const double seconds = parse_positive_seconds(*duration, 24 * 3600, "--duration");
    if (path->empty() || path->front() != '/') throw usage_error{"--path must start with / (e.g. /api/datasets)"};
    auto options = transport_options(args);
    auto creds = login_credentials(args);

    std::error_code ec;
    tokmgr::asio_transport auth_transport(options, ec);
    if (ec) return report_failure("load", auth_transport.last_error(), ec, "the transport");
    if (auto store = args.get("store")) {
        // Every process started with the same --store shares one token set:
        // one login between them, one refresh per expiry for the group.
        if (store->empty()) throw usage_error{"--store takes a file path, a redis://host:port/[db/]key URL or a postgresql://host:port/db?key=K URL"};
        return with_store(args, *store, [&](auto storage) {
            using storage_type = decltype(storage);
            tokmgr::token_manager<tokmgr::asio_transport, tokmgr::steady_clock, storage_type, tokmgr::simdjson_json>
                manager(std::move(auth_transport), std::move(creds), manager_options_from(args), {},
                        std::move(storage));
            return report_load(manager, options, *path, thread_count, seconds);
        });
    }
    if (args.get("lease-ttl")) throw usage_error{"--lease-ttl goes with --store redis://... or postgresql://..."};
    tokmgr::token_manager<> manager(std::move(auth_transport), std::move(creds));
    return report_load(manager, options, *path, thread_count, seconds);
}

}  // namespace tokmgr_cli
