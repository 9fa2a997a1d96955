// The token-set document: what it writes, what it reads back, and every
// class of text it refuses, without ever quoting a token.
#include <doctest/doctest.h>

#include <tokmgr/storage/document.hpp>

#include <chrono>
#include <string>
#include <system_error>

namespace {

using namespace std::chrono_literals;

constexpr const char* jwt_text = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzdmMifQ.c2lnbmF0dXJl";
constexpr const char* refresh_text = "rt-SECRET-9b0f1c55a2e84d0f";

tokmgr::token_set sample_set() {
    tokmgr::token_set set;
    set.jwt = tokmgr::secret(jwt_text);
    set.refresh_token = tokmgr::secret(refresh_text);
    set.received_at = std::chrono::system_clock::time_point(std::chrono::milliseconds(1764625200123));
    set.jwt_lifetime = 1800s;
    set.refresh_lifetime = 600000s;
    set.generation = 7;
    return set;
}

std::string encoded(const tokmgr::token_set& set) { return std::string(tokmgr::encode_token_set(set).reveal()); }

/// Replaces the first occurrence of `from` (which must be there) in the
/// sample document.
std::string sample_with(std::string_view from, std::string_view to) {
    std::string text = encoded(sample_set());
    const auto at = text.find(from);
    REQUIRE(at != std::string::npos);
    text.replace(at, from.size(), to);
    return text;
}

/// Decodes text that must be refused; returns the reason, after checking
/// that it names no token and that the throwing overload agrees.
std::string refused(const std::string& text) {
    tokmgr::error_info failed;
    const auto set = tokmgr::decode_token_set(text, failed);
    CHECK_FALSE(set.has_value());
    CHECK(failed.code == tokmgr::errc::storage_corrupt);
    const std::string why = failed.detail;
    CHECK_FALSE(why.empty());
    CHECK(why.find("SECRET") == std::string::npos);
    CHECK(why.find("eyJ") == std::string::npos);
    std::error_code ec;
    CHECK_FALSE(tokmgr::decode_token_set(text, ec).has_value());
    CHECK(ec == tokmgr::errc::storage_corrupt);
    CHECK_THROWS_AS(tokmgr::decode_token_set(text), tokmgr::error);
    try {
        tokmgr::decode_token_set(text);
    } catch (const tokmgr::error& e) {
        CHECK(e.code() == tokmgr::errc::storage_corrupt);
        CHECK(std::string(e.what()).find("SECRET") == std::string::npos);
        // The three forms report one failure: the same code, the same sentence.
        CHECK(e.info().code == e.code());
        CHECK(e.info().detail == "token-set document: " + why);
        const tokmgr::error copy = e;  // shares its error_info: copying cannot throw
        CHECK(&copy.info() == &e.info());
    }
    return why;
}

}  // namespace

TEST_CASE("document: a token set survives encode and decode unchanged") {
    const auto original = sample_set();
    const auto text = encoded(original);
    CHECK(text.rfind("{\"format\":\"tokmgr-token-set\",\"version\":1,", 0) == 0);
    std::error_code ec;
    const auto decoded = tokmgr::decode_token_set(text, ec);
    REQUIRE(decoded);
    CHECK_FALSE(ec);
    CHECK(decoded->jwt == original.jwt);
    CHECK(decoded->refresh_token == original.refresh_token);
    CHECK(decoded->received_at == original.received_at);
    CHECK(decoded->jwt_lifetime == original.jwt_lifetime);
    CHECK(decoded->refresh_lifetime == original.refresh_lifetime);
    CHECK(decoded->generation == 7);
    CHECK_FALSE(decoded->refresh_token_spent);
}

