// The proxy rules, without a network: NO_PROXY matching against curl's
// documented rules (CURLOPT_NOPROXY), proxy URLs with credentials, the choice
// between options and environment, and the bytes a proxy is sent.
#include <tokmgr/transport/detail/proxy.hpp>  // first: proves it is self-contained
#include <tokmgr/transport/detail/request_writer.hpp>

#include <ostream>  // before doctest, so it can print std::error_code

#include <doctest/doctest.h>

#include <map>
#include <string>

using tokmgr::errc;
using tokmgr::detail::no_proxy_matches;
using tokmgr::detail::parse_proxy_url;
using tokmgr::detail::parsed_url;
using tokmgr::detail::proxy_route;
using tokmgr::detail::select_proxy;

namespace {

parsed_url origin(std::string_view text) {
    parsed_url url;
    tokmgr::error_info failed;
    REQUIRE(tokmgr::detail::parse_url(text, url, failed));
    return url;
}

struct fake_environment {
    std::map<std::string, std::string> variables;
    tokmgr::detail::environment_reader reader() const {
        return [this](const char* name) {
            const auto it = variables.find(name);
            return it == variables.end() ? std::string() : it->second;
        };
    }
};

struct selection {
    bool ok = false;
    proxy_route route;
    tokmgr::error_info failed;
};

selection select(std::string_view base_url, const fake_environment& env, std::string_view proxy_option = {},
                 std::string_view no_proxy_option = {}, bool use_environment = true) {
    selection s;
    s.ok = select_proxy(origin(base_url), proxy_option, no_proxy_option, use_environment, env.reader(), s.route,
                        s.failed);
    return s;
}

}  // namespace

