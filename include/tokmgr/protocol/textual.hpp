// tokmgr/protocol/textual.hpp — the Textual auth API as a Protocol policy,
// token_manager's default. Its facts (paths, member names, what each status
// means) live in textual_api.hpp; this only puts them to use.
#pragma once

#include <string>
#include <string_view>
#include <system_error>

#include "../errc.hpp"
#include "../options.hpp"
#include "../token_set.hpp"
#include "token_exchange.hpp"
#include "textual_api.hpp"

namespace tokmgr {

class textual_protocol {
public:
    /// `target` is manager_options::login_path (the Textual API's by default).
    template <class Json>
    token_request login_request(const credentials& login, std::string_view target, const Json& json) const {
        return request(target, json.login_body(login.user_name, login.password.reveal()));
    }

    template <class Json>
    token_request refresh_request(std::string_view refresh_token, std::string_view target, const Json& json) const {
        return request(target, json.refresh_body(refresh_token));
    }

    /// Both tokens are required: a Textual refresh always rotates.
    template <class Json>
    token_answer read_tokens(std::string_view body, const Json& json, std::error_code& ec) const {
        token_pair pair = json.parse_token_response(body, ec);
        token_answer tokens;
        if (ec) return tokens;
        tokens.access_token = std::move(pair.jwt);
        tokens.refresh_token = std::move(pair.refresh_token);
        return tokens;
    }

    std::string answer_shape() const { return protocol::token_response_fields(); }

    template <class Json>
    errc classify(token_call call, int status, std::string_view, const Json&) const noexcept {
        return protocol::error_for_status(call == token_call::login ? protocol::call::login : protocol::call::refresh,
                                          status);
    }

    template <class Json>
    std::string error_message(std::string_view body, const Json& json) const {
        return json.error_message(body);
    }

private:
    static token_request request(std::string_view target, std::string body) {
        token_request built;
        built.target = std::string(target);
        built.body = secret(std::move(body));
        return built;
    }
};

}  // namespace tokmgr
