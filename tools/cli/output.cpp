#include "output.hpp"

#include <iostream>
#include <utility>

#include "exit_status.hpp"

namespace tokmgr_cli {

void print_error(std::string_view command, std::string_view message) {
    std::string line = "tokmgr " + std::string(command) + ": " + std::string(message);
    for (auto& c : line)
        if (c == '\n' || c == '\r') c = ' ';
    std::cerr << line << std::endl;
}

void print_error(std::string_view command, const tokmgr::error_info& info) { print_error(command, info.message()); }

tokmgr::error_info failure_of(const tokmgr::error_info& last_error, std::error_code ec, std::string what) {
    if (last_error.code) return last_error;
    return {ec, std::move(what)};
}

int report_failure(std::string_view command, const tokmgr::error_info& last_error, std::error_code ec,
                   std::string what) {
    print_error(command, failure_of(last_error, ec, std::move(what)));
    return exit_status_for(ec);
}

}  // namespace tokmgr_cli