TEST_CASE("document: the extremes of every range round-trip") {
    auto set = sample_set();
    set.generation = (std::uint64_t{1} << 53) - 1;
    set.jwt_lifetime = tokmgr::max_lifetime;
    set.refresh_lifetime = 0s;
    set.received_at = std::chrono::system_clock::time_point(std::chrono::milliseconds(4102444800000));
    set.jwt = tokmgr::secret(std::string("a\"b\\c~!"));  // the characters that need escaping
    const auto decoded = tokmgr::decode_token_set(encoded(set));
    CHECK(decoded.generation == set.generation);
    CHECK(decoded.jwt_lifetime == tokmgr::max_lifetime);
    CHECK(decoded.received_at == set.received_at);
    CHECK(decoded.jwt.reveal() == "a\"b\\c~!");
}

TEST_CASE("document: a spent set is written without its refresh token") {
    auto set = sample_set();
    set.refresh_token_spent = true;  // the struct still holds the token: the encoder must drop it
    const auto text = encoded(set);
    CHECK(text.find(refresh_text) == std::string::npos);
    const auto decoded = tokmgr::decode_token_set(text);
    CHECK(decoded.refresh_token_spent);
    CHECK(decoded.refresh_token.empty());
    CHECK(decoded.jwt == set.jwt);
}

TEST_CASE("document: whitespace, member order and unknown members are accepted") {
    const std::string text =
        " \n{ \"refresh_token_spent\" : false , \"jwt\":\"a.b.c\", \"future\": {\"nested\": [1, 2.5e3, null, true]},"
        "\"format\":\"tokmgr-token-set\",\"version\":1,\"generation\":0,\"received_at_ms\":0,"
        "\"jwt_lifetime_s\":0,\"refresh_token\":\"r\\u0041\\/\",\"refresh_lifetime_s\":60, \"note\":\"h\\u00e9\"}\r\n\t";
    const auto set = tokmgr::decode_token_set(text);
    CHECK(set.jwt.reveal() == "a.b.c");
    CHECK(set.refresh_token.reveal() == "rA/");
    CHECK(set.refresh_lifetime == 60s);
}

TEST_CASE("document: a later version is refused, saying which version was found and which is read") {
    // Even a document whose other members changed shape is reported by its version.
    const std::string text =
        R"({"format":"tokmgr-token-set","version":2,"tokens":{"jwt":"SECRET"},"generation":"seven"})";
    const auto why = refused(text);
    CHECK(why.find("version 2") != std::string::npos);
    CHECK(why.find("version 1") != std::string::npos);
    CHECK(refused(sample_with("\"version\":1", "\"version\":99999999999999999999999999")).find("newer") !=
          std::string::npos);
    CHECK(refused(sample_with("\"version\":1", "\"version\":0")).find("version 0") != std::string::npos);
    CHECK(refused(sample_with("\"version\":1", "\"version\":\"1\"")).find("version") != std::string::npos);
    CHECK(refused(sample_with("\"version\":1", "\"version\":1.0")).find("version") != std::string::npos);
}

TEST_CASE("document: another format, or none, is refused") {
    CHECK(refused(sample_with("tokmgr-token-set", "other-format")).find("format") != std::string::npos);
    CHECK(refused(sample_with("\"format\":\"tokmgr-token-set\",", "")).find("\"format\" is missing") !=
          std::string::npos);
    CHECK(refused("[1,2]").find("not a JSON object") != std::string::npos);
    refused("");
    refused("null");
}

TEST_CASE("document: every missing member is refused by name") {
    for (const char* name : {"version", "generation", "received_at_ms", "jwt", "jwt_lifetime_s", "refresh_token",
                             "refresh_lifetime_s", "refresh_token_spent"}) {
        CAPTURE(name);
        std::string text = encoded(sample_set());
        const auto start = text.find(std::string("\"") + name + "\":");
        REQUIRE(start != std::string::npos);
        const auto end = text.find_first_of(",}", text.find(':', start) + (name == std::string("jwt") ? 60 : 1));
        text.erase(start - 1, end - start + 1);  // the member and the comma before it
        CHECK(refused(text).find(std::string("\"") + name + "\" is missing") != std::string::npos);
    }
}

