// tokmgr/detail/percent.hpp — RFC 3986 percent-decoding, for the parts of a
// URL that carry a user name, a password or a key (the proxy URL, the Redis
// URL).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tokmgr::detail {

/// `in` with every %XX replaced by its byte; false for a bad escape. `out` is
/// reserved once, so decoding a password leaves no copy behind in memory a
/// reallocation freed.
inline bool percent_decode(std::string_view in, std::string& out) {
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    out.clear();
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        if (in[i] != '%') {
            out += in[i];
            continue;
        }
        if (i + 2 >= in.size()) return false;  // '%' needs two hex digits after it
        const int hi = hex(in[i + 1]), lo = hex(in[i + 2]);
        if (hi < 0 || lo < 0) return false;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return true;
}

}  // namespace tokmgr::detail
