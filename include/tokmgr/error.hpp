// tokmgr/error.hpp — the exception thrown by the throwing overloads, and the
// detailed description of the last failure.
#pragma once

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
/// `std::error_code&` overload would have reported.
class error : public std::system_error {
public:
    explicit error(const error_info& info) : std::system_error(info.code, info.detail) {}
    error(std::error_code code, const std::string& detail) : std::system_error(code, detail) {}
};

namespace detail {

[[noreturn]] inline void throw_error(const error_info& info) { throw error(info); }

}  // namespace detail
}  // namespace tokmgr
