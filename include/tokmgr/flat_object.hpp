// tokmgr/flat_object.hpp — a flat JSON object: what a Json policy writes and
// reads for a Protocol policy (tokmgr/concepts.hpp, Json 6 and 7). Protocols
// speak in members; the JSON library of the user's choice does the text.
//
// Only strings, numbers and booleans: a token endpoint's requests and answers
// need nothing deeper, and a flat object leaves no parsed document holding a
// token behind. String values are `secret`s because they are passwords and
// tokens as often as not.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "secret.hpp"

namespace tokmgr {

struct flat_member {
    enum class kind { string, number, boolean };

    std::string name;
    kind type = kind::string;
    secret text;        ///< kind::string
    double number = 0;  ///< kind::number (an integer beyond 2^53 loses its last digits)
    bool boolean = false;

    static flat_member of_string(std::string_view name, std::string_view value) {
        flat_member member = named(name, kind::string);
        member.text = secret(value);
        return member;
    }
    static flat_member of_number(std::string_view name, double value) {
        flat_member member = named(name, kind::number);
        member.number = value;
        return member;
    }
    static flat_member of_boolean(std::string_view name, bool value) {
        flat_member member = named(name, kind::boolean);
        member.boolean = value;
        return member;
    }

private:
    static flat_member named(std::string_view name, kind type) {
        flat_member member;
        member.name = std::string(name);
        member.type = type;
        return member;
    }
};

/// A writer keeps the members' order; a reader returns them sorted by name
/// (the policies' libraries keep different orders, and the readers must
/// agree) and refuses an object that names a member twice.
using flat_object = std::vector<flat_member>;

/// The member named `name`, or null.
inline const flat_member* find_member(const flat_object& object, std::string_view name) noexcept {
    for (const auto& member : object)
        if (member.name == name) return &member;
    return nullptr;
}

/// The value of the string member `name`; empty when there is none (or it
/// is not a string).
inline secret_view string_member(const flat_object& object, std::string_view name) noexcept {
    const flat_member* member = find_member(object, name);
    return member != nullptr && member->type == flat_member::kind::string ? member->text.view() : secret_view();
}

}  // namespace tokmgr
