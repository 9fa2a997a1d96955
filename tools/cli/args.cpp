#include "args.hpp"

#include <tokmgr/detail/decimal.hpp>

#include <cstdlib>

namespace tokmgr_cli {

std::optional<std::string> parsed_options::get(std::string_view name) const {
    const auto it = values_.find(name);
    if (it == values_.end()) return std::nullopt;
    return it->second.front();
}

std::vector<std::string> parsed_options::all(std::string_view name) const {
    const auto it = values_.find(name);
    return it == values_.end() ? std::vector<std::string>{} : it->second;
}

bool parsed_options::flag(std::string_view name) const { return flags_.find(name) != flags_.end(); }

parsed_options parse_options(int argc, char** argv, int first, const option_spec& spec, std::string_view command) {
    parsed_options out;
    for (int i = first; i < argc; ++i) {
        std::string_view arg(argv[i]);
        if (arg == "--help" || arg == "-h") throw help_requested{};
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

std::int64_t parse_integer(const std::string& text, std::int64_t min, std::int64_t max, std::string_view what) {
    const auto value = tokmgr::detail::parse_decimal<std::int64_t>(text);
    if (!value || *value < min || *value > max)
        throw usage_error{std::string(what) + " must be a whole number from " + std::to_string(min) + " to " +
                          std::to_string(max)};
    return *value;
}

double parse_positive_seconds(const std::string& text, double max, std::string_view what) {
    char* end = nullptr;
    const double value = text.empty() ? 0 : std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || !(value > 0) || value > max)
        throw usage_error{std::string(what) + " must be a positive number of seconds up to " +
                          std::to_string(static_cast<long long>(max))};
    return value;
}

}  // namespace tokmgr_cli
