// tools/cli/args.hpp — the tokmgr program's option parser: `--name value`
// or `--name=value`, flags without values, nothing positional. Error texts
// name the option, never a value, so a password typed in the wrong place is
// not repeated on the terminal or in a log.
#pragma once

#include <cstdint>
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

/// Thrown when a command's options ask for its usage (`--help` or `-h`);
/// main() prints that command's usage and exits 0.
struct help_requested {};

struct option_spec {
    std::set<std::string, std::less<>> valued;    ///< options that take a value
    std::set<std::string, std::less<>> repeated;  ///< valued options that may repeat
    std::set<std::string, std::less<>> flags;     ///< options without a value
};

class parsed_options {
public:
    std::optional<std::string> get(std::string_view name) const;
    std::vector<std::string> all(std::string_view name) const;
    bool flag(std::string_view name) const;

    std::map<std::string, std::vector<std::string>, std::less<>> values_;
    std::set<std::string, std::less<>> flags_;
};

/// Parses argv[first..argc) against `spec`; throws usage_error, or
/// help_requested for `--help` or `-h` where an option may stand.
parsed_options parse_options(int argc, char** argv, int first, const option_spec& spec, std::string_view command);

/// A whole number in [min, max]; `what` names the option in the error.
std::int64_t parse_integer(const std::string& text, std::int64_t min, std::int64_t max, std::string_view what);

/// A positive number of seconds, fractions allowed ("0.5").
double parse_positive_seconds(const std::string& text, double max, std::string_view what);

}  // namespace tokmgr_cli
