// authorizing_transport over the fake transport: the header it sets, one
// forced refresh for a crowd of 401s, one replay per request, and what it
// never replays (a second 401, a single-use body, a 403).
#include "harness.hpp"

#include <tokmgr/api_key.hpp>
#include <tokmgr/authorizing_transport.hpp>
#include <tokmgr/testing/crowd_gate.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

using api_transport = tokmgr::authorizing_transport<tokmgr::testing::fake_transport, test::manager>;

static_assert(tokmgr::is_transport_v<api_transport>);
static_assert(!tokmgr::is_async_transport_v<api_transport>);
#if TOKMGR_HAS_CONCEPTS
static_assert(tokmgr::sync_transport<api_transport>);
#endif

tokmgr::http_request post(std::string_view target, const std::string& body) {
    tokmgr::http_request request;
    request.method = "POST";
    request.target = target;
    request.body = body;
    return request;
}

std::string header_of(const tokmgr::http_request& request) {
    auto value = tokmgr::find_header(request.headers, "Authorization");
    return value ? std::string(*value) : std::string();
}

struct api_fixture {
    test::harness h;
    std::atomic<int> invalidations{0};
    std::unique_ptr<test::manager> manager;
    tokmgr::testing::fake_transport api;  // the resource server's side; the manager has its own

    api_fixture() {
        h.options.on_event = [this](const tokmgr::event& e) {
            if (e.kind == tokmgr::event_kind::invalidated) ++invalidations;
        };
        manager = h.make();
        api.set_handler(h.server);
    }

    std::string current_jwt() { return std::string(manager->get_token().reveal()); }

    /// The JWT every caller now holds, which the server refuses from now on.
    std::string revoke_current() {
        std::string jwt = current_jwt();
        h.server.revoke_jwt(jwt);
        return jwt;
    }
};

}  // namespace

TEST_CASE("authorizing_transport sets Authorization from the manager, replacing the caller's") {
    api_fixture f;
    std::string seen;
    f.api.set_handler([&](const tokmgr::http_request& r) {
        seen = header_of(r);
        return f.h.server(r);
    });
    api_transport api(f.api, *f.manager);
    const std::string target = "/api/datasets";
    auto request = tokmgr::testing::get_request(target);
    request.headers.push_back({"authorization", "Bearer stale"});
    request.headers.push_back({"Accept", "application/json"});
    const auto response = api.send(request);
    CHECK(response.status == 200);
    CHECK(seen == "Bearer " + f.current_jwt());
    CHECK(request.headers.size() == 2);  // the caller's request is left alone
    CHECK(api.counters().requests == 1);
    CHECK(api.counters().replayed == 0);
}

TEST_CASE("64 threads, every request answered 401 for the same JWT at once: one forced refresh, each replayed once") {
    api_fixture f;
    constexpr int threads = 64;
    const std::string old_jwt = f.revoke_current();
    tokmgr::testing::crowd_gate gate(threads);
    std::atomic<int> with_old{0}, with_new{0};
    f.api.set_handler([&](const tokmgr::http_request& r) {
        if (header_of(r) == "Bearer " + old_jwt) {
            ++with_old;
            gate.arrive_and_wait();  // nobody's 401 is answered before every thread sent the old JWT
        } else {
            ++with_new;
        }
        return f.h.server(r);
    });
    std::atomic<int> ok{0}, refused{0}, replayed{0};
    std::vector<std::thread> workers;
    for (int i = 0; i < threads; ++i) {
        workers.emplace_back([&, i] {
            api_transport api(f.api, *f.manager);  // one per thread, as with any transport
            std::error_code ec;
            const std::string target = "/api/items/" + std::to_string(i);
            const auto response = api.send(tokmgr::testing::get_request(target), ec);
            if (!ec && response.status == 200) ++ok;
            refused += static_cast<int>(api.counters().refused);
            replayed += static_cast<int>(api.counters().replayed);
        });
    }
    for (auto& w : workers) w.join();
    CHECK(ok == threads);
    CHECK(refused == threads);
    CHECK(replayed == threads);
    CHECK(with_old == threads);  // the old JWT went out once per request, never in a replay
    CHECK(with_new == threads);
    CHECK(f.invalidations == 1);
    CHECK(f.manager->counters().refreshes == 1);
    CHECK(f.manager->counters().logins == 1);
    const auto stats = f.h.server.stats();
    CHECK(stats.refreshes == 1);
    CHECK(stats.refresh_tokens_reused == 0);
    CHECK(stats.revoked_jwts_presented == threads);
    CHECK(stats.resources_served == threads);
}

