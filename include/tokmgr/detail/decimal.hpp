// tokmgr/detail/decimal.hpp — unsigned decimal numbers in protocol and
// configuration text, read the one way every caller needs: the whole text is
// digits, nothing else.
#pragma once

#include <charconv>
#include <optional>
#include <string_view>
#include <type_traits>

namespace tokmgr::detail {

/// `text` as an unsigned decimal number of type T: digits only (no sign, no
/// space, no "0x"), at least one, and a value T can hold. std::from_chars
/// does the digits and the overflow check; this adds "all of the text" and
/// refuses the '-' that from_chars accepts for signed types.
template <class T>
std::optional<T> parse_decimal(std::string_view text) noexcept {
    static_assert(std::is_integral_v<T>, "parse_decimal reads whole numbers");
    if (text.empty() || text.front() < '0' || text.front() > '9') return std::nullopt;
    T value{};
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

}  // namespace tokmgr::detail
