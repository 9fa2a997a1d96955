// bench_service.cpp — what tokmgr costs inside a service, as a share of the
// service's own work.
//
// The loop of `tokmgr load`: N threads, each with its own keep-alive
// connection, send GETs to a protected resource of the reference server
// (started in this process, on loopback). Each request's Authorization header
// comes either from a shared token_manager<> (`managed`) or from one JWT
// fetched before the round and never refreshed (`fixed`: no manager at all,
// the least a service can do). Rounds of the two kinds alternate, so drift of
// the machine falls on both; the medians of the rounds are compared. On a
// small shared machine the request rate varies from round to round by more
// than tokmgr costs, so each worker also times its calls for the header: the
// managed rounds' share of time in that call, less the fixed rounds', is
// tokmgr's share of a request, measured directly.
//
// JWT lifetimes of 30 minutes (the default: the manager only ever serves) and
// 4 seconds (the manager refreshes every ~3 s while the crowd goes on).
//
// Usage: bench_service [--threads N] [--rounds K] [--round-seconds S] [--json FILE]
//        (defaults: N = 2 x cores, K = 16, S = 0.6)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <tokmgr/server/reference_server.hpp>
#include <tokmgr/tokmgr.hpp>

namespace {

using std::chrono::steady_clock;

const char* const user = "bench-user";
const char* const password = "bench-password";
const std::string_view resource = "/api/datasets";

struct round_result {
    double requests_per_second = 0;
    std::uint64_t failed = 0;  ///< not 200 (a 401, a network error)
    /// Share of the workers' time spent getting the Authorization value:
    /// the token's own cost in each request, free of the round-to-round
    /// noise of the request rate (the timing itself costs two clock reads,
    /// the same in both modes).
    double header_share = 0;
};

tokmgr::asio_transport_options transport_options(const std::string& base_url) {
    tokmgr::asio_transport_options options;
    options.base_url = base_url;
    return options;
}

/// One round: `threads` workers for `seconds`, each asking `header()` for the
/// Authorization value before every GET.
template <class HeaderSource>
round_result run_round(const std::string& base_url, unsigned threads, double seconds, HeaderSource header) {
    std::atomic<std::uint64_t> ok{0}, failed{0};
    std::atomic<std::int64_t> header_ns{0}, worker_ns{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> workers;
    const auto length = std::chrono::duration_cast<steady_clock::duration>(std::chrono::duration<double>(seconds));
    for (unsigned i = 0; i < threads; ++i) {
        workers.emplace_back([&] {
            tokmgr::asio_transport transport(transport_options(base_url));
            tokmgr::http_request request;
            request.method = "GET";
            request.target = resource;
            request.content_type = {};
            request.headers.push_back({"Authorization", {}});
            std::uint64_t mine_ok = 0, mine_failed = 0;
            steady_clock::duration in_header{0};
            while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
            const auto started = steady_clock::now();
            const auto until = started + length;
            while (steady_clock::now() < until) {
                std::error_code ec;
                const auto asked = steady_clock::now();
                const std::string_view value = header(ec);
                in_header += steady_clock::now() - asked;
                if (ec) {
                    ++mine_failed;
                    continue;
                }
                request.headers.front().value.assign(value.data(), value.size());
                const auto response = transport.send(request, ec);
                if (!ec && response.status == 200) ++mine_ok;
                else ++mine_failed;
            }
            ok += mine_ok;
            failed += mine_failed;
            header_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(in_header).count();
            worker_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(steady_clock::now() - started).count();
        });
    }
    const auto start = steady_clock::now();
    go.store(true, std::memory_order_release);
    for (auto& w : workers) w.join();
    const double elapsed = std::chrono::duration<double>(steady_clock::now() - start).count();
    return {static_cast<double>(ok.load()) / elapsed, failed.load(),
            static_cast<double>(header_ns.load()) / static_cast<double>(worker_ns.load())};
}

/// A JWT fetched once, as a service without a manager would hold it.
std::string fetch_fixed_header(const std::string& base_url) {
    tokmgr::token_manager<> once(tokmgr::asio_transport(transport_options(base_url)),
                                 tokmgr::credentials{user, tokmgr::secret(password)});
    return std::string(once.authorization().reveal());
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct comparison {
    std::string lifetime;
    std::vector<double> fixed, managed;
    std::vector<double> fixed_share, managed_share;
    std::uint64_t failed = 0, refreshes = 0, logins = 0;
    double overhead_percent() const { return (median(fixed) - median(managed)) / median(fixed) * 100.0; }
    /// What the manager adds to each request, as a share of the request.
    double time_share_percent() const { return (median(managed_share) - median(fixed_share)) * 100.0; }
};

comparison compare(std::chrono::seconds jwt_lifetime, const char* label, unsigned threads, int rounds,
                   double seconds) {
    tokmgr::server::server_options options;
    options.users.emplace(user, tokmgr::secret(password));
    options.jwt_ttl = jwt_lifetime;
    options.threads = 2;
    tokmgr::server::reference_server server(std::move(options));
    server.start();
    const std::string base_url = server.url();

    comparison result;
    result.lifetime = label;
    tokmgr::token_manager<> manager(tokmgr::asio_transport(transport_options(base_url)),
                                    tokmgr::credentials{user, tokmgr::secret(password)});
    manager.get_token();  // the login is not part of any round
    for (int round = 0; round < rounds; ++round) {
        // A fresh JWT for each fixed round: a 4 s one outlives a round of
        // a few seconds, and fetching it is not counted.
        const std::string fixed = fetch_fixed_header(base_url);
        const round_result f = run_round(base_url, threads, seconds, [&](std::error_code& ec) {
            ec.clear();
            return std::string_view(fixed);
        });
        const round_result m = run_round(base_url, threads, seconds, [&](std::error_code& ec) {
            return manager.authorization(ec).reveal();
        });
        result.fixed.push_back(f.requests_per_second);
        result.managed.push_back(m.requests_per_second);
        result.fixed_share.push_back(f.header_share);
        result.managed_share.push_back(m.header_share);
        result.failed += f.failed + m.failed;
    }
    const auto counters = manager.counters();
    result.refreshes = counters.refreshes;
    result.logins = counters.logins;
    server.stop();
    return result;
}

}  // namespace

int main(int argc, char** argv) {
    unsigned threads = 2 * std::max(1u, std::thread::hardware_concurrency());
    int rounds = 16;
    double seconds = 0.6;
    std::string json_path;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string_view flag = argv[i];
        if (flag == "--threads") threads = static_cast<unsigned>(std::atoi(argv[i + 1]));
        else if (flag == "--rounds") rounds = std::atoi(argv[i + 1]);
        else if (flag == "--round-seconds") seconds = std::atof(argv[i + 1]);
        else if (flag == "--json") json_path = argv[i + 1];
        else {
            std::fprintf(stderr, "usage: bench_service [--threads N] [--rounds K] [--round-seconds S] [--json FILE]\n");
            return 2;
        }
    }
    if (threads == 0 || rounds <= 0 || !(seconds > 0)) {
        std::fprintf(stderr, "bench_service: --threads, --rounds and --round-seconds must be positive\n");
        return 2;
    }
    std::printf("%u threads, keep-alive GET %.*s against the reference server on loopback; %d alternating rounds"
                " of %.1f s per mode\n",
                threads, static_cast<int>(resource.size()), resource.data(), rounds, seconds);
    std::printf("%-10s %14s %14s %10s %8s %12s %10s %7s\n", "lifetime", "fixed req/s", "managed req/s", "by rate",
                "noise", "by time", "refreshes", "failed");
    std::vector<comparison> all;
    for (auto [lifetime, label] : {std::pair{std::chrono::seconds(1800), "30 min"}, std::pair{std::chrono::seconds(4), "4 s"}}) {
        const comparison c = compare(lifetime, label, threads, rounds, seconds);
        const auto [lo, hi] = std::minmax_element(c.fixed.begin(), c.fixed.end());
        std::printf("%-10s %14.0f %14.0f %9.2f%% %7.1f%% %11.4f%% %10llu %7llu\n", c.lifetime.c_str(),
                    median(c.fixed), median(c.managed), c.overhead_percent(), (*hi - *lo) / median(c.fixed) * 100.0,
                    c.time_share_percent(), static_cast<unsigned long long>(c.refreshes),
                    static_cast<unsigned long long>(c.failed));
        all.push_back(c);
    }
    std::printf("by rate = (fixed - managed) / fixed requests/s, on the medians; noise = (max - min) / median of"
                " the fixed rounds, which an overhead by rate must exceed to mean anything;\n"
                "by time = the workers' time spent getting the Authorization value, managed less fixed: tokmgr's"
                " share of each request\n");
    if (!json_path.empty()) {
        std::ofstream out(json_path);
        out << "{\"threads\": " << threads << ", \"rounds\": " << rounds << ", \"round_seconds\": " << seconds
            << ", \"results\": [";
        for (std::size_t i = 0; i < all.size(); ++i) {
            const auto& c = all[i];
            const auto [lo, hi] = std::minmax_element(c.fixed.begin(), c.fixed.end());
            out << (i ? ", " : "") << "{\"lifetime\": \"" << c.lifetime << "\", \"fixed_rps\": " << median(c.fixed)
                << ", \"managed_rps\": " << median(c.managed) << ", \"overhead_percent\": " << c.overhead_percent()
                << ", \"time_share_percent\": " << c.time_share_percent()
                << ", \"fixed_spread_percent\": " << (*hi - *lo) / median(c.fixed) * 100.0
                << ", \"refreshes\": " << c.refreshes << ", \"failed\": " << c.failed << "}";
        }
        out << "]}\n";
    }
    for (const auto& c : all)
        if (c.failed != 0) {
            std::fprintf(stderr, "bench_service: %llu requests failed with %s JWTs: the figures above do not count\n",
                         static_cast<unsigned long long>(c.failed), c.lifetime.c_str());
            return 1;
        }
    return 0;
}
