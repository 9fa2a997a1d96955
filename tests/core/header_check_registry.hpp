#pragma once
#include <set>
#include <string>

namespace tokmgr_header_check {
inline std::set<std::string>& headers() {
    static std::set<std::string> all;
    return all;
}
inline bool add(const char* header) { return headers().insert(header).second; }
}  // namespace tokmgr_header_check
