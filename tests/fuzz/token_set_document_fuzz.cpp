// The token-set document (storage/document.hpp): whatever a store holds, the
// decoder never crashes; what it accepts, the encoder writes back, and that
// text decodes to the same set; its error text never repeats a token.
#include <tokmgr/storage/document.hpp>

#include "fuzz_target.hpp"

TOKMGR_FUZZ_TARGET(token_set_document) {
    const auto text = tokmgr_fuzz::as_text(data, size);
    tokmgr::error_info failed;
    const auto decoded = tokmgr::decode_token_set(text, failed);
    FUZZ_CHECK(decoded.has_value() != static_cast<bool>(failed));
    if (!decoded) return 0;
    const tokmgr::token_set& set = *decoded;
    const tokmgr::secret encoded = tokmgr::encode_token_set(set, failed);
    FUZZ_CHECK(!failed);  // what the decoder accepts, the encoder writes
    const auto again = tokmgr::decode_token_set(encoded.reveal(), failed);
    FUZZ_CHECK(again.has_value());
    FUZZ_CHECK(again->jwt.reveal() == set.jwt.reveal());
    FUZZ_CHECK(again->refresh_token.reveal() == set.refresh_token.reveal());
    FUZZ_CHECK(again->generation == set.generation);
    FUZZ_CHECK(again->refresh_token_spent == set.refresh_token_spent);
    FUZZ_CHECK(again->jwt_lifetime == set.jwt_lifetime);
    FUZZ_CHECK(again->refresh_lifetime == set.refresh_lifetime);
    FUZZ_CHECK(again->received_at == set.received_at);
    // A document that differs from an accepted one in a token only must not
    // have that token quoted back when it is refused.
    if (set.jwt.reveal().size() >= 8) {
        std::string broken(encoded.reveal());
        broken += "x";  // trailing bytes: refused
        FUZZ_CHECK(!tokmgr::decode_token_set(broken, failed));
        FUZZ_CHECK(failed.detail.find(set.jwt.reveal()) == std::string::npos);
    }
    return 0;
}
