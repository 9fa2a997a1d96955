// bench_round_trip.cpp — one token_refresh request over loopback against the
// reference server: tokmgr's Asio transport against the libcurl transport
// from examples/curl_transport, posting the same request.
//
//   round_trip/<transport>/<http|https>   keep-alive: one connection, reused
//   reconnect/<transport>/https_resumed   a new TLS connection per request,
//                                         resuming the previous TLS session
//   reconnect/<transport>/https_full      a new TLS connection per request,
//                                         full handshake (no session to resume;
//                                         Asio: a new transport per request)
//   new_transport/tokmgr_asio/http        a new Asio transport per request over
//                                         plain HTTP: what a new transport's first
//                                         request costs beyond a reconnection
//   reconnect/<transport>/http            a new TCP connection per request
//   refresh/tokmgr_asio/https             the whole refresh through the
//                                         manager: invalidate(), get_token()
//
// Time is the mean of the timed part (manual time: only `send`, or only the
// manager's refresh); p50_us and p99_us are over the same samples. Each
// request carries the newest refresh token, parsed from the previous answer
// outside the timed part, so the server rotates tokens as it does in service.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <tokmgr/clock.hpp>
#include <tokmgr/json/simdjson.hpp>
#include <tokmgr/server/reference_server.hpp>
#include <tokmgr/storage/memory.hpp>
#include <tokmgr/token_manager.hpp>
#include <tokmgr/transport/asio.hpp>

#include "bench_common.hpp"
#include "curl_transport.hpp"
#include "test_certificate.hpp"

namespace {

using steady = std::chrono::steady_clock;

constexpr const char* user = "bench";
constexpr const char* password = "bench-password";

/// The two loopback servers, started once: plain HTTP and HTTPS.
struct servers {
    std::unique_ptr<tokmgr_test::certificate_files> certificate = tokmgr_test::make_test_certificate();
    tokmgr::server::reference_server http{make_options(false)};
    tokmgr::server::reference_server https{make_options(true)};

    servers() {
        http.start();
        https.start();
    }

    tokmgr::server::server_options make_options(bool tls) const {
        tokmgr::server::server_options options;
        options.users.emplace(user, tokmgr::secret(password));
        options.threads = 1;  // two cores: one for the client, one for the server
        options.auth_rpm_limit = 0;  // thousands of refreshes a second are the point here, not an attack
        if (tls) {
            options.tls_cert_file = certificate->cert_file;
            options.tls_key_file = certificate->key_file;
        }
        return options;
    }

    static servers& get() {
        static servers instance;
        return instance;
    }
};

[[noreturn]] void fail(const char* what, std::error_code ec, int status) {
    std::fprintf(stderr, "round trip: %s failed: %s (status %d)\n", what, ec.message().c_str(), status);
    std::exit(1);
}

/// Posts login once, then token_refresh with the newest refresh token.
class refresher {
public:
    /// Times one `send` of a token_refresh through `transport`; returns seconds.
    template <class Transport>
    double refresh(Transport& transport) {
        if (refresh_token_.empty()) login(transport);
        const std::string body = json_.refresh_body(refresh_token_.reveal());
        tokmgr::http_request request;
        request.target = "/api/auth/token_refresh";
        request.body = body;
        std::error_code ec;
        const auto start = steady::now();
        const tokmgr::http_response response = transport.send(request, ec);
        const auto stop = steady::now();
        if (ec || response.status != 200) fail("token_refresh", ec, response.status);
        take(response);
        return std::chrono::duration<double>(stop - start).count();
    }

private:
    template <class Transport>
    void login(Transport& transport) {
        const std::string body = json_.login_body(user, password);
        tokmgr::http_request request;
        request.target = "/api/auth/login";
        request.body = body;
        std::error_code ec;
        const tokmgr::http_response response = transport.send(request, ec);
        if (ec || response.status != 200) fail("login", ec, response.status);
        take(response);
    }

    void take(const tokmgr::http_response& response) {
        std::error_code ec;
        tokmgr::token_pair pair = json_.parse_token_response(response.body, ec);
        if (ec) fail("parsing the answer", ec, response.status);
        refresh_token_ = std::move(pair.refresh_token);
    }