TEST_CASE("document: wrong types are refused by member name") {
    CHECK(refused(sample_with("\"generation\":7", "\"generation\":\"7\"")).find("\"generation\"") != std::string::npos);
    CHECK(refused(sample_with("\"jwt_lifetime_s\":1800", "\"jwt_lifetime_s\":true")).find("\"jwt_lifetime_s\"") !=
          std::string::npos);
    CHECK(refused(sample_with("\"refresh_token_spent\":false", "\"refresh_token_spent\":0"))
              .find("\"refresh_token_spent\"") != std::string::npos);
    CHECK(refused(sample_with("\"refresh_token_spent\":false", "\"refresh_token_spent\":null"))
              .find("\"refresh_token_spent\"") != std::string::npos);
    CHECK(refused(sample_with(std::string("\"jwt\":\"") + jwt_text + "\"", "\"jwt\":12")).find("\"jwt\"") !=
          std::string::npos);
    CHECK(refused(sample_with("\"refresh_token\":\"", "\"refresh_token\":[\"x\"],\"y\":\"")).find("\"refresh_token\"") !=
          std::string::npos);
}

TEST_CASE("document: numbers out of range, negative, fractional or padded are refused") {
    CHECK(refused(sample_with("\"generation\":7", "\"generation\":9007199254740992")).find("out of range") !=
          std::string::npos);
    CHECK(refused(sample_with("\"generation\":7", "\"generation\":18446744073709551616")).find("out of range") !=
          std::string::npos);
    CHECK(refused(sample_with("\"generation\":7", "\"generation\":-1")).find("non-negative") != std::string::npos);
    CHECK(refused(sample_with("\"generation\":7", "\"generation\":7.0")).find("non-negative") != std::string::npos);
    CHECK(refused(sample_with("\"generation\":7", "\"generation\":7e0")).find("non-negative") != std::string::npos);
    refused(sample_with("\"generation\":7", "\"generation\":07"));
    refused(sample_with("\"generation\":7", "\"generation\":+7"));
    CHECK(refused(sample_with("\"jwt_lifetime_s\":1800", "\"jwt_lifetime_s\":3155760001")).find("out of range") !=
          std::string::npos);
    CHECK(refused(sample_with("\"refresh_lifetime_s\":600000", "\"refresh_lifetime_s\":99999999999999"))
              .find("\"refresh_lifetime_s\"") != std::string::npos);
    CHECK(refused(sample_with("\"received_at_ms\":1764625200123", "\"received_at_ms\":4102444800001"))
              .find("\"received_at_ms\"") != std::string::npos);
}

TEST_CASE("document: duplicate keys, trailing bytes and oversized text are refused") {
    CHECK(refused(sample_with("\"generation\":7", "\"generation\":7,\"generation\":8")).find("twice") !=
          std::string::npos);
    // A duplicate spelled with an escape is still a duplicate.
    CHECK(refused(sample_with("\"generation\":7", "\"generation\":7,\"gener\\u0061tion\":8")).find("twice") !=
          std::string::npos);
    CHECK(refused(encoded(sample_set()) + "x").find("follow") != std::string::npos);
    CHECK(refused(encoded(sample_set()) + "{}").find("follow") != std::string::npos);
    refused(sample_with("{", "\xEF\xBB\xBF{"));  // a byte-order mark is not JSON whitespace
    const std::string padding(tokmgr::max_document_size, ' ');
    CHECK(refused(encoded(sample_set()) + padding).find("larger") != std::string::npos);
    std::string deep = sample_with("\"version\":1,", "\"version\":1,\"x\":");
    deep.insert(deep.find("\"x\":") + 4, std::string(40, '[') + std::string(40, ']') + ",");
    CHECK(refused(deep).find("nested") != std::string::npos);
}

