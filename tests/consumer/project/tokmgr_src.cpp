// The one file that compiles token_manager<> in the separate-compilation build.
#include <tokmgr/src.hpp>