TEST_SUITE("proxy rules") {

TEST_CASE("NO_PROXY: curl's documented examples") {
    // CURLOPT_NOPROXY: "ample.com" matches ample.com, ample.com:80 and
    // www.ample.com, but not www.example.com or www.ample.com.org.
    CHECK(no_proxy_matches("ample.com", "ample.com"));
    CHECK(no_proxy_matches("ample.com", "www.ample.com"));
    CHECK_FALSE(no_proxy_matches("ample.com", "www.example.com"));
    CHECK_FALSE(no_proxy_matches("ample.com", "www.ample.com.org"));
    // A leading dot is a domain match: ".example.com" covers its subdomains.
    CHECK(no_proxy_matches(".example.com", "www.example.com"));
    CHECK(no_proxy_matches(".example.com", "foo.example.com"));
    CHECK(no_proxy_matches(".example.com", "example.com"));
    // Never a bare suffix without a dot boundary.
    CHECK_FALSE(no_proxy_matches("example.com", "badexample.com"));
    CHECK_FALSE(no_proxy_matches(".example.com", "xexample.com"));
    // "*" alone matches every host; in a list it is only a name.
    CHECK(no_proxy_matches("*", "anything.example"));
    CHECK(no_proxy_matches("*", "10.1.2.3"));
    CHECK(no_proxy_matches("a.example, *", "b.example"));
    CHECK_FALSE(no_proxy_matches("*.example.com", "www.example.com"));
    // An empty list matches nothing.
    CHECK_FALSE(no_proxy_matches("", "example.com"));
    CHECK_FALSE(no_proxy_matches(" , ,", "example.com"));
}

TEST_CASE("NO_PROXY: lists, case, trailing dots and ports") {
    CHECK(no_proxy_matches("localhost,.internal.example,10.0.0.1", "api.internal.example"));
    CHECK(no_proxy_matches("localhost, internal.example", "internal.example"));
    CHECK(no_proxy_matches("a.example b.example", "b.example"));  // curl also splits on spaces
    CHECK(no_proxy_matches("Example.COM", "www.example.com"));
    CHECK(no_proxy_matches("example.com.", "www.example.com"));
    CHECK(no_proxy_matches("example.com", "www.example.com."));
    // Ports in entries are ignored: the host alone decides.
    CHECK(no_proxy_matches("example.com:8443", "example.com"));
    CHECK(no_proxy_matches("[::1]:8080", "::1"));
    CHECK_FALSE(no_proxy_matches("other.example:443", "example.com"));
}

TEST_CASE("NO_PROXY: IP addresses match addresses and CIDR ranges, never name suffixes") {
    CHECK(no_proxy_matches("127.0.0.1", "127.0.0.1"));
    CHECK_FALSE(no_proxy_matches("127.0.0.1", "127.0.0.2"));
    CHECK(no_proxy_matches("192.168.0.0/16", "192.168.7.9"));
    CHECK_FALSE(no_proxy_matches("192.168.0.0/16", "192.169.0.1"));
    CHECK(no_proxy_matches("10.0.0.0/8", "10.255.0.1"));
    CHECK(no_proxy_matches("0.0.0.0/0", "203.0.113.5"));
    CHECK_FALSE(no_proxy_matches("10.0.0.0/33", "10.0.0.1"));  // an impossible prefix matches nothing
    CHECK_FALSE(no_proxy_matches("10.0.0.0/+8", "10.0.0.1"));  // nor one with a sign
    // "0.1" is not a domain of "10.0.0.1": an address is not a name.
    CHECK_FALSE(no_proxy_matches("0.1", "10.0.0.1"));
    // IPv6 as curl wants it (no brackets), and with brackets too.
    CHECK(no_proxy_matches("::1", "::1"));
    CHECK(no_proxy_matches("[::1]", "::1"));
    CHECK(no_proxy_matches("fd00::/8", "fd12:3456::1"));
    CHECK_FALSE(no_proxy_matches("fd00::/8", "fe80::1"));
    CHECK_FALSE(no_proxy_matches("127.0.0.1", "::1"));
    // A name entry never matches an address, nor an address entry a name.
    CHECK_FALSE(no_proxy_matches("localhost", "127.0.0.1"));
    CHECK_FALSE(no_proxy_matches("127.0.0.1", "localhost"));
}

TEST_CASE("proxy URL: host, port, scheme and Basic credentials") {
    proxy_route route;
    tokmgr::error_info failed;
    REQUIRE(parse_proxy_url("http://proxy.corp.example:3128", route, failed));
    CHECK(route.enabled);
    CHECK(route.endpoint == "http://proxy.corp.example:3128");
    CHECK(route.authorization.empty());

    REQUIRE(parse_proxy_url("proxy.corp.example", route, failed));  // no scheme: http, as curl assumes
    CHECK(route.endpoint == "http://proxy.corp.example:1080");        // curl's default proxy port

    REQUIRE(parse_proxy_url("http://[::1]:8080/", route, failed));
    CHECK(route.endpoint == "http://[::1]:8080");
    CHECK(route.address.host_is_ipv6);

    // RFC 7617: "Aladdin:open sesame" → QWxhZGRpbjpvcGVuIHNlc2FtZQ==
    REQUIRE(parse_proxy_url("http://Aladdin:open%20sesame@127.0.0.1:3128", route, failed));
    CHECK(route.authorization.reveal() == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    CHECK(route.endpoint == "http://127.0.0.1:3128");  // never the credentials
    // The last '@' ends the credentials, so an unescaped '@' in the password works.
    REQUIRE(parse_proxy_url("http://u:p@ss@127.0.0.1:3128", route, failed));
    CHECK(route.authorization.reveal() == "Basic " + tokmgr::detail::proxy_text::base64_encode("u:p@ss"));
    CHECK(route.endpoint == "http://127.0.0.1:3128");
}

TEST_CASE("proxy URL: what is refused, without repeating the URL") {
    for (const char* text : {"https://u:hunter2@proxy.example:443", "socks5://u:hunter2@proxy.example:1080",
                             "http://u:hunter2@proxy.example:3128/path", "http://u:hunter2@:3128",
                             "http://u:hunter2@proxy.example:99999", "http://:hunter2@proxy.example:3128",
                             "http://u:hunter2%zz@proxy.example:3128", "http://u:hunter2@proxy.example:3128?x=1"}) {
        INFO(text);
        proxy_route route;
        tokmgr::error_info failed;
        CHECK_FALSE(parse_proxy_url(text, route, failed));
        CHECK(failed.code == errc::invalid_configuration);
        CHECK_FALSE(failed.detail.empty());
        CHECK(failed.detail.find("hunter2") == std::string::npos);
        CHECK(route.authorization.empty());
    }
}

TEST_CASE("choosing the proxy: option over environment, by scheme, as curl does") {
    fake_environment env;
    CHECK_FALSE(select("https://api.example", env).route.enabled);  // nothing set: direct

    env.variables = {{"HTTPS_PROXY", "http://upper:3128"}};
    CHECK(select("https://api.example", env).route.endpoint == "http://upper:3128");
    CHECK(select("https://api.example", env).route.source == "HTTPS_PROXY");
    env.variables["https_proxy"] = "http://lower:3128";  // lower case first, as curl
    CHECK(select("https://api.example", env).route.endpoint == "http://lower:3128");
    CHECK_FALSE(select("http://api.example", env).route.enabled);  // an https proxy variable is for https:// only

    env.variables = {{"http_proxy", "http://plain:3128"}};
    CHECK(select("http://api.example", env).route.endpoint == "http://plain:3128");
    CHECK_FALSE(select("https://api.example", env).route.enabled);
    // HTTP_PROXY in upper case is not read for http:// (httpoxy), as in curl.
    env.variables = {{"HTTP_PROXY", "http://injected:3128"}};
    CHECK_FALSE(select("http://api.example", env).route.enabled);

    env.variables = {{"ALL_PROXY", "http://all:3128"}};
    CHECK(select("http://api.example", env).route.endpoint == "http://all:3128");
    CHECK(select("https://api.example", env).route.endpoint == "http://all:3128");
    env.variables["https_proxy"] = "http://specific:3128";
    CHECK(select("https://api.example", env).route.endpoint == "http://specific:3128");

    // The option wins over the environment; use_environment_proxy = false ignores it.
    CHECK(select("https://api.example", env, "http://option:8080").route.endpoint == "http://option:8080");
    CHECK(select("https://api.example", env, "http://option:8080").route.source == "the proxy option");
    CHECK_FALSE(select("https://api.example", env, {}, {}, false).route.enabled);
    CHECK(select("https://api.example", env, "http://option:8080", {}, false).route.enabled);
}

TEST_CASE("choosing the proxy: NO_PROXY from the option or the environment exempts the host from either proxy") {
    fake_environment env;
    env.variables = {{"https_proxy", "http://p:3128"}, {"NO_PROXY", ".internal.example"}};
    CHECK_FALSE(select("https://auth.internal.example", env).route.enabled);
    CHECK(select("https://auth.example", env).route.enabled);
    env.variables["no_proxy"] = "auth.example";  // lower case first
    CHECK_FALSE(select("https://auth.example", env).route.enabled);
    CHECK(select("https://auth.internal.example", env).route.enabled);
    // The environment's exemptions apply to the proxy option too (as curl's do) ...
    CHECK_FALSE(select("https://auth.example", env, "http://option:8080").route.enabled);
    // ... the no_proxy option replaces them, and use_environment_proxy = false ignores them.
    CHECK(select("https://auth.example", env, "http://option:8080", "other.example").route.enabled);
    CHECK_FALSE(select("https://auth.example", env, "http://option:8080", "*").route.enabled);
    CHECK(select("https://auth.example", env, "http://option:8080", {}, false).route.enabled);
}

TEST_CASE("choosing the proxy: an unusable proxy URL is a configuration error naming its source, not its password") {
    fake_environment env;
    env.variables = {{"HTTPS_PROXY", "https://u:hunter2@p:3128"}};
    const auto s = select("https://api.example", env);
    CHECK_FALSE(s.ok);
    CHECK(s.failed.code == errc::invalid_configuration);
    CHECK(s.failed.detail.find("HTTPS_PROXY") != std::string::npos);
    CHECK(s.failed.detail.find("hunter2") == std::string::npos);
    CHECK_FALSE(s.route.enabled);
    // An exempt host does not care whether the proxy URL is usable.
    env.variables["NO_PROXY"] = "api.example";
    CHECK(select("https://api.example", env).ok);
}

TEST_CASE("what the proxy is sent: CONNECT, and a plain-HTTP request in absolute form") {
    std::string out;
    tokmgr::detail::write_connect_request(origin("https://Auth.Example:8443/textual"), "Basic dTpw", out);
    CHECK(out ==
          "CONNECT auth.example:8443 HTTP/1.1\r\nHost: auth.example:8443\r\nUser-Agent: tokmgr/0.1\r\n"
          "Proxy-Authorization: Basic dTpw\r\n\r\n");
    tokmgr::detail::write_connect_request(origin("https://[::1]"), {}, out);
    CHECK(out == "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nUser-Agent: tokmgr/0.1\r\n\r\n");

    tokmgr::http_request request;
    request.method = "POST";
    request.target = "/api/auth/login";
    request.body = "{}";
    tokmgr::error_info failed;
    tokmgr::detail::proxy_request_form form;
    form.absolute_target = true;
    form.proxy_authorization = "Basic dTpw";
    REQUIRE(
        tokmgr::detail::write_request(origin("http://auth.example:8080/textual"), request, true, out, failed, form));
    CHECK(out.rfind("POST http://auth.example:8080/textual/api/auth/login HTTP/1.1\r\nHost: auth.example:8080\r\n", 0) == 0);
    CHECK(out.find("Proxy-Authorization: Basic dTpw\r\n") != std::string::npos);
    // The caller may not set the proxy's credentials header itself.
    request.headers.push_back({"Proxy-Authorization", "Basic secret-value"});
    CHECK_FALSE(tokmgr::detail::write_request(origin("http://auth.example"), request, true, out, failed));
    CHECK(failed.detail.find("secret-value") == std::string::npos);
}

}  // TEST_SUITE("proxy rules")
