// tokmgr/error.hpp — the exception thrown by the throwing overloads, and the
// detailed description of the last failure.
#pragma once

#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include "errc.hpp"

namespace tokmgr {

/// What failed, beyond the error code: which operation, against which host,
/// what the server said. Never contains a password, JWT or refresh token.
struct error_info {
    std::error_code code;
    std::string detail;  ///< e.g. "refresh at textual.example.com: status 503: maintenance"

    explicit operator bool() const noexcept { return static_cast<bool>(code); }

    /// "<detail>: <code message>" or the code message alone.
    std::string message() const {
        if (detail.empty()) return code.message();
        return detail + ": " + code.message();
    }
};

/// Thrown by every throwing overload. `code()` is the same error_code that the
/// `std::error_code&` overload would have reported; `info()` is the
/// error_info the `error_info&` form would have filled.
class error : public std::system_error {
public:
    explicit error(const error_info& info)
        : std::system_error(info.code, info.detail), info_(std::make_shared<const error_info>(info)) {}
    error(std::error_code code, const std::string& detail) : error(error_info{code, detail}) {}

    // Declared so that there is no implicit move, which would leave a
    // moved-from exception without its error_info.
    error(const error&) = default;
    error& operator=(const error&) = default;

    const error_info& info() const noexcept { return *info_; }

private:
    // Shared, so that copying the exception cannot throw (as the standard's
    // exceptions, which share their message too).
    std::shared_ptr<const error_info> info_;
};

namespace detail {

[[noreturn]] inline void throw_error(const error_info& info) { throw error(info); }

// Every fallible function has one detailed form, `f(..., error_info& failed)`,
// which resets `failed` when it succeeds; a public one adds the two forms
// below, written with these helpers so each is one line and cannot drift from
// the detailed one.

/// The `std::error_code&` form: the code of the detailed form, without its text.
template <class Detailed>
auto code_only(std::error_code& ec, Detailed&& detailed) {
    error_info failed;
    auto result = detailed(failed);
    ec = failed.code;
    return result;
}

/// The throwing form: tokmgr::error carrying the detailed form's error_info,
/// its detail prefixed with `context` ("token-set document") when given.
template <class Detailed>
auto throw_on_failure(Detailed&& detailed, const char* context = nullptr) {
    error_info failed;
    auto result = detailed(failed);
    if (failed) {
        if (context != nullptr) failed.detail = context + (": " + failed.detail);
        throw_error(failed);
    }
    return result;
}

}  // namespace detail
}  // namespace tokmgr
