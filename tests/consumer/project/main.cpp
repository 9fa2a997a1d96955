// A C++17 user of the installed package: the umbrella header and the default
// manager type.
#include <tokmgr/tokmgr.hpp>

#include <type_traits>

static_assert(__cplusplus == 201703L, "this consumer proves the C++17 build");
static_assert(std::is_same_v<tokmgr::token_manager<>::clock_type, tokmgr::steady_clock>);
static_assert(std::is_same_v<tokmgr::token_manager<>::json_type, tokmgr::simdjson_json>);

int main() {
    tokmgr::api_key_source key(tokmgr::secret("installed-package-key"));
    return key.authorization().reveal() == "installed-package-key" ? 0 : 1;
}
