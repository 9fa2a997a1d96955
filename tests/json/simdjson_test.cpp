#include <tokmgr/json/simdjson.hpp>

#include "json_policy_cases.hpp"

TEST_CASE_TEMPLATE_INVOKE(json_policy_contract, tokmgr::simdjson_json);
