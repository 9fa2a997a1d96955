// tokmgr/json/nlohmann.hpp — a Json policy on nlohmann/json (Debian
// nlohmann-json3-dev). It proves the seam: nothing else in tokmgr changes
// when this replaces simdjson_json.
//
// What it accepts is defined once for every policy in detail/json_rules.hpp,
// the member names in protocol/textual_api.hpp (json/simdjson.hpp says why
// the policies read and write flat objects, not documents);
// nlohmann is lenient in places (it keeps the last of duplicate members,
// stops at a NUL byte, skips a byte-order mark, rounds huge integers to
// doubles), so a strict SAX pass enforces the rules before the document is
// built.
//
// nlohmann::json keeps its own copies of the strings it builds and parses;
// they are freed but not wiped. Bytes that are not UTF-8 are replaced when
// encoding (nlohmann would otherwise throw an exception whose text quotes the
// offending byte of the password).
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>

#include <nlohmann/json.hpp>

#include "../detail/json_rules.hpp"
#include "../errc.hpp"
#include "../flat_object.hpp"
#include "../protocol/textual_api.hpp"
#include "../token_set.hpp"

namespace tokmgr {

class nlohmann_json {
public:
    std::string login_body(std::string_view user, std::string_view password) const {
        return nlohmann::json{{protocol::field::user_name, user}, {protocol::field::password, password}}.dump(
            -1, ' ', false, replace_invalid);
    }

    std::string refresh_body(std::string_view refresh_token) const {
        return nlohmann::json{{protocol::field::refresh_token, refresh_token}}.dump(-1, ' ', false, replace_invalid);
    }

    token_pair parse_token_response(std::string_view body, std::error_code& ec) const {
        ec.clear();
        const auto document = parse(body);
        const auto jwt = string_member(document, protocol::field::jwt);
        const auto refresh_token = string_member(document, protocol::field::refresh_token);
        if (!jwt || !refresh_token || jwt->empty() || refresh_token->empty()) {
            ec = make_error_code(errc::protocol_error);
            return {};
        }
        return {secret(*jwt), secret(*refresh_token)};
    }

    jwt_claims parse_jwt_claims(std::string_view payload, std::error_code& ec) const {
        ec.clear();
        const auto document = parse(payload);
        if (!document.is_object()) {
            ec = make_error_code(errc::protocol_error);
            return {};
        }
        return {seconds_claim(document, protocol::claim::issued_at),
                seconds_claim(document, protocol::claim::expires_at)};
    }

    std::string error_message(std::string_view body) const {
        const auto document = parse(body);
        for (const std::string_view key : protocol::error_message_fields) {
            if (auto text = string_member(document, key); text && !text->empty()) return *text;
        }
        return {};
    }

    /// Json 6 (tokmgr/concepts.hpp): ordered_json keeps the members' order.
    /// Numbers as detail::append_json_number writes them, so that both
    /// policies write 3600 as 3600.
    std::string write_object(const flat_object& object) const {
        nlohmann::ordered_json document = nlohmann::ordered_json::object();
        for (const auto& member : object) {
            auto& value = document[member.name];
            switch (member.type) {
            case flat_member::kind::string: value = member.text.reveal(); break;
            case flat_member::kind::boolean: value = member.boolean; break;
            case flat_member::kind::number:
                if (member.number == std::floor(member.number) && std::fabs(member.number) <= 9007199254740992.0)
                    value = static_cast<std::int64_t>(member.number);
                else
                    value = member.number;
                break;
            }
        }
        return document.dump(-1, ' ', false, replace_invalid);
    }

    /// Json 7: nlohmann's object is a std::map, so the members come sorted.
    flat_object read_object(std::string_view body, std::error_code& ec) const {
        ec.clear();
        const auto document = parse(body);
        flat_object members;
        if (!document.is_object()) {
            ec = make_error_code(errc::protocol_error);
            return members;
        }
        members.reserve(document.size());
        for (const auto& item : document.items()) {
            const std::string& name = item.key();
            const nlohmann::json& value = item.value();
            if (value.is_string()) members.push_back(flat_member::of_string(name, value.get_ref<const std::string&>()));
            else if (value.is_boolean()) members.push_back(flat_member::of_boolean(name, value.get<bool>()));
            else if (value.is_number_unsigned()) members.push_back(flat_member::of_number(name, double(value.get<std::uint64_t>())));
            else if (value.is_number_integer()) members.push_back(flat_member::of_number(name, double(value.get<std::int64_t>())));
            else if (value.is_number_float()) members.push_back(flat_member::of_number(name, value.get<double>()));
        }
        return members;
    }

private:
    static constexpr auto replace_invalid = nlohmann::json::error_handler_t::replace;

    /// Checks the rules nlohmann does not: nesting depth, duplicate top-level
    /// members, integer literals it would round to a double. Any parse error
    /// also ends the pass with false.
    class strict_rules final : public nlohmann::json_sax<nlohmann::json> {
    public:
        bool null() override { return true; }
        bool boolean(bool) override { return true; }
        bool number_integer(number_integer_t) override { return true; }
        bool number_unsigned(number_unsigned_t) override { return true; }
        bool number_float(number_float_t, const string_t& literal) override {
            // No fraction and no exponent: an integer too large for 64 bits.
            return literal.find_first_of(".eE") != string_t::npos;
        }
        bool string(string_t&) override { return true; }
        bool binary(binary_t&) override { return true; }
        bool start_object(std::size_t) override { return ++depth_ <= detail::json_max_depth; }
        bool key(string_t& name) override { return depth_ != 1 || top_level_keys_.insert(name).second; }
        bool end_object() override { return --depth_, true; }
        bool start_array(std::size_t) override { return ++depth_ <= detail::json_max_depth; }
        bool end_array() override { return --depth_, true; }
        bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
            return false;
        }

    private:
        std::size_t depth_ = 0;
        std::set<string_t> top_level_keys_;
    };

    /// The document, or a discarded value when `text` breaks a rule.
    static nlohmann::json parse(std::string_view text) {
        if (!detail::json_bytes_acceptable(text)) return nlohmann::json(nlohmann::json::value_t::discarded);
        strict_rules rules;
        if (!nlohmann::json::sax_parse(text, &rules, nlohmann::json::input_format_t::json, /*strict=*/true,
                                       /*ignore_comments=*/false))
            return nlohmann::json(nlohmann::json::value_t::discarded);
        return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    }

    static std::optional<std::string> string_member(const nlohmann::json& document, std::string_view key) {
        if (!document.is_object()) return std::nullopt;
        const auto it = document.find(key);
        if (it == document.end() || !it->is_string()) return std::nullopt;
        return it->get<std::string>();
    }

    static std::optional<std::int64_t> seconds_claim(const nlohmann::json& document, std::string_view key) {
        const auto it = document.find(key);
        if (it == document.end()) return std::nullopt;
        if (it->is_number_unsigned()) {
            const auto value = it->get<std::uint64_t>();  // never through int64: that would wrap
            if (double(value) < detail::json_max_claim_seconds) return static_cast<std::int64_t>(value);
            return std::nullopt;
        }
        if (it->is_number_integer()) {
            const auto value = it->get<std::int64_t>();
            if (std::fabs(double(value)) < detail::json_max_claim_seconds) return value;
            return std::nullopt;
        }
        if (it->is_number_float()) {
            const double value = it->get<double>();
            if (std::isfinite(value) && std::fabs(value) < detail::json_max_claim_seconds)
                return static_cast<std::int64_t>(std::floor(value));
        }
        return std::nullopt;
    }
};

}  // namespace tokmgr
