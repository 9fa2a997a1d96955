// tokmgr/api_key.hpp — the credential source for API-key mode.
//
// It has the same calls as token_manager (get_token, authorization,
// get_token_handle, async_get_token, invalidate, counters, last_error), so a
// service written against either switches by changing a type. The key is
// sent as-is, `Authorization: <key>`, with no scheme word, as Textual's SDK
// does; it is never refreshed.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include "detail/snapshot.hpp"
#include "error.hpp"
#include "secret.hpp"
#include "token_handle.hpp"
#include "token_manager.hpp"

namespace tokmgr {

class api_key_source {
public:
    /// The key as given; from_environment() reads it from
    /// TONIC_TEXTUAL_API_KEY instead. Throws tokmgr::error
    /// (errc::invalid_configuration) for an empty key.
    explicit api_key_source(secret key) : served_(serve(std::move(key))) {}

    /// The key from TONIC_TEXTUAL_API_KEY; errc::invalid_configuration when unset or empty.
    static api_key_source from_environment() {
        const char* value = std::getenv("TONIC_TEXTUAL_API_KEY");
        if (value == nullptr || *value == '\0')
            throw error(make_error_code(errc::invalid_configuration),
                        "TONIC_TEXTUAL_API_KEY is not set; set it to the API key from the Textual UI");
        return api_key_source(secret(value));
    }

    /// The key itself. Never fails; the view lives as long as this source
    /// (or a copy of it, or a handle from get_token_handle).
    secret_view get_token(std::error_code& ec) const noexcept {
        ec.clear();
        return served_->jwt();
    }
    secret_view get_token() const noexcept { return served_->jwt(); }

    /// The Authorization header value: the bare key.
    secret_view authorization(std::error_code& ec) const noexcept { return get_token(ec); }
    secret_view authorization() const noexcept { return served_->authorization_header(); }

    /// The key with shared ownership: valid for as long as it is held. Its
    /// jwt() and authorization() are both the key; its generation is 1, the
    /// first and only one.
    token_handle get_token_handle(std::error_code& ec) const noexcept {
        ec.clear();
        return token_handle(served_);
    }
    token_handle get_token_handle() const noexcept { return token_handle(served_); }

    /// The key through an Asio completion token, as token_manager's
    /// async_get_token: completion signature `void(std::error_code,
    /// tokmgr::token_handle)`, never an error. The handler runs through its
    /// associated executor, never inside this call; one without an executor
    /// of its own (a plain callback, use_future) runs on
    /// asio::system_executor, as there is no transport's executor to fall back
    /// on (asio::bind_executor chooses another). Nothing is waited for, so
    /// cancellation has nothing to end. Needs <tokmgr/async.hpp> (the umbrella
    /// <tokmgr/tokmgr.hpp> includes it).
    template <class CompletionToken>
    auto async_get_token(CompletionToken&& token) const;

    /// An API key cannot be renewed by the client: nothing to do.
    void invalidate(secret_view) const noexcept {}

    manager_counters counters() const noexcept { return {}; }

    /// Always empty: serving a key cannot fail.
    error_info last_error() const { return {}; }

private:
    static std::shared_ptr<const detail::snapshot> serve(secret key) {
        if (key.empty()) throw error(make_error_code(errc::invalid_configuration), "the API key is empty");
        auto served = std::make_shared<detail::snapshot>();
        served->authorization.assign(key.reveal());  // no scheme word: jwt() and the header are the key
        served->generation = 1;
        return served;
    }

    std::shared_ptr<const detail::snapshot> served_;
};

}  // namespace tokmgr
