// tools/cli/args.hpp — the tokmgr program's option parser: `--name value`
// or `--name=value`, flags without values, nothing positional. Error texts
// name the option, never a value, so a password typed in the wrong place is
// not repeated on the terminal or in a log.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace tokmgr_cli {

/// Thrown for any misuse of the command line; main() turns it into exit status 2.
struct usage_error {
    std::string message;
};

struct option_spec {
    std::set<std::string, std::less<>> valued;    ///< options that take a value
    std::set<std::string, std::less<>> repeated;  ///< valued options that may repeat
    std::set<std::string, std::less<>> flags;     ///< options without a value
};

class parsed_options {
public:
    std::optional<std::string> get(std::string_view name) const {
        const auto it = values_.find(name);
        if (it == values_.end()) return std::nullopt;
        return it->second.front();
    }
    std::vector<std::string> all(std::string_view name) const {
        const auto it = values_.find(name);
        return it == values_.end() ? std::vector<std::string>{} : it->second;
    }
    bool flag(std::string_view name) const { return flags_.count(std::string(name)) != 0; }

    std::map<std::string, std::vector<std::string>, std::less<>> values_;
    std::set<std::string> flags_;
};

/// Parses argv[first..argc) against `spec`; throws usage_error.
inline parsed_options parse_options(int argc, char** argv, int first, const option_spec& spec,
                                    std::string_view command) {
    parsed_options out;
    for (int i = first; i < argc; ++i) {
        std::string_view arg(argv[i]);
        if (arg.size() < 3 || arg.substr(0, 2) != "--")
            throw usage_error{"unexpected argument #" + std::to_string(i) + " for " + std::string(command) +
                              " (every option starts with --)"};
        std::string name(arg.substr(2));
        std::optional<std::string> inline_value;
        if (const auto eq = name.find('='); eq != std::string::npos) {
            inline_value = name.substr(eq + 1);
            name.resize(eq);
        }
        if (spec.flags.count(name)) {
            if (inline_value) throw usage_error{"--" + name + " takes no value"};
            out.flags_.insert(name);
            continue;
        }
        if (!spec.valued.count(name)) throw usage_error{"unknown option --" + name + " for " + std::string(command)};
        std::string value;
        if (inline_value) {
            value = std::move(*inline_value);
        } else {
            if (i + 1 >= argc) throw usage_error{"--" + name + " needs a value"};
            value = argv[++i];
        }
        auto& slot = out.values_[name];
        if (!slot.empty() && !spec.repeated.count(name)) throw usage_error{"--" + name + " is given twice"};
        slot.push_back(std::move(value));
    }
    return out;
}

/// A whole number in [min, max]; `what` names the option in the error.
inline std::int64_t parse_integer(const std::string& text, std::int64_t min, std::int64_t max, std::string_view what) {
    bool valid = !text.empty() && text.size() <= 12;
    std::int64_t value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') valid = false;
        else if (valid) value = value * 10 + (c - '0');
    }
    if (!valid || value < min || value > max)
        throw usage_error{std::string(what) + " must be a whole number from " + std::to_string(min) + " to " +
                          std::to_string(max)};
    return value;
}

/// A positive number of seconds, fractions allowed ("0.5").
inline double parse_positive_seconds(const std::string& text, double max, std::string_view what) {
    char* end = nullptr;
    const double value = text.empty() ? 0 : std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || !(value > 0) || value > max)
        throw usage_error{std::string(what) + " must be a positive number of seconds up to " +
                          std::to_string(static_cast<long long>(max))};
    return value;
}

}  // namespace tokmgr_cli
