#include <tokmgr/errc.hpp>
#include <tokmgr/error.hpp>

#include <doctest/doctest.h>

#include <system_error>

TEST_CASE("errc values convert to error_code in the tokmgr category with their own messages") {
    const std::error_code ec = tokmgr::errc::credentials_rejected;
    CHECK(ec.category().name() == std::string("tokmgr"));
    CHECK(ec == tokmgr::errc::credentials_rejected);
    CHECK(ec.message() == "the server rejected the user name or password");
    for (int v = 1; v <= static_cast<int>(tokmgr::errc::storage_foreign); ++v)  // the last one
        CHECK(tokmgr::error_category().message(v) != "unknown tokmgr error");
}

TEST_CASE("request_not_sent is true only for failures before any byte left") {
    using tokmgr::errc;
    CHECK(tokmgr::request_not_sent(errc::connection_refused));
    CHECK(tokmgr::request_not_sent(errc::resolve_failed));
    CHECK(tokmgr::request_not_sent(errc::certificate_verification_failed));
    CHECK_FALSE(tokmgr::request_not_sent(errc::timeout));
    CHECK_FALSE(tokmgr::request_not_sent(errc::connection_failed));
    CHECK_FALSE(tokmgr::request_not_sent(std::make_error_code(std::errc::connection_refused)));  // foreign: maybe sent
}

TEST_CASE("is_retryable separates permanent from transient failures") {
    using tokmgr::errc;
    CHECK_FALSE(tokmgr::is_retryable(errc::credentials_rejected));
    CHECK_FALSE(tokmgr::is_retryable(errc::invalid_configuration));
    CHECK(tokmgr::is_retryable(errc::server_error));
    CHECK(tokmgr::is_retryable(errc::timeout));
}

TEST_CASE("tokmgr::error carries the code and the detail") {
    const tokmgr::error e(tokmgr::error_info{tokmgr::errc::timeout, "refresh at https://h:443"});
    CHECK(e.code() == tokmgr::errc::timeout);
    CHECK(std::string(e.what()).find("refresh at https://h:443") != std::string::npos);
    CHECK(std::string(e.what()).find("timed out") != std::string::npos);
}
