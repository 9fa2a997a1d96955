// tools/cli/output.hpp — the one line the tokmgr program writes on failure.
#pragma once

#include <iostream>
#include <string>
#include <string_view>

#include <tokmgr/error.hpp>

namespace tokmgr_cli {

/// "tokmgr <command>: <what failed>" on one line of stderr. The texts come
/// from tokmgr's error_info, which never holds a secret; line breaks in a
/// server's message are flattened so the error stays one line.
inline void print_error(std::string_view command, std::string_view message) {
    std::string line = "tokmgr " + std::string(command) + ": " + std::string(message);
    for (auto& c : line)
        if (c == '\n' || c == '\r') c = ' ';
    std::cerr << line << std::endl;
}

inline void print_error(std::string_view command, const tokmgr::error_info& info) {
    print_error(command, info.message());
}

}  // namespace tokmgr_cli
