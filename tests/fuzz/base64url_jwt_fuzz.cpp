// base64url and JWTs: decoding is the inverse of encoding, only the
// canonical spelling is canonical, the server verifies only what it signed,
// and the client reads a lifetime from any token without trusting it.
#include <tokmgr/detail/base64url.hpp>
#include <tokmgr/detail/jwt_lifetime.hpp>
#include <tokmgr/json/simdjson.hpp>
#include <tokmgr/server/detail/jwt.hpp>

#include "fuzz_target.hpp"

TOKMGR_FUZZ_TARGET(base64url_jwt) {
    using namespace tokmgr::detail;
    const auto text = tokmgr_fuzz::as_text(data, size);

    if (const auto decoded = base64url_decode(text)) {
        const std::string canonical = base64url_encode(*decoded);
        FUZZ_CHECK(base64url_decode(canonical) == decoded);
        const auto strict = base64url_decode_canonical(text);
        FUZZ_CHECK(strict.has_value() == (canonical == text));
    } else {
        FUZZ_CHECK(!base64url_decode_canonical(text));
    }
    FUZZ_CHECK(base64url_decode(base64url_encode(text)) == std::optional<std::string>(std::string(text)));

    // The server: a token it did not sign never verifies; one it signed does,
    // and only in its canonical spelling.
    const auto check = tokmgr::server::detail::verify_hs256(text, "fuzz key", 1e9);
    FUZZ_CHECK(check.status != tokmgr::server::detail::jwt_status::valid &&
               check.status != tokmgr::server::detail::jwt_status::expired);
    // Subjects are user names, which the server only accepts as UTF-8 (a
    // name that is not could never log in: found by this target).
    if (simdjson::validate_utf8(text.data(), text.size())) {
        tokmgr::server::detail::jwt_fields fields{std::string(text), 1'000'000'000, 1'000'000'060, "id"};
        const std::string token = tokmgr::server::detail::sign_hs256("fuzz key", fields);
        const auto own = tokmgr::server::detail::verify_hs256(token, "fuzz key", 1'000'000'000);
        FUZZ_CHECK(own.status == tokmgr::server::detail::jwt_status::valid);
        FUZZ_CHECK(own.subject == text);
    }

    // The client: any lifetime it reads is bounded and positive, or an error.
    std::error_code ec;
    const tokmgr::simdjson_json json;
    const auto lifetime = jwt_lifetime(json, text, std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000)),
                                       std::chrono::minutes(30), ec);
    FUZZ_CHECK(lifetime <= tokmgr::max_lifetime);
    FUZZ_CHECK(ec || lifetime > std::chrono::nanoseconds::zero());
    return 0;
}
