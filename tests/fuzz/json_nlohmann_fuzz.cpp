// The nlohmann policy on any bytes: no crash, no exception, claims within
// their bound.
#include <tokmgr/json/nlohmann.hpp>

#include "json_policy_exercise.hpp"

TOKMGR_FUZZ_TARGET(json_nlohmann) {
    tokmgr_fuzz::read_with<tokmgr::nlohmann_json>(tokmgr_fuzz::as_text(data, size));
    return 0;
}
