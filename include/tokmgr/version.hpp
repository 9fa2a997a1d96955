// tokmgr/version.hpp — the library's version, and its one home: the
// top-level CMakeLists.txt reads these three numbers for project(VERSION),
// so the installed package's version file, tokmgr.pc and `tokmgr --version`
// all say what this file says.
#pragma once

#define TOKMGR_VERSION_MAJOR 0
#define TOKMGR_VERSION_MINOR 1
#define TOKMGR_VERSION_PATCH 0

#define TOKMGR_DETAIL_VERSION_TEXT(x) #x
#define TOKMGR_DETAIL_VERSION_JOIN(major, minor, patch) \
    TOKMGR_DETAIL_VERSION_TEXT(major) "." TOKMGR_DETAIL_VERSION_TEXT(minor) "." TOKMGR_DETAIL_VERSION_TEXT(patch)
/// "MAJOR.MINOR.PATCH", e.g. for a program's --version.
#define TOKMGR_VERSION_STRING \
    TOKMGR_DETAIL_VERSION_JOIN(TOKMGR_VERSION_MAJOR, TOKMGR_VERSION_MINOR, TOKMGR_VERSION_PATCH)

namespace tokmgr {

/// TOKMGR_VERSION_STRING, for code that prefers a name to a macro.
inline constexpr const char* version = TOKMGR_VERSION_STRING;

}  // namespace tokmgr
