// tokmgr/protocol/textual.hpp — the Textual auth API as a Protocol policy,
// token_manager's default. Its facts (paths, member names, what each status
// means) live in textual_api.hpp; this only puts them to use.
#pragma once

#include <string>
#include <string_view>
#include <system_error>

#include "../errc.hpp"
#include "../flat_object.hpp"
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
        return request(target,
                       json.write_object(protocol::login_request_members(login.user_name, login.password.reveal())));
    }

    template <class Json>
    token_request refresh_request(std::string_view refresh_token, std::string_view target, const Json& json) const {
        return request(target, json.write_object(protocol::refresh_request_members(refresh_token)));
    }

    /// Both tokens are required: a Textual refresh always rotates.
    template <class Json>
    token_answer read_tokens(std::string_view body, const Json& json, std::error_code& ec) const {
        const flat_object object = json.read_object(body, ec);
        token_answer tokens;
        if (ec) return tokens;
        const secret_view jwt = string_member(object, protocol::field::jwt);
        const secret_view refresh_token = string_member(object, protocol::field::refresh_token);
        if (jwt.empty() || refresh_token.empty()) {
            ec = make_error_code(errc::protocol_error);
            return tokens;
        }
        tokens.access_token = secret(jwt.reveal());
        tokens.refresh_token = secret(refresh_token.reveal());
        return tokens;
    }

    std::string answer_shape() const { return protocol::token_response_fields(); }

    template <class Json>
    errc classify(token_call call, int status, std::string_view, const Json&) const noexcept {
        return protocol::error_for_status(call == token_call::login ? protocol::call::login : protocol::call::refresh,
                                          status);
    }

    /// The first non-empty string of protocol::error_message_fields.
    template <class Json>
    std::string error_message(std::string_view body, const Json& json) const {
        std::error_code ec;
        const flat_object object = json.read_object(body, ec);
        if (ec) return {};
        for (const std::string_view name : protocol::error_message_fields)
            if (const secret_view text = string_member(object, name); !text.empty()) return std::string(text.reveal());
        return {};
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