TEST_CASE("a 401 for a JWT another caller already replaced forces no refresh, and the request is replayed") {
    api_fixture f;
    const std::string old_jwt = f.revoke_current();
    f.api.set_handler([&](const tokmgr::http_request& r) {
        if (header_of(r) == "Bearer " + old_jwt) {
            // Another caller met the 401 first and got the next JWT.
            std::thread other([&] {
                f.manager->invalidate(tokmgr::secret_view(old_jwt));
                f.manager->get_token();
            });
            other.join();
        }
        return f.h.server(r);
    });
    api_transport api(f.api, *f.manager);
    const auto response = api.send(tokmgr::testing::get_request("/api/items/1"));
    CHECK(response.status == 200);
    CHECK(api.counters().replayed == 1);
    CHECK(f.invalidations == 1);  // the other caller's, not ours
    CHECK(f.manager->counters().refreshes == 1);
    CHECK(f.api.calls() == 2);
}

TEST_CASE("a second 401 after the replay is returned as it came; no loop, and no second forced refresh") {
    api_fixture f;
    const std::string challenge = "Bearer error=\"invalid_token\", error_description=\"revoked\"";
    f.api.set_handler([&](const tokmgr::http_request&) {
        return tokmgr::http_response{401, {{"WWW-Authenticate", challenge}}, R"({"title":"Unauthorized"})"};
    });
    api_transport api(f.api, *f.manager);
    const auto response = api.send(tokmgr::testing::get_request("/api/items/1"));
    CHECK(response.status == 401);
    CHECK(tokmgr::find_header(response.headers, "www-authenticate") == std::string_view(challenge));
    CHECK(response.body == R"({"title":"Unauthorized"})");
    CHECK(f.api.calls() == 2);
    CHECK(api.counters().replayed == 1);
    CHECK(f.manager->counters().refreshes == 1);

    // Within min_forced_refresh_interval the manager keeps the JWT it has:
    // the next 401 is not replayed with the very JWT that was refused.
    const auto again = api.send(tokmgr::testing::get_request("/api/items/2"));
    CHECK(again.status == 401);
    CHECK(f.api.calls() == 3);
    CHECK(f.manager->counters().refreshes == 1);
}

TEST_CASE("a single-use body is never replayed, but its 401 still retires the JWT for the next request") {
    api_fixture f;
    const std::string old_jwt = f.revoke_current();
    api_transport api(f.api, *f.manager);
    const std::string body = R"({"name":"uploaded once"})";
    const auto upload = post("/api/files", body);
    const auto response = api.send(tokmgr::single_use(upload));
    CHECK(response.status == 401);
    CHECK(f.api.calls() == 1);
    CHECK(api.counters().replayed == 0);
    CHECK(f.invalidations == 1);
    CHECK(api.send(tokmgr::testing::get_request("/api/items/1")).status == 200);
    CHECK(f.manager->counters().refreshes == 1);
}

TEST_CASE("a POST body is replayed whole") {
    api_fixture f;
    const std::string old_jwt = f.revoke_current();
    api_transport api(f.api, *f.manager);
    const std::string body = R"({"name":"sent twice"})";
    CHECK(api.send(post("/api/datasets", body)).status == 200);
    const auto sent = f.api.requests();
    REQUIRE(sent.size() == 2);
    CHECK(sent[0].body == body);
    CHECK(sent[1].body == body);
}

