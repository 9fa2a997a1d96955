// The Protocol policy: a manager speaks whatever protocol it is given, and
// the parts of a flight that are not the protocol's (rotation, single flight,
// fallback to a login, redaction) work unchanged for it.
#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

#include "harness.hpp"

namespace {

using namespace std::chrono_literals;

/// Not OAuth 2.0, but shaped like it: a form body, a Basic header, its own
/// endpoint, an answer that is not JSON, opaque tokens with expires_in, and
/// a refresh answer that may keep the old refresh token.
struct form_protocol {
    template <class Json>
    tokmgr::token_request login_request(const tokmgr::credentials& login, std::string_view, const Json&) const {
        return request("grant_type=password&username=" + login.user_name +
                       "&password=" + std::string(login.password.reveal()));
    }
    template <class Json>
    tokmgr::token_request refresh_request(std::string_view refresh_token, std::string_view, const Json&) const {
        return request("grant_type=refresh_token&refresh_token=" + std::string(refresh_token));
    }
    /// `access refresh expires_in`, the refresh token "-" when there is none.
    template <class Json>
    tokmgr::token_answer read_tokens(std::string_view body, const Json&, std::error_code& ec) const {
        tokmgr::token_answer answer;
        const auto first = body.find(' '), second = body.rfind(' ');
        if (first == std::string_view::npos || first == second) {
            ec = tokmgr::errc::protocol_error;
            return answer;
        }
        answer.access_token = tokmgr::secret(body.substr(0, first));
        const std::string_view refresh = body.substr(first + 1, second - first - 1);
        if (refresh != "-") answer.refresh_token = tokmgr::secret(refresh);
        answer.expires_in = std::chrono::seconds(std::stoll(std::string(body.substr(second + 1))));
        return answer;
    }
    std::string answer_shape() const { return "`access refresh expires_in`"; }
    template <class Json>
    tokmgr::errc classify(tokmgr::token_call call, int status, std::string_view body, const Json&) const {
        if (status == 400 && body == "invalid_grant" && call == tokmgr::token_call::refresh)
            return tokmgr::errc::refresh_rejected;
        if (status == 400 || status == 401) return tokmgr::errc::credentials_rejected;
        return tokmgr::errc::server_error;
    }
    template <class Json>
    std::string error_message(std::string_view body, const Json&) const {
        return std::string(body);
    }

    static tokmgr::token_request request(std::string body) {
        tokmgr::token_request built;
        built.target = "/oauth/token";
        built.content_type = "application/x-www-form-urlencoded";
        built.headers.push_back({"Authorization", "Basic Y2xpZW50OnNlY3JldA=="});
        built.body = tokmgr::secret(std::move(body));
        return built;
    }
};

static_assert(tokmgr::is_token_protocol_v<form_protocol, tokmgr::simdjson_json>);
static_assert(tokmgr::is_token_protocol_v<tokmgr::textual_protocol, tokmgr::simdjson_json>);

using form_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                           tokmgr::memory_storage, tokmgr::simdjson_json, form_protocol>;

struct seen {
    std::string content_type, authorization, body, target;
};

struct form_server {
    std::vector<seen> requests;
    std::vector<tokmgr::http_response> answers;  // in order; the last repeats

    tokmgr::testing::fake_transport transport() {
        return tokmgr::testing::fake_transport([this](const tokmgr::http_request& r) {
            auto auth = tokmgr::find_header(r.headers, "authorization");
            requests.push_back({r.content_type, auth ? std::string(*auth) : "", std::string(r.body), r.target});
            const std::size_t i = std::min(requests.size(), answers.size()) - 1;
            return answers[i];
        });
    }
};

/// A manager on a form_server that gives `answers` in turn.
struct scripted {
    form_server server;
    tokmgr::testing::manual_clock clock;
    std::unique_ptr<form_manager> manager;

    explicit scripted(std::vector<tokmgr::http_response> answers) {
        server.answers = std::move(answers);
        tokmgr::manager_options options;
        options.assumed_lifetimes = tokmgr::lifetimes{30min, 10000min};
        options.jitter_fraction = 0;
        options.jitter_seed = 42;
        manager = std::make_unique<form_manager>(
            server.transport(), tokmgr::credentials{"svc", tokmgr::secret("pa55word")}, options, clock);
    }

    /// The token served `later`, or the error's code.
    std::string token_after(std::chrono::seconds later, std::error_code& ec) {
        clock.advance(later);
        return std::string(manager->get_token(ec).reveal());
    }
    std::string token_after(std::chrono::seconds later = 0s) {
        std::error_code ec;
        return token_after(later, ec);
    }
};

}  // namespace

TEST_CASE("a protocol policy builds the request: its target, content type, headers and body") {
    scripted s({test::status(200, "opaque-1 rt-1 3600")});
    CHECK(s.token_after() == "opaque-1");
    REQUIRE(s.server.requests.size() == 1);
    CHECK(s.server.requests[0].target == "/oauth/token");
    CHECK(s.server.requests[0].content_type == "application/x-www-form-urlencoded");
    CHECK(s.server.requests[0].authorization == "Basic Y2xpZW50OnNlY3JldA==");
    CHECK(s.server.requests[0].body == "grant_type=password&username=svc&password=pa55word");
}

