// tokmgr/http.hpp — the values a transport policy exchanges: one request in,
// one response out. Plain data with no I/O, like Beast's message beside its
// read/write. A transport knows nothing of tokens.
#pragma once

#include <cctype>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tokmgr {

struct http_header {
    std::string name;
    std::string value;
};

/// One request. `target` is the path and query relative to the transport's
/// base URL ("/api/auth/login"); the transport joins it to the base URL's
/// path. The fields a caller builds from temporaries own their text
/// (`"/api/items/" + std::to_string(id)` is safe).
///
/// `body` alone is borrowed: it views memory the caller keeps alive until
/// `send` returns (or `async_send` completes), and a transport must not keep
/// the view beyond that. It is a view so that the manager's login and refresh
/// bodies, which hold a password or a refresh token, stay in its own `secret`
/// (wiped when destroyed or moved from) rather than being copied into a
/// string nobody wipes. A body built for one call lives in a named variable.
struct http_request {
    std::string method = "POST";
    std::string target;
    std::string content_type = "application/json";
    std::string_view body;  ///< borrowed, see above
    std::vector<http_header> headers;  ///< extra headers, e.g. Authorization
};

/// One response. Header names are kept as received; look them up with
/// `find_header`, which ignores case.
struct http_response {
    int status = 0;
    std::vector<http_header> headers;
    std::string body;

    bool ok() const noexcept { return status >= 200 && status < 300; }
};

namespace detail {

inline bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
            return false;
    }
    return true;
}

/// The target for error messages: the path without its query, which may
/// carry a signature or a key.
inline std::string_view target_for_messages(std::string_view target) noexcept {
    return target.substr(0, target.find('?'));
}

}  // namespace detail

/// The first header named `name` (case-insensitive), or nothing.
inline std::optional<std::string_view> find_header(const std::vector<http_header>& headers,
                                                   std::string_view name) noexcept {
    for (const auto& h : headers)
        if (detail::iequals(h.name, name)) return std::string_view(h.value);
    return std::nullopt;
}

}  // namespace tokmgr
