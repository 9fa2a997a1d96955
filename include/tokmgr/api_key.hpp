// tokmgr/api_key.hpp — the credential source for API-key mode.
//
// It has the same calls as token_manager (get_token, authorization,
// invalidate, counters), so a service written against either switches by
// changing a type. The key is sent as-is, `Authorization: <key>`, with no
// scheme word, as Textual's SDK does; it is never refreshed.
#pragma once

#include <cstdlib>
#include <string>
#include <system_error>
#include <utility>

#include "error.hpp"
#include "secret.hpp"
#include "token_manager.hpp"

namespace tokmgr {

class api_key_source {
public:
    /// Throws tokmgr::error (errc::invalid_configuration) for an empty key.
    explicit api_key_source(secret key) : key_(std::move(key)) {
        if (key_.empty()) throw error(make_error_code(errc::invalid_configuration), "the API key is empty");
    }

    /// The key from TONIC_TEXTUAL_API_KEY; errc::invalid_configuration when unset or empty.
    static api_key_source from_environment() {
        const char* value = std::getenv("TONIC_TEXTUAL_API_KEY");
        if (value == nullptr || *value == '\0')
            throw error(make_error_code(errc::invalid_configuration),
                        "TONIC_TEXTUAL_API_KEY is not set; set it to the API key from the Textual UI");
        return api_key_source(secret(value));
    }

    /// The key itself. Never fails; the view lives as long as this source.
    secret_view get_token(std::error_code& ec) const noexcept {
        ec.clear();
        return key_.view();
    }
    secret_view get_token() const noexcept { return key_.view(); }

    /// The Authorization header value: the bare key.
    secret_view authorization(std::error_code& ec) const noexcept { return get_token(ec); }
    secret_view authorization() const noexcept { return key_.view(); }

    /// An API key cannot be renewed by the client: nothing to do.
    void invalidate(secret_view) const noexcept {}

    manager_counters counters() const noexcept { return {}; }

private:
    secret key_;
};

}  // namespace tokmgr
