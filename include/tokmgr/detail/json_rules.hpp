// tokmgr/detail/json_rules.hpp — what every Json policy accepts, defined
// once, so that swapping the policy never changes how a server's bytes are
// read. The rules, for token responses, JWT payloads and error bodies alike:
//
//   * The whole input is one JSON value (RFC 8259), with only JSON whitespace
//     around it: trailing bytes, a NUL byte anywhere, or a byte-order mark
//     (RFC 8259 §8.1: senders must not add one) make the input malformed.
//   * Objects and arrays nest at most `json_max_depth` deep.
//   * A top-level object may not name the same member twice: which one a
//     parser keeps is not defined, so neither is chosen.
//   * An integer literal outside [-2^63, 2^64) makes the input malformed
//     (rather than being rounded to a double by one parser and refused by
//     another); a number beyond the range of double likewise.
//   * A NumericDate claim (iat, exp) is read only when its magnitude is below
//     `json_max_claim_seconds` (about 31 million years); anything else, an
//     integer above INT64_MAX included, counts as absent rather than wrapping.
#pragma once

#include <cstddef>
#include <string_view>

namespace tokmgr::detail {

inline constexpr std::size_t json_max_depth = 1024;
inline constexpr double json_max_claim_seconds = 1e15;

/// The byte-level rules: no NUL byte, no UTF-8 byte-order mark.
inline bool json_bytes_acceptable(std::string_view text) noexcept {
    if (text.find('\0') != std::string_view::npos) return false;
    return !(text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF");
}

}  // namespace tokmgr::detail
