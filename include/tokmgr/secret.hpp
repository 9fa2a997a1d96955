// tokmgr/secret.hpp — a string that never shows itself.
//
// Passwords, JWTs and refresh tokens live in `secret`: streaming one writes a
// placeholder, there is no implicit conversion to a string, the content is
// wiped when destroyed or moved from, and reading it takes an explicit
// `reveal()`. `secret_view` is the non-owning counterpart handed out by the
// token manager.
#pragma once

#include <atomic>
#include <cstddef>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace tokmgr {

namespace detail {

/// Overwrites n bytes in a way the optimiser may not elide (the volatile
/// stores plus the fence keep a dead-store pass from removing them).
inline void secure_wipe(void* data, std::size_t n) noexcept {
    auto* p = static_cast<volatile unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) p[i] = 0;
    std::atomic_signal_fence(std::memory_order_seq_cst);
}

/// Wipes the whole capacity of a string, then empties it.
inline void secure_clear(std::string& s) noexcept {
    if (s.capacity() != 0) secure_wipe(&s[0], s.capacity());
    s.clear();
}

/// Makes room for `size` characters in a string that may hold a secret. A
/// string that grows on its own frees its old buffer unwiped; this moves
/// the characters to the new buffer and wipes the old one first.
inline void reserve_wiping(std::string& s, std::size_t size) {
    if (size <= s.capacity()) return;
    std::string grown;
    grown.reserve(size > 2 * s.capacity() ? size : 2 * s.capacity());
    grown.append(s);
    secure_clear(s);
    s.swap(grown);
}

/// Comparison whose time does not depend on where the inputs first differ.
inline bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    unsigned char diff = 0;
    for (std::size_t i = 0; i < a.size(); ++i)
        diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff == 0;
}

inline constexpr std::string_view redacted_text = "[redacted]";

}  // namespace detail

/// A non-owning view of a secret. Valid only while the secret it views lives;
/// the token manager documents that span for the views it returns.
class secret_view {
public:
    constexpr secret_view() noexcept = default;
    constexpr explicit secret_view(std::string_view value) noexcept : value_(value) {}

    /// The secret's characters. Named so that every use is visible in review.
    constexpr std::string_view reveal() const noexcept { return value_; }
    constexpr bool empty() const noexcept { return value_.empty(); }
    constexpr std::size_t size() const noexcept { return value_.size(); }

    friend bool operator==(secret_view a, secret_view b) noexcept {
        return detail::constant_time_equal(a.value_, b.value_);
    }
    friend bool operator!=(secret_view a, secret_view b) noexcept { return !(a == b); }

    friend std::ostream& operator<<(std::ostream& os, secret_view) {
        return os << detail::redacted_text;
    }

private:
    std::string_view value_;
};

/// An owning secret string.
class secret {
public:
    secret() noexcept = default;
    explicit secret(std::string value) noexcept : value_(std::move(value)) {
        detail::secure_clear(value);  // a short value was copied out of its inline buffer, not moved
    }
    explicit secret(std::string_view value) : value_(value) {}
    explicit secret(const char* value) : value_(value) {}

    secret(const secret& other) : value_(other.value_) {}
    secret(secret&& other) noexcept : value_(std::move(other.value_)) { detail::secure_clear(other.value_); }
    secret& operator=(const secret& other) {
        if (this != &other) assign(other.value_);
        return *this;
    }
    secret& operator=(secret&& other) noexcept {
        if (this != &other) {
            detail::secure_clear(value_);
            value_ = std::move(other.value_);
            detail::secure_clear(other.value_);
        }
        return *this;
    }
    ~secret() { detail::secure_clear(value_); }

    /// Replaces the content, wiping the old one first.
    void assign(std::string_view value) {
        detail::secure_clear(value_);
        value_.assign(value.data(), value.size());
    }
    void clear() noexcept { detail::secure_clear(value_); }

    std::string_view reveal() const noexcept { return value_; }
    secret_view view() const noexcept { return secret_view(value_); }
    bool empty() const noexcept { return value_.empty(); }
    std::size_t size() const noexcept { return value_.size(); }

    friend bool operator==(const secret& a, const secret& b) noexcept { return a.view() == b.view(); }
    friend bool operator!=(const secret& a, const secret& b) noexcept { return !(a == b); }

    friend std::ostream& operator<<(std::ostream& os, const secret&) {
        return os << detail::redacted_text;
    }

private:
    std::string value_;
};

}  // namespace tokmgr
