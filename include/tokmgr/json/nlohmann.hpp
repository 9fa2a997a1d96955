// tokmgr/json/nlohmann.hpp — a Json policy on nlohmann/json (Debian
// nlohmann-json3-dev). It proves the seam: nothing else in tokmgr changes
// when this replaces simdjson_json.
//
// nlohmann::json keeps its own copies of the strings it builds and parses;
// they are freed but not wiped. Bytes that are not UTF-8 are replaced when
// encoding (nlohmann would otherwise throw an exception whose text quotes the
// offending byte of the password).
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include <nlohmann/json.hpp>

#include "../errc.hpp"
#include "../token_set.hpp"

namespace tokmgr {

class nlohmann_json {
public:
    std::string login_body(std::string_view user, std::string_view password) const {
        return nlohmann::json{{"userName", user}, {"password", password}}.dump(-1, ' ', false, replace_invalid);
    }

    std::string refresh_body(std::string_view refresh_token) const {
        return nlohmann::json{{"refreshToken", refresh_token}}.dump(-1, ' ', false, replace_invalid);
    }

    token_pair parse_token_response(std::string_view body, std::error_code& ec) const {
        ec.clear();
        const auto document = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
        const auto jwt = string_member(document, "jwt");
        const auto refresh_token = string_member(document, "refreshToken");
        if (!jwt || !refresh_token || jwt->empty() || refresh_token->empty()) {
            ec = make_error_code(errc::protocol_error);
            return {};
        }
        return {secret(*jwt), secret(*refresh_token)};
    }

    jwt_claims parse_jwt_claims(std::string_view payload, std::error_code& ec) const {
        ec.clear();
        const auto document = nlohmann::json::parse(payload, nullptr, false);
        if (!document.is_object()) {
            ec = make_error_code(errc::protocol_error);
            return {};
        }
        return {seconds_claim(document, "iat"), seconds_claim(document, "exp")};
    }

    std::string error_message(std::string_view body) const {
        const auto document = nlohmann::json::parse(body, nullptr, false);
        for (const char* key : {"message", "detail", "title", "errorMessage"}) {
            if (auto text = string_member(document, key); text && !text->empty()) return *text;
        }
        return {};
    }

private:
    static constexpr auto replace_invalid = nlohmann::json::error_handler_t::replace;

    static std::optional<std::string> string_member(const nlohmann::json& document, const char* key) {
        if (!document.is_object()) return std::nullopt;
        const auto it = document.find(key);
        if (it == document.end() || !it->is_string()) return std::nullopt;
        return it->get<std::string>();
    }

    static std::optional<std::int64_t> seconds_claim(const nlohmann::json& document, const char* key) {
        const auto it = document.find(key);
        if (it == document.end()) return std::nullopt;
        if (it->is_number_integer()) return it->get<std::int64_t>();
        if (it->is_number_float()) {
            const double value = it->get<double>();
            if (std::isfinite(value) && std::fabs(value) < 1e15) return static_cast<std::int64_t>(std::floor(value));
        }
        return std::nullopt;
    }
};

}  // namespace tokmgr
