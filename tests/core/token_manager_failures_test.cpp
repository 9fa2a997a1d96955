// Failures: fault injection by count, server errors, bad answers, rejected
// credentials, backoff, and the promise that no secret leaks into any text.
#include <tokmgr/detail/json_text.hpp>

#include "harness.hpp"

#include <doctest/doctest.h>

#include <sstream>
#include <vector>

using namespace std::chrono_literals;

namespace {

/// login, then a refresh at the hard threshold, then (past the refresh
/// token's lifetime) a second login; each step must end with a JWT.
struct sequence_result {
    std::vector<std::error_code> errors;
    bool completed = false;
};

sequence_result run_sequence(test::harness& h, test::manager& manager) {
    sequence_result result;
    const auto step = [&] {
        for (int attempt = 0; attempt < 4; ++attempt) {
            std::error_code ec;
            const auto jwt = manager.get_token(ec);
            if (!ec) return !jwt.empty();
            result.errors.push_back(ec);
            h.clock.advance(h.options.backoff_max);  // wait out the backoff
        }
        return false;
    };
    if (!step()) return result;
    h.clock.advance(29min);  // hard threshold of a 30-minute JWT
    if (!step()) return result;
    h.clock.advance(61min);  // past the 60-minute refresh token
    result.completed = step();
    return result;
}

}  // namespace

TEST_CASE("fail the n-th transport call, for every n: right error, no hang, no reused refresh token") {
    for (std::error_code fault : {make_error_code(tokmgr::errc::connection_refused),
                                  make_error_code(tokmgr::errc::timeout),
                                  make_error_code(tokmgr::errc::connection_failed)}) {
        for (std::size_t n = 1;; ++n) {
            CAPTURE(fault.message());
            CAPTURE(n);
            test::harness h(30min, 60min);
            h.transport.fail_call(n, fault);
            auto manager = h.make();
            const auto result = run_sequence(h, *manager);
            CHECK(result.completed);
            CHECK(h.server.stats().refresh_tokens_reused == 0);
            CHECK(h.server.stats().refreshes_rejected == 0);
            if (h.transport.calls() < n) {
                CHECK(result.errors.empty());
                break;  // the sequence made fewer calls than n: every call has had its turn
            }
            REQUIRE(result.errors.size() == 1);
            CHECK(result.errors.front() == fault);
        }
    }
}

