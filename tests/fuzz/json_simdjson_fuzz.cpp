// The simdjson policy on any bytes: no crash, claims within their bound.
#include <tokmgr/json/simdjson.hpp>

#include "json_policy_exercise.hpp"

TOKMGR_FUZZ_TARGET(json_simdjson) {
    tokmgr_fuzz::read_with<tokmgr::simdjson_json>(tokmgr_fuzz::as_text(data, size));
    return 0;
}
