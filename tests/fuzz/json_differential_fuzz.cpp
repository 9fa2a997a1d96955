// The two Json policies read every input the same way: the same tokens,
// claims and error message, or the same refusal (detail/json_rules.hpp).
#include <tokmgr/json/nlohmann.hpp>
#include <tokmgr/json/simdjson.hpp>

#include "json_policy_exercise.hpp"

TOKMGR_FUZZ_TARGET(json_differential) {
    const auto text = tokmgr_fuzz::as_text(data, size);
    const auto simdjson = tokmgr_fuzz::read_with<tokmgr::simdjson_json>(text);
    const auto nlohmann = tokmgr_fuzz::read_with<tokmgr::nlohmann_json>(text);
    FUZZ_CHECK(simdjson.token_ec == nlohmann.token_ec);
    FUZZ_CHECK(simdjson.jwt == nlohmann.jwt);
    FUZZ_CHECK(simdjson.refresh_token == nlohmann.refresh_token);
    FUZZ_CHECK(simdjson.claims_ec == nlohmann.claims_ec);
    FUZZ_CHECK(simdjson.issued_at == nlohmann.issued_at);
    FUZZ_CHECK(simdjson.expires_at == nlohmann.expires_at);
    FUZZ_CHECK(simdjson.message == nlohmann.message);
    return 0;
}
