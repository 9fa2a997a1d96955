#include <tokmgr/http.hpp>
#include <tokmgr/testing/fake_transport.hpp>

#include <doctest/doctest.h>

#include <string>
#include <system_error>
#include <vector>

namespace {

// Built the way a caller naturally builds one: every text a temporary that
// is gone when the function returns. Long enough to live on the heap, where
// a view of a freed temporary shows whatever was allocated next.
tokmgr::http_request item_request(int id) {
    tokmgr::http_request request;
    request.method = std::string("PA") + "TCH";
    request.target = "/api/items/" + std::to_string(id) + "?fields=name,owner,created_at";
    request.content_type = std::string("application/") + "merge-patch+json";
    return request;
}

}  // namespace

TEST_CASE("a request built from temporaries keeps its method, target and content type") {
    const tokmgr::http_request request = item_request(12345);
    // Reuse the memory the temporaries freed: a request that viewed them
    // would now show these.
    std::vector<std::string> clobber;
    for (int i = 0; i < 16; ++i) clobber.emplace_back(48, 'x');

    std::string method_seen, target_seen, content_type_seen;
    tokmgr::testing::fake_transport transport([&](const tokmgr::http_request& r) {
        method_seen = r.method;
        target_seen = r.target;
        content_type_seen = r.content_type;
        return tokmgr::http_response{204, {}, {}};
    });
    std::error_code ec;
    CHECK(transport.send(request, ec).status == 204);
    CHECK_FALSE(ec);
    CHECK(method_seen == "PATCH");
    CHECK(target_seen == "/api/items/12345?fields=name,owner,created_at");
    CHECK(content_type_seen == "application/merge-patch+json");
    REQUIRE(transport.requests().size() == 1);
    CHECK(transport.requests()[0].target == "/api/items/12345?fields=name,owner,created_at");
}
