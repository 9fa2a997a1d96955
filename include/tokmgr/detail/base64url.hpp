// tokmgr/detail/base64url.hpp — base64url (RFC 4648 §5) without padding, as
// JWTs use it. Decoding also accepts padding and rejects anything else.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tokmgr::detail {

inline std::string base64url_encode(std::string_view in) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    out.reserve((in.size() * 4 + 2) / 3);
    std::size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        const std::uint32_t v = (std::uint32_t(std::uint8_t(in[i])) << 16) |
                                (std::uint32_t(std::uint8_t(in[i + 1])) << 8) | std::uint8_t(in[i + 2]);
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
        out += alphabet[v & 63];
    }
    const std::size_t rest = in.size() - i;
    if (rest != 0) {
        std::uint32_t v = std::uint32_t(std::uint8_t(in[i])) << 16;
        if (rest == 2) v |= std::uint32_t(std::uint8_t(in[i + 1])) << 8;
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        if (rest == 2) out += alphabet[(v >> 6) & 63];
    }
    return out;
}

/// Nothing when `in` is not valid base64url.
inline std::optional<std::string> base64url_decode(std::string_view in) {
    while (!in.empty() && in.back() == '=') in.remove_suffix(1);
    if (in.size() % 4 == 1) return std::nullopt;
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '-') return 62;
        if (c == '_') return 63;
        return -1;
    };
    std::string out;
    out.reserve(in.size() * 3 / 4);
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
        const int v = value(c);
        if (v < 0) return std::nullopt;
        acc = (acc << 6) | std::uint32_t(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xFF);
        }
    }
    return out;
}

/// The one spelling base64url_encode produces, or nothing: no padding, and the
/// unused low bits of the last character zero. A verifier that accepts
/// several spellings of one token lets a client present "new" tokens that
/// are the same token (RFC 7515 §2 and RFC 4648 §3.5).
inline std::optional<std::string> base64url_decode_canonical(std::string_view in) {
    if (!in.empty() && in.back() == '=') return std::nullopt;
    auto out = base64url_decode(in);
    if (!out || in.empty()) return out;
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        return c == '-' ? 62 : 63;
    };
    // 2 leftover characters carry 12 bits for 8: 4 unused; 3 carry 18 for 16: 2 unused.
    const std::size_t leftover = in.size() % 4;
    const int unused_mask = leftover == 2 ? 0x0F : leftover == 3 ? 0x03 : 0;
    if ((value(in.back()) & unused_mask) != 0) return std::nullopt;
    return out;
}

}  // namespace tokmgr::detail