TEST_CASE("document: malformed JSON is refused") {
    const std::string good = encoded(sample_set());
    refused(good.substr(0, good.size() / 2));  // torn in the middle
    refused(good.substr(0, good.size() - 2));  // the closing brace lost
    refused(sample_with("\"generation\":7,", "\"generation\":7,,"));
    refused(sample_with("\"generation\":7", "\"generation\" 7"));
    refused(sample_with("\"generation\":7", "generation:7"));
    refused(sample_with("\"format\":", "\"format\":tru,\"x\":"));
    refused(sample_with("\"jwt\":\"", "\"jwt\":\"\\x"));
    refused(sample_with("\"jwt\":\"", "\"jwt\":\"\\u12G4"));
}

TEST_CASE("document: control characters and non-ASCII tokens are refused") {
    // Raw control characters are not JSON.
    CHECK(refused(sample_with("\"jwt\":\"eyJ", "\"jwt\":\"\teyJ")).find("control") != std::string::npos);
    // Escaped ones are JSON, but no token can hold them.
    CHECK(refused(sample_with("\"jwt\":\"eyJ", "\"jwt\":\"\\neyJ")).find("\"jwt\"") != std::string::npos);
    CHECK(refused(sample_with("\"refresh_token\":\"rt", "\"refresh_token\":\"\\u0000rt")).find("\"refresh_token\"") !=
          std::string::npos);
    CHECK(refused(sample_with("\"refresh_token\":\"rt", "\"refresh_token\":\"\\u00e9rt")).find("\"refresh_token\"") !=
          std::string::npos);
    CHECK(refused(sample_with("\"refresh_token\":\"rt", "\"refresh_token\":\"\xC3\xA9rt")).find("\"refresh_token\"") !=
          std::string::npos);
    CHECK(refused(sample_with("\"refresh_token\":\"rt", "\"refresh_token\":\" rt")).find("\"refresh_token\"") !=
          std::string::npos);
}

TEST_CASE("document: a spent mark beside a refresh token is refused") {
    CHECK(refused(sample_with("\"refresh_token_spent\":false", "\"refresh_token_spent\":true")).find("spent") !=
          std::string::npos);
}

TEST_CASE("document: a mangled document never quotes what stands where a name should be") {
    // A lost quote makes the refresh token parse as a member name.
    const auto why = refused(sample_with("\"refresh_token\":\"", "\"refresh_token\":\"\",\""));
    CHECK(why.find("unknown member") != std::string::npos);
}

TEST_CASE("document: the encoder refuses what the decoder would refuse") {
    auto check_refused = [](const tokmgr::token_set& set, std::string_view expected) {
        tokmgr::error_info failed;
        const auto text = tokmgr::encode_token_set(set, failed);
        CHECK(failed.code == tokmgr::errc::storage_failed);
        CHECK(text.empty());
        CHECK(failed.detail.find(expected) != std::string::npos);
        CHECK(failed.detail.find("SECRET") == std::string::npos);
        std::error_code ec;
        CHECK(tokmgr::encode_token_set(set, ec).empty());
        CHECK(ec == tokmgr::errc::storage_failed);
        CHECK_THROWS_AS(tokmgr::encode_token_set(set), tokmgr::error);
    };
    auto set = sample_set();
    set.refresh_token = tokmgr::secret(std::string("SECRET\n"));
    check_refused(set, "refresh token");
    set = sample_set();
    set.jwt = tokmgr::secret(std::string("SECRET \x01"));
    check_refused(set, "JWT");
    set = sample_set();
    set.jwt_lifetime = tokmgr::max_lifetime + 1s;
    check_refused(set, "lifetime");
    set = sample_set();
    set.refresh_lifetime = -1s;
    check_refused(set, "lifetime");
    set = sample_set();
    set.generation = std::uint64_t{1} << 53;
    check_refused(set, "generation");
    set = sample_set();
    set.received_at = std::chrono::system_clock::time_point(-1ms);
    check_refused(set, "received_at");
    set = sample_set();
    set.jwt = tokmgr::secret(std::string(tokmgr::max_document_size, 'a'));
    check_refused(set, "larger");
}