TEST_CASE("a protocol policy's expires_in sets the lifetime of an opaque token, not the configured one") {
    scripted s({test::status(200, "opaque-1 rt-1 60"), test::status(200, "opaque-2 rt-2 60")});
    CHECK(s.token_after() == "opaque-1");
    CHECK(s.token_after(61s) == "opaque-2");  // far inside the configured 30 minutes
    REQUIRE(s.server.requests.size() == 2);
    CHECK(s.server.requests[1].body == "grant_type=refresh_token&refresh_token=rt-1");
    CHECK(s.manager->counters().refreshes == 1);
}

TEST_CASE("an answer to a refresh without a refresh token keeps the one sent") {
    scripted s({test::status(200, "opaque-1 rt-1 60"), test::status(200, "opaque-2 - 60"),
                test::status(200, "opaque-3 rt-3 60")});
    CHECK(s.token_after() == "opaque-1");
    CHECK(s.token_after(61s) == "opaque-2");
    CHECK(s.token_after(61s) == "opaque-3");
    REQUIRE(s.server.requests.size() == 3);
    CHECK(s.server.requests[2].body == "grant_type=refresh_token&refresh_token=rt-1");
    CHECK(s.manager->counters().logins == 1);
}

TEST_CASE("a grant the protocol calls dead falls back to one login") {
    scripted s({test::status(200, "opaque-1 rt-1 60"), test::status(400, "invalid_grant"),
                test::status(200, "opaque-2 rt-2 60")});
    CHECK(s.token_after() == "opaque-1");
    CHECK(s.token_after(61s) == "opaque-2");
    CHECK(s.manager->counters().logins == 2);
    CHECK(s.server.requests[2].body == "grant_type=password&username=svc&password=pa55word");
}

TEST_CASE("what the protocol says a failure means is the error; the server's words reach it, redacted") {
    scripted s({test::status(401, "no such client; you sent pa55word")});
    std::error_code ec;
    CHECK(s.token_after(0s, ec).empty());
    CHECK(ec == tokmgr::errc::credentials_rejected);
    const std::string detail = s.manager->last_error().detail;
    CHECK(detail.find("status 401") != std::string::npos);
    CHECK(detail.find("no such client") != std::string::npos);
    CHECK(detail.find("pa55word") == std::string::npos);
}

TEST_CASE("a 2xx answer the protocol cannot read is a protocol error that names the protocol's shape") {
    scripted s({test::status(200, "{}")});
    std::error_code ec;
    CHECK(s.token_after(0s, ec).empty());
    CHECK(ec == tokmgr::errc::protocol_error);
    CHECK(s.manager->last_error().detail.find("`access refresh expires_in`") != std::string::npos);
}

TEST_CASE("expires_in of zero or less is a token expired on arrival") {
    scripted s({test::status(200, "opaque-1 rt-1 0")});
    std::error_code ec;
    CHECK(s.token_after(0s, ec).empty());
    CHECK(ec == tokmgr::errc::protocol_error);
}

TEST_CASE("textual_protocol sends today's Textual requests and reads answers by today's rules") {
    const tokmgr::textual_protocol textual;
    const tokmgr::simdjson_json json;
    const tokmgr::credentials login{"jdoe@company.com", tokmgr::secret("My\"Pass\\word\n!")};
    const auto first = textual.login_request(login, "/api/auth/login", json);
    CHECK(first.method == "POST");
    CHECK(first.target == "/api/auth/login");
    CHECK(first.content_type == "application/json");
    CHECK(first.headers.empty());
    CHECK(first.body.reveal() == tokmgr::protocol::login_request_json(login.user_name, login.password.reveal()));
    const auto again = textual.refresh_request("rt-1", "/api/auth/token_refresh", json);
    CHECK(again.body.reveal() == tokmgr::protocol::refresh_request_json("rt-1"));

    std::error_code ec;
    const auto tokens = textual.read_tokens(R"({"jwt":"a.b.c","refreshToken":"r1","user":{}})", json, ec);
    CHECK_FALSE(ec);
    CHECK(tokens.access_token.reveal() == "a.b.c");
    CHECK(tokens.refresh_token.reveal() == "r1");
    CHECK_FALSE(tokens.expires_in);
    for (const char* body : {R"({"jwt":"a.b.c"})", R"({"jwt":"","refreshToken":"r1"})", R"({"jwt":1,"refreshToken":"r"})"}) {
        CAPTURE(body);
        textual.read_tokens(body, json, ec);
        CHECK(ec == tokmgr::errc::protocol_error);
    }

    for (int status : {301, 400, 401, 403, 404, 429, 500, 503}) {
        CAPTURE(status);
        CHECK(textual.classify(tokmgr::token_call::login, status, "", json) ==
              tokmgr::protocol::error_for_status(tokmgr::protocol::call::login, status));
        CHECK(textual.classify(tokmgr::token_call::refresh, status, "", json) ==
              tokmgr::protocol::error_for_status(tokmgr::protocol::call::refresh, status));
    }
    CHECK(textual.error_message(R"({"title":"T","detail":"","errorMessage":"E"})", json) == "T");
    CHECK(textual.error_message("<html>502</html>", json).empty());
}
