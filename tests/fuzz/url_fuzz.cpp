// The transport's URL parser: no crash, and what it accepts is usable: a
// host, a port, a base path without a trailing slash, and an endpoint that
// parses back to the same place.
#include <tokmgr/transport/detail/url.hpp>

#include "fuzz_target.hpp"

TOKMGR_FUZZ_TARGET(url) {
    const auto text = tokmgr_fuzz::as_text(data, size);
    tokmgr::detail::parsed_url url;
    tokmgr::error_info failed;
    if (!tokmgr::detail::parse_url(text, url, failed)) {
        FUZZ_CHECK(failed && !failed.detail.empty());
        return 0;
    }
    FUZZ_CHECK(!failed);
    FUZZ_CHECK(!url.host.empty());
    FUZZ_CHECK(url.port != 0);
    FUZZ_CHECK(url.base_path.empty() || (url.base_path.front() == '/' && url.base_path.back() != '/'));
    tokmgr::detail::parsed_url again;
    FUZZ_CHECK(tokmgr::detail::parse_url(url.endpoint(), again, failed));
    FUZZ_CHECK(again.host == url.host && again.port == url.port && again.tls == url.tls);
    return 0;
}