TEST_CASE("after a refresh whose answer was lost, the next attempt logs in instead of reusing the token") {
    test::harness h;
    auto manager = h.make();
    manager->get_token();
    h.transport.fail_call(2, tokmgr::errc::timeout);  // the server rotated; the client never heard
    h.clock.advance(30min);
    std::error_code ec;
    manager->get_token(ec);
    CHECK(ec == tokmgr::errc::timeout);
    h.clock.advance(h.options.backoff_max);
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK(h.sent("/api/auth/login") == 2);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("a refresh that never left keeps its refresh token for the next attempt") {
    test::harness h;
    auto manager = h.make();
    manager->get_token();
    h.transport.fail_call(2, tokmgr::errc::connection_refused);
    h.clock.advance(30min);
    std::error_code ec;
    manager->get_token(ec);
    CHECK(ec == tokmgr::errc::connection_refused);
    h.clock.advance(h.options.backoff_max);
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK(h.sent("/api/auth/login") == 1);
    CHECK(h.sent("/api/auth/token_refresh") == 2);
}

TEST_CASE("bad answers to a 2xx are protocol errors that say what was wrong") {
    for (const char* body : {"not json", "[]", R"({"jwt":"a"})", R"({"jwt":1,"refreshToken":"r"})", R"({"jwt":"","refreshToken":"r"})"}) {
        CAPTURE(body);
        test::harness h;
        h.transport.set_handler([&](const tokmgr::http_request&) { return test::status(200, body); });
        auto manager = h.make();
        std::error_code ec;
        CHECK(manager->get_token(ec).empty());
        CHECK(ec == tokmgr::errc::protocol_error);
        CHECK(manager->last_error().detail.find("\"refreshToken\"") != std::string::npos);
    }
}

TEST_CASE("server statuses map to errc values a caller can act on") {
    const std::pair<int, tokmgr::errc> cases[] = {
        {302, tokmgr::errc::unexpected_redirect}, {400, tokmgr::errc::request_rejected},
        {401, tokmgr::errc::credentials_rejected}, {403, tokmgr::errc::credentials_rejected},
        {404, tokmgr::errc::request_rejected}, {429, tokmgr::errc::rate_limited},
        {500, tokmgr::errc::server_error}, {503, tokmgr::errc::service_unavailable}};
    for (const auto& [code, expected] : cases) {
        CAPTURE(code);
        test::harness h;
        h.transport.set_handler([code = code](const tokmgr::http_request&) {
            return test::status(code, R"({"title":"Something","detail":"went wrong"})");
        });
        auto manager = h.make();
        std::error_code ec;
        manager->get_token(ec);
        CHECK(ec == expected);
        CHECK(manager->last_error().detail == "login at fake://textual: status " + std::to_string(code) + ": went wrong");
    }
}

TEST_CASE("rejected credentials: every caller gets the error and the server is not hammered") {
    test::harness h;
    auto manager = h.make("wrong password");
    for (int i = 0; i < 100; ++i) {
        std::error_code ec;
        CHECK(manager->get_token(ec).empty());
        CHECK(ec == tokmgr::errc::credentials_rejected);
        h.clock.advance(1s);
    }
    CHECK(h.transport.calls() == 1);
    h.clock.advance(h.options.rejected_credentials_backoff);
    std::error_code ec;
    manager->get_token(ec);
    CHECK(h.transport.calls() == 2);  // one more try after the pause, not a loop
}

TEST_CASE("backoff doubles after consecutive failures and honours Retry-After") {
    test::harness h;
    h.options.backoff_initial = 1s;
    h.options.backoff_max = 8s;
    h.transport.set_handler([](const tokmgr::http_request&) { return test::status(500); });
    auto manager = h.make();
    std::error_code ec;
    manager->get_token(ec);
    CHECK(h.transport.calls() == 1);
    h.clock.advance(400ms);  // under half the first delay: still backing off
    manager->get_token(ec);
    CHECK(h.transport.calls() == 1);
    h.clock.advance(600ms);
    manager->get_token(ec);
    CHECK(h.transport.calls() == 2);
    h.clock.advance(900ms);  // the second delay is at least 1 s
    manager->get_token(ec);
    CHECK(h.transport.calls() == 2);

    h.transport.set_handler([](const tokmgr::http_request&) {
        return tokmgr::http_response{429, {{"retry-after", "120"}}, "{}"};
    });
    h.clock.advance(8s);
    manager->get_token(ec);
    CHECK(ec == tokmgr::errc::rate_limited);
    const auto calls = h.transport.calls();
    h.clock.advance(119s);
    manager->get_token(ec);
    CHECK(h.transport.calls() == calls);
    h.clock.advance(13s);  // Retry-After plus its jitter of at most 10%
    manager->get_token(ec);
    CHECK(h.transport.calls() == calls + 1);
}

TEST_CASE("no secret appears in errors, exceptions, events or streamed values") {
    test::harness h;
    std::vector<std::string> texts;
    h.options.on_event = [&](const tokmgr::event& e) {
        texts.push_back(tokmgr::to_string(e.kind) + std::string(" ") + e.error.message());
    };
    auto manager = h.make();
    const std::string jwt(manager->get_token().reveal());
    const std::string refresh_token = h.server.current_refresh_token();
    // A server that echoes what it was sent in its error message (as valid
    // JSON, so the message really reaches the manager's error text).
    h.transport.set_handler([&](const tokmgr::http_request& r) {
        std::string body = R"({"message":)";
        tokmgr::detail::append_json_string(body, "you sent " + std::string(r.body));
        body += '}';
        return test::status(r.target == "/api/auth/login" ? 401 : 500, body);
    });
    h.clock.advance(30min);
    std::error_code ec;
    manager->get_token(ec);
    texts.push_back(manager->last_error().message());
    h.clock.advance(1h);
    try {
        manager->get_token();
    } catch (const tokmgr::error& e) {
        texts.push_back(e.what());
        texts.push_back(e.info().message());
    }
    std::ostringstream streamed;
    streamed << manager->get_token_handle(ec).jwt() << tokmgr::secret(test::password);
    texts.push_back(streamed.str());
    REQUIRE(texts.size() >= 4);
    std::size_t redactions = 0;
    for (const auto& text : texts) redactions += text.find("[redacted]") != std::string::npos;
    CHECK(redactions >= 3);  // the echoed refresh token, the echoed password, the streamed secrets
    for (const auto& text : texts) {
        CAPTURE(text);
        CHECK(text.find(test::password) == std::string::npos);
        CHECK(text.find(refresh_token) == std::string::npos);
        CHECK(text.find(jwt) == std::string::npos);
    }
}

TEST_CASE("counters and events follow login, refresh and failure; hooks run without locks") {
    test::harness h;
    std::vector<tokmgr::event_kind> kinds;
    test::manager* self = nullptr;
    h.options.on_event = [&](const tokmgr::event& e) {
        kinds.push_back(e.kind);
        if (self != nullptr) (void)self->last_error();  // would deadlock if called under the manager's lock
    };
    auto manager = h.make();
    self = manager.get();
    manager->get_token();
    h.clock.advance(25min);
    manager->get_token();
    h.transport.fail_call(3, tokmgr::errc::connection_refused);
    h.clock.advance(30min);
    std::error_code ec;
    manager->get_token(ec);
    using k = tokmgr::event_kind;
    const std::vector<k> expected{k::login_started, k::login_succeeded, k::refresh_started, k::refresh_succeeded,
                                  k::refresh_started, k::refresh_failed};
    CHECK(kinds == expected);
    const auto counters = manager->counters();
    CHECK(counters.logins == 1);
    CHECK(counters.refreshes == 2);
    CHECK(counters.failures == 1);
}

TEST_CASE("a storage that cannot store does not lose the token set") {
    struct failing_storage {
        std::optional<tokmgr::token_set> load(std::error_code& ec) {
            ec.clear();
            return std::nullopt;
        }
        void store(const tokmgr::token_set&, std::error_code& ec) { ec = std::make_error_code(std::errc::read_only_file_system); }
    };
    test::harness h;
    tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock, failing_storage,
                          tokmgr::simdjson_json>
        manager(h.transport, tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)}, h.options,
                h.clock);
    std::error_code ec;
    CHECK_FALSE(manager.get_token(ec).empty());
    CHECK_FALSE(ec);
    CHECK(manager.last_error().detail.find("storing") != std::string::npos);
}

TEST_CASE("invalid options are refused at construction with the reason") {
    test::harness h;
    h.options.jitter_fraction = 2;
    CHECK_THROWS_AS(h.make(), tokmgr::error);
}

TEST_CASE("a server that echoes a very short password has its message dropped, not shown") {
    test::harness h;
    h.server = tokmgr::testing::fake_auth_server(h.clock, test::harness::settings(30min, 10000min));
    h.transport.set_handler([](const tokmgr::http_request&) {
        return test::status(401, R"({"detail":"wrong password: pw1"})");
    });
    auto manager = h.make("pw1");
    std::error_code ec;
    manager->get_token(ec);
    CHECK(ec == tokmgr::errc::credentials_rejected);
    CHECK(manager->last_error().detail == "login at fake://textual: status 401");
}