    tokmgr::simdjson_json json_;
    tokmgr::secret refresh_token_;
};

void report(benchmark::State& state, std::vector<double>& seconds) {
    std::sort(seconds.begin(), seconds.end());
    auto at = [&](double q) { return seconds[static_cast<std::size_t>(q * static_cast<double>(seconds.size() - 1))]; };
    state.counters["p50_us"] = at(0.50) * 1e6;
    state.counters["p99_us"] = at(0.99) * 1e6;
}

// ---- the two transports, configured alike ------------------------------------

struct connection_mode {
    bool tls;
    bool keep_alive;
    bool tls_session_cache;
};

curl_example::curl_transport make_curl(const connection_mode& mode) {
    auto& s = servers::get();
    curl_example::curl_transport::options options;
    options.base_url = mode.tls ? s.https.url() : s.http.url();
    if (mode.tls) options.ca_file = s.certificate->cert_file;
    options.keep_alive = mode.keep_alive;
    options.tls_session_cache = mode.tls_session_cache;
    return curl_example::curl_transport(options);
}

tokmgr::asio_transport make_asio(const connection_mode& mode, int* resumed = nullptr) {
    auto& s = servers::get();
    tokmgr::asio_transport_options options;
    options.base_url = mode.tls ? s.https.url() : s.http.url();
    if (mode.tls) options.ca_file = s.certificate->cert_file;
    options.keep_alive = mode.keep_alive;
    if (resumed != nullptr)
        options.on_event = [resumed](const tokmgr::transport_event& e) {
            if (e.kind == tokmgr::transport_event_kind::tls_session_resumed) ++*resumed;
        };
    return tokmgr::asio_transport(options);
}

// ---- keep-alive round trips and reconnections ----------------------------------

template <class Make>
void run_one_transport(benchmark::State& state, Make make, connection_mode mode) {
    auto transport = make(mode);
    refresher r;
    r.refresh(transport);  // login and first connection: not timed
    std::vector<double> samples;
    for (auto _ : state) {
        const double s = r.refresh(transport);
        state.SetIterationTime(s);
        samples.push_back(s);
    }
    report(state, samples);
}

void curl_round_trip(benchmark::State& state, connection_mode mode) { run_one_transport(state, make_curl, mode); }

void asio_round_trip(benchmark::State& state, connection_mode mode) {
    int resumed = 0;
    run_one_transport(state, [&](const connection_mode& m) { return make_asio(m, &resumed); }, mode);
    if (mode.tls && !mode.keep_alive)
        state.counters["resumed"] = static_cast<double>(resumed) / static_cast<double>(state.iterations());
}

/// The Asio transport has no switch to turn resumption off: a new transport
/// per request has no session to offer. Its construction is not timed, but
/// its first request also starts what Asio starts lazily (the resolver's
/// thread): the same over plain HTTP (`tls` false) measures that part alone.
void asio_new_transport(benchmark::State& state, bool tls) {
    const connection_mode mode{tls, false, false};
    refresher r;
    {
        auto first = make_asio(mode);
        r.refresh(first);
    }
    std::vector<double> samples;
    for (auto _ : state) {
        state.PauseTiming();
        auto transport = make_asio(mode);
        state.ResumeTiming();
        const double s = r.refresh(transport);
        state.SetIterationTime(s);
        samples.push_back(s);
    }
    report(state, samples);
}

// ---- the whole refresh through token_manager -------------------------------------

void manager_refresh(benchmark::State& state) {
    using manager_type = tokmgr::token_manager<>;
    // Every iteration forces a refresh: no floor between forced refreshes
    // (the default 5 s would turn all but the first into hot-path calls).
    tokmgr::manager_options options;
    options.min_forced_refresh_interval = std::chrono::milliseconds(0);
    manager_type manager(make_asio({true, true, true}), tokmgr::credentials{user, tokmgr::secret(password)},
                         std::move(options));
    std::string previous(manager.get_token().reveal());  // logs in: not timed
    std::vector<double> samples;
    for (auto _ : state) {
        manager.invalidate(tokmgr::secret_view(previous));
        const auto start = steady::now();
        const auto jwt = manager.get_token();
        const auto stop = steady::now();
        previous.assign(jwt.reveal());
        const double s = std::chrono::duration<double>(stop - start).count();
        state.SetIterationTime(s);
        samples.push_back(s);
    }
    report(state, samples);
    const auto counters = manager.counters();
    state.counters["logins"] = static_cast<double>(counters.logins);
    state.counters["refreshes"] = static_cast<double>(counters.refreshes);
}

void register_all() {
    struct family {
        const char* name;
        std::function<void(benchmark::State&)> run;
        int iterations;
    };
    const connection_mode http{false, true, true}, https{true, true, true};
    const connection_mode https_resumed{true, false, true}, https_full{true, false, false};
    const connection_mode http_reconnect{false, false, true};
    const family families[] = {
        {"round_trip/tokmgr_asio/http", [=](auto& s) { asio_round_trip(s, http); }, 3000},
        {"round_trip/libcurl/http", [=](auto& s) { curl_round_trip(s, http); }, 3000},
        {"round_trip/tokmgr_asio/https", [=](auto& s) { asio_round_trip(s, https); }, 3000},
        {"round_trip/libcurl/https", [=](auto& s) { curl_round_trip(s, https); }, 3000},
        {"reconnect/tokmgr_asio/http", [=](auto& s) { asio_round_trip(s, http_reconnect); }, 1000},
        {"reconnect/libcurl/http", [=](auto& s) { curl_round_trip(s, http_reconnect); }, 1000},
        {"reconnect/tokmgr_asio/https_resumed", [=](auto& s) { asio_round_trip(s, https_resumed); }, 400},
        {"reconnect/libcurl/https_resumed", [=](auto& s) { curl_round_trip(s, https_resumed); }, 400},
        {"reconnect/tokmgr_asio/https_full", [](auto& s) { asio_new_transport(s, true); }, 400},
        {"reconnect/libcurl/https_full", [=](auto& s) { curl_round_trip(s, https_full); }, 400},
        {"new_transport/tokmgr_asio/http", [](auto& s) { asio_new_transport(s, false); }, 400},
        {"refresh/tokmgr_asio/https", [](auto& s) { manager_refresh(s); }, 2000},
    };
    for (const auto& f : families)
        benchmark::RegisterBenchmark(f.name, f.run)
            ->Iterations(f.iterations)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) { return tokmgr_bench::run_benchmarks(argc, argv, register_all); }