TEST_CASE("a 403 is never replayed and retires no JWT") {
    api_fixture f;
    f.api.set_handler([](const tokmgr::http_request&) { return test::status(403); });
    api_transport api(f.api, *f.manager);
    CHECK(api.send(tokmgr::testing::get_request("/api/admin")).status == 403);
    CHECK(f.api.calls() == 1);
    CHECK(f.invalidations == 0);
    CHECK(f.manager->counters().refreshes == 0);
}

TEST_CASE("with an API key a 401 is returned: there is nothing to renew") {
    test::harness h;
    tokmgr::api_key_source key(tokmgr::secret("key-0123456789"));
    std::string seen;
    tokmgr::testing::fake_transport resource([&](const tokmgr::http_request& r) {
        seen = header_of(r);
        return test::status(401);
    });
    tokmgr::authorizing_transport<tokmgr::testing::fake_transport, tokmgr::api_key_source> api(resource, key);
    CHECK(api.send(tokmgr::testing::get_request("/api/items/1")).status == 401);
    CHECK(seen == "key-0123456789");
    CHECK(resource.calls() == 1);
}

TEST_CASE("no error text carries the header: faults injected by count on the API and on the manager") {
    for (std::size_t n = 1; n <= 3; ++n) {
        CAPTURE(n);
        api_fixture f;
        const std::string old_jwt = f.revoke_current();
        f.api.fail_call(n, make_error_code(tokmgr::errc::connection_failed));
        api_transport api(f.api, *f.manager);
        std::error_code ec;
        const auto response = api.send(tokmgr::testing::get_request("/api/items/1"), ec);
        CHECK(f.api.calls() <= 2);
        if (n <= 2) {
            CHECK(ec == tokmgr::errc::connection_failed);
            CHECK(api.last_error().code == ec);
            CHECK(api.last_error().detail.find("/api/items/1") != std::string::npos);
        } else {
            CHECK_FALSE(ec);
            CHECK(response.status == 200);
        }
        const std::string jwt_now = f.current_jwt();
        for (const std::string& text : {api.last_error().message()}) {
            CHECK(text.find(old_jwt) == std::string::npos);
            CHECK(text.find(jwt_now) == std::string::npos);
            CHECK(text.find("Bearer") == std::string::npos);
        }
    }
    {
        api_fixture f;
        const std::string old_jwt = f.revoke_current();  // call 1 of the manager's transport: the login
        f.h.transport.fail_call(2, make_error_code(tokmgr::errc::connection_refused));  // the forced refresh
        api_transport api(f.api, *f.manager);
        try {
            api.send(tokmgr::testing::get_request("/api/items/1"));
            FAIL("the refresh failed: the send must report it");
        } catch (const tokmgr::error& e) {
            CHECK(e.code() == tokmgr::errc::connection_refused);
            const std::string text = e.what();
            CHECK(text.find(old_jwt) == std::string::npos);
            CHECK(text.find("Bearer") == std::string::npos);
        }
        CHECK(f.api.calls() == 1);
    }
}

// The Asio transport keeps a request's query string out of its messages
// (target_for_messages: a query may carry a signed URL or an API key);
// authorizing_transport::transport_failure writes the whole target into
// last_error and the error_info it returns.
TEST_CASE("authorizing_transport: error text leaves out the request's query, as the transport does") {
    api_fixture f;
    f.api.fail_call(1, make_error_code(tokmgr::errc::connection_failed));
    api_transport api(f.api, *f.manager);
    tokmgr::error_info failed;
    api.send(tokmgr::testing::get_request("/api/files?signature=SECRET-SIGNATURE"), failed);
    CHECK(failed.code == tokmgr::errc::connection_failed);
    CHECK(failed.detail.find("SECRET-SIGNATURE") == std::string::npos);
    CHECK(api.last_error().detail.find("SECRET-SIGNATURE") == std::string::npos);
}
