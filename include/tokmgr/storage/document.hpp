// tokmgr/storage/document.hpp — the token-set document: the one persisted
// form of a token_set, written by every store that keeps it outside the
// process (the file store, a shared store later).
//
// A flat JSON object, version 1 (docs/storage.md describes every member):
//
//   {"format":"tokmgr-token-set","version":1,"generation":7,
//    "received_at_ms":1764625200000,"jwt":"eyJ...","jwt_lifetime_s":1800,
//    "refresh_token":"...","refresh_lifetime_s":600000,"refresh_token_spent":false}
//
// The reader is strict, because a document it half-understands could make a
// manager send a refresh token that was already spent:
// - "format" and "version" come first in meaning: whatever else is wrong, a
//   document of a later version is reported as such (the version found and
//   the one this build reads), so an old build beside a newer one says why.
// - Every member of version 1 is required and has one type. Numbers are
//   non-negative integers without fraction, exponent or leading zeros, and
//   within range: lifetimes at most tokmgr::max_lifetime, received_at_ms in
//   [1970, 2100), generation at most 2^53 - 1 (exact in every JSON reader),
//   so no deadline computed from a document overflows.
// - Unknown members are ignored, if well-formed: a later build may add
//   information an older one can safely drop (anything an older build must
//   understand bumps the version instead).
// - Duplicate keys, bytes after the object, more than 64 members and
//   documents over max_document_size are refused. Strings take the JSON escapes, but the
//   tokens must decode to visible ASCII (what an Authorization header can
//   carry); raw control characters are refused everywhere, as JSON says.
// - `refresh_token_spent: true` with a non-empty refresh token is refused:
//   no writer of this format produces it, and the encoder never writes a
//   spent token to storage (it writes "" when the mark is set).
//
// No dependency on Asio or a JSON library: the core stays free of them, and a
// parser for this one flat object is small enough to read in full.
#pragma once

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "../errc.hpp"
#include "../error.hpp"
#include "../secret.hpp"
#include "../token_set.hpp"

namespace tokmgr {

inline constexpr std::string_view token_set_format = "tokmgr-token-set";
/// The document version this build writes and the highest it reads.
inline constexpr std::uint64_t token_set_version = 1;
/// Larger documents are refused on both sides: JWTs are a few KiB at most.
inline constexpr std::size_t max_document_size = 64 * 1024;

namespace detail::document {

/// 2^53 - 1: the largest integer every JSON reader (JavaScript's included)
/// holds exactly. Two writes per refresh never get near it.
inline constexpr std::uint64_t max_generation = (std::uint64_t{1} << 53) - 1;
/// 2100-01-01T00:00:00Z. With a century of lifetime added it still fits the
/// nanosecond system_clock of libstdc++ (good until 2262).
inline constexpr std::uint64_t max_received_at_ms = 4102444800000ULL;
inline constexpr std::size_t max_nesting = 32;  ///< for unknown members' values
inline constexpr std::size_t max_members = 64;  ///< version 1 has 9; room for later additions

/// The members of version 1, in the order the encoder writes them.
inline constexpr std::string_view member_names[] = {
    "format",         "version",       "generation",         "received_at_ms",     "jwt",
    "jwt_lifetime_s", "refresh_token", "refresh_lifetime_s", "refresh_token_spent"};

inline bool is_token_char(char c) noexcept { return c > 0x20 && c < 0x7f; }

/// Why a member's value is refused, without ever quoting it.
inline void fail(error_info& failed, std::string text) {
    failed = {make_error_code(errc::storage_corrupt), std::move(text)};
}

enum class kind { string, number, boolean, other };

/// One member as the syntax pass finds it: its key (unescaped) and the raw
/// text of its value.
struct member {
    std::string key;
    std::string_view raw;
    kind type = kind::other;
};

/// Syntax pass over the whole text. Checks JSON well-formedness of a single
/// top-level object, refuses duplicates and trailing bytes, and hands every
/// member to `on_member`. Values are not interpreted here, so that a
/// document of a later version (which may nest values) is still recognised
/// as one and reported by its version.
class scanner {
public:
    scanner(std::string_view text, error_info& failed) : text_(text), failed_(failed) {}

    template <class OnMember>
    bool scan_object(OnMember&& on_member) {
        skip_ws();
        if (!consume('{')) return error("the text is not a JSON object");
        skip_ws();
        std::vector<std::string> seen_keys;
        if (consume('}')) return finish();
        for (;;) {
            skip_ws();
            member m;
            if (!peek('"')) return error("a member name is not a string");
            if (!read_string(&m.key)) return false;
            for (const auto& key : seen_keys)
                if (key == m.key) return error("member " + printable(m.key) + " appears twice");
            if (seen_keys.size() == max_members) return error("the document has more than 64 members");
            seen_keys.push_back(m.key);
            skip_ws();
            if (!consume(':')) return error("a ':' is missing after member " + printable(m.key));
            skip_ws();
            const std::size_t start = pos_;
            m.type = kind_at();
            if (!skip_value(0)) return false;
            m.raw = text_.substr(start, pos_ - start);
            if (!on_member(m)) return false;
            skip_ws();
            if (consume(',')) continue;
            if (consume('}')) return finish();
            return error("a ',' or '}' is missing after member " + printable(m.key));
        }
    }

    /// Decodes a string value (raw text including quotes) into `out`.
    static bool decode_string(std::string_view raw, std::string* out) {
        error_info ignored;
        scanner s(raw, ignored);
        return s.read_string(out) && s.pos_ == raw.size();
    }

private:
    bool finish() {
        skip_ws();
        if (pos_ != text_.size()) return error("bytes follow the closing '}' at offset " + std::to_string(pos_));
        return true;
    }

    bool error(std::string text) {
        fail(failed_, std::move(text));
        return false;
    }

    /// Only this format's own member names are quoted back: in a mangled
    /// document a token can end up where a name is expected.
    static std::string printable(const std::string& key) {
        for (std::string_view name : member_names)
            if (key == name) return "\"" + key + "\"";
        return "(an unknown member)";
    }

    void skip_ws() noexcept {
        while (pos_ < text_.size() &&
               (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
            ++pos_;
    }
    bool peek(char c) const noexcept { return pos_ < text_.size() && text_[pos_] == c; }
    bool consume(char c) noexcept {
        if (!peek(c)) return false;
        ++pos_;
        return true;
    }
    bool consume_word(std::string_view word) noexcept {
        if (text_.substr(pos_, word.size()) != word) return false;
        pos_ += word.size();
        return true;
    }

    kind kind_at() const noexcept {
        if (pos_ >= text_.size()) return kind::other;
        const char c = text_[pos_];
        if (c == '"') return kind::string;
        if (c == '-' || (c >= '0' && c <= '9')) return kind::number;
        if (c == 't' || c == 'f') return kind::boolean;
        return kind::other;
    }

    static int hex_value(char c) noexcept {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    }

    /// Reads a JSON string at pos_. `out` receives the decoded bytes (\u
    /// escapes above 0x7f are kept as a marker byte 0x80, which no caller
    /// accepts: tokens are ASCII, and keys of this format are too).
    bool read_string(std::string* out) {
        if (!consume('"')) return error("a string was expected");
        for (;;) {
            if (pos_ >= text_.size()) return error("a string is not terminated");
            const char c = text_[pos_++];
            if (c == '"') return true;
            if (static_cast<unsigned char>(c) < 0x20) return error("a string holds a raw control character");
            if (c != '\\') {
                if (out) out->push_back(c);
                continue;
            }
            if (pos_ >= text_.size()) return error("a string ends inside an escape");
            const char e = text_[pos_++];
            char decoded = 0;
            switch (e) {
            case '"': decoded = '"'; break;
            case '\\': decoded = '\\'; break;
            case '/': decoded = '/'; break;
            case 'b': decoded = '\b'; break;
            case 'f': decoded = '\f'; break;
            case 'n': decoded = '\n'; break;
            case 'r': decoded = '\r'; break;
            case 't': decoded = '\t'; break;
            case 'u': {
                if (text_.size() - pos_ < 4) return error("a \\u escape is cut short");
                unsigned value = 0;
                for (int i = 0; i < 4; ++i) {
                    const int h = hex_value(text_[pos_++]);
                    if (h < 0) return error("a \\u escape has a non-hex digit");
                    value = value * 16 + static_cast<unsigned>(h);
                }
                decoded = value < 0x80 ? static_cast<char>(value) : static_cast<char>(0x80);
                break;
            }
            default: return error("a string holds an unknown escape");
            }
            if (out) out->push_back(decoded);
        }
    }

    bool skip_number() {
        if (consume('-') && !(pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9'))
            return error("a number has no digits");
        auto digits = [&] {
            const std::size_t start = pos_;
            while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
            return pos_ - start;
        };
        if (peek('0')) {
            ++pos_;
            if (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9')
                return error("a number has a leading zero");
        } else if (digits() == 0) {
            return error("a value is not valid JSON");
        }
        if (consume('.') && digits() == 0) return error("a number has no digits after '.'");
        if (consume('e') || consume('E')) {
            if (!consume('+')) consume('-');
            if (digits() == 0) return error("a number has no exponent digits");
        }
        return true;
    }

    /// An array or object at pos_: `item` reads one element or member.
    template <class Item>
    bool skip_sequence(char close, const char* unclosed, Item&& item) {
        ++pos_;
        skip_ws();
        if (consume(close)) return true;
        for (;;) {
            skip_ws();
            if (!item()) return false;
            skip_ws();
            if (consume(',')) continue;
            if (consume(close)) return true;
            return error(unclosed);
        }
    }

    bool skip_value(std::size_t depth) {
        if (depth > max_nesting) return error("values are nested too deeply");
        if (pos_ >= text_.size()) return error("the document ends where a value was expected");
        switch (text_[pos_]) {
        case '"': return read_string(nullptr);
        case 't': return consume_word("true") || error("a value is not valid JSON");
        case 'f': return consume_word("false") || error("a value is not valid JSON");
        case 'n': return consume_word("null") || error("a value is not valid JSON");
        case '[': return skip_sequence(']', "an array is not closed", [&] { return skip_value(depth + 1); });
        case '{':
            return skip_sequence('}', "a nested object is not closed", [&] {
                if (!read_string(nullptr)) return false;
                skip_ws();
                if (!consume(':')) return error("a nested object lacks a ':'");
                skip_ws();
                return skip_value(depth + 1);
            });
        default: return skip_number();
        }
    }

    std::string_view text_;
    std::size_t pos_ = 0;
    error_info& failed_;
};

/// A non-negative integer member: digits only (the scanner already refused
/// leading zeros), parsed with from_chars so overflow is detected.
inline bool read_unsigned(const member& m, std::uint64_t max, std::uint64_t& out, error_info& failed) {
    if (m.type != kind::number) {
        fail(failed, "member \"" + m.key + "\" is not a number");
        return false;
    }
    if (m.raw.find_first_not_of("0123456789") != std::string_view::npos) {
        fail(failed, "member \"" + m.key + "\" is not a non-negative integer");
        return false;
    }
    const auto [end, result] = std::from_chars(m.raw.data(), m.raw.data() + m.raw.size(), out);
    if (result != std::errc() || end != m.raw.data() + m.raw.size() || out > max) {
        fail(failed, "member \"" + m.key + "\" is out of range (at most " + std::to_string(max) + ")");
        return false;
    }
    return true;
}

inline bool read_token(const member& m, secret& out, error_info& failed) {
    if (m.type != kind::string) {
        fail(failed, "member \"" + m.key + "\" is not a string");
        return false;
    }
    std::string value;
    value.reserve(m.raw.size());  // one allocation: no reallocation leaves a copy of the token behind
    const bool ok = scanner::decode_string(m.raw, &value);
    bool visible = ok;
    for (char c : value) visible = visible && is_token_char(c);
    if (!visible) {
        secure_clear(value);
        fail(failed, "member \"" + m.key + "\" holds characters a token cannot have (visible ASCII only)");
        return false;
    }
    out = secret(std::move(value));
    return true;
}

}  // namespace detail::document

/// Decodes a token-set document. Returns the set, or nullopt with `failed`
/// set to errc::storage_corrupt and a sentence saying what is wrong (member
/// names, offsets and versions; never a token).
///
/// The optional is the shape of `Storage::load`, so a store passes the
/// result through.
inline std::optional<token_set> decode_token_set(std::string_view text, error_info& failed) {
    namespace doc = detail::document;
    failed = {};
    if (text.size() > max_document_size) {
        doc::fail(failed, "the document is larger than " + std::to_string(max_document_size) + " bytes");
        return std::nullopt;
    }

    // Pass 1: syntax, duplicates, trailing bytes; remember where each known
    // member is so format and version are judged before anything else.
    const auto& names = doc::member_names;
    constexpr std::size_t n = sizeof(doc::member_names) / sizeof(doc::member_names[0]);
    doc::member found[n];
    bool present[n] = {};
    doc::scanner scan(text, failed);
    const bool well_formed = scan.scan_object([&](doc::member& m) {
        for (std::size_t i = 0; i < n; ++i)
            if (m.key == names[i]) {
                present[i] = true;
                found[i] = std::move(m);
            }
        return true;  // unknown members: well-formed, ignored
    });
    if (!well_formed) return std::nullopt;

    auto require = [&](std::size_t i) {
        if (present[i]) return true;
        doc::fail(failed, "member \"" + std::string(names[i]) + "\" is missing");
        return false;
    };

    if (!require(0)) return std::nullopt;
    std::string format;
    if (found[0].type != doc::kind::string || !doc::scanner::decode_string(found[0].raw, &format) ||
        format != token_set_format) {
        doc::fail(failed, "member \"format\" is not \"" + std::string(token_set_format) +
                               "\": this is not a tokmgr token-set document");
        return std::nullopt;
    }
    if (!require(1)) return std::nullopt;
    const std::string_view raw_version = found[1].raw;
    if (found[1].type == doc::kind::number &&
        raw_version.find_first_not_of("0123456789") == std::string_view::npos) {
        std::uint64_t version = 0;
        const auto [end, result] = std::from_chars(raw_version.data(), raw_version.data() + raw_version.size(), version);
        const bool too_big = result != std::errc() || end != raw_version.data() + raw_version.size();
        if (too_big || version > token_set_version) {
            doc::fail(failed,
                      "document version " + (raw_version.size() <= 20 ? std::string(raw_version) : "(huge)") +
                          " is newer than this build of tokmgr reads (version " +
                          std::to_string(token_set_version) + "); upgrade tokmgr, or remove the file to log in afresh");
            return std::nullopt;
        }
        if (version == 0) {
            doc::fail(failed, "document version 0 does not exist (versions start at 1)");
            return std::nullopt;
        }
    } else {
        doc::fail(failed, "member \"version\" is not a positive integer");
        return std::nullopt;
    }

    for (std::size_t i = 2; i < n; ++i)
        if (!require(i)) return std::nullopt;

    token_set set;
    std::uint64_t value = 0;
    if (!doc::read_unsigned(found[2], doc::max_generation, set.generation, failed)) return std::nullopt;
    if (!doc::read_unsigned(found[3], doc::max_received_at_ms, value, failed)) return std::nullopt;
    set.received_at = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::milliseconds(static_cast<std::int64_t>(value))));
    const auto max_seconds = static_cast<std::uint64_t>(max_lifetime.count());
    if (!doc::read_unsigned(found[5], max_seconds, value, failed)) return std::nullopt;
    set.jwt_lifetime = std::chrono::seconds(static_cast<std::int64_t>(value));
    if (!doc::read_unsigned(found[7], max_seconds, value, failed)) return std::nullopt;
    set.refresh_lifetime = std::chrono::seconds(static_cast<std::int64_t>(value));
    if (!doc::read_token(found[4], set.jwt, failed)) return std::nullopt;
    if (!doc::read_token(found[6], set.refresh_token, failed)) return std::nullopt;

    const std::string_view spent = found[8].raw;
    if (spent != "true" && spent != "false") {
        doc::fail(failed, "member \"refresh_token_spent\" is not true or false");
        return std::nullopt;
    }
    set.refresh_token_spent = spent == "true";
    if (set.refresh_token_spent && !set.refresh_token.empty()) {
        doc::fail(failed, "the refresh token is marked spent but still present; no tokmgr writes that");
        return std::nullopt;
    }
    return set;
}

/// As above, with the code alone.
inline std::optional<token_set> decode_token_set(std::string_view text, std::error_code& ec) {
    return detail::code_only(ec, [&](error_info& failed) { return decode_token_set(text, failed); });
}

/// Throwing form: tokmgr::error with errc::storage_corrupt and the reason.
inline token_set decode_token_set(std::string_view text) {
    auto set = detail::throw_on_failure([&](error_info& failed) { return decode_token_set(text, failed); },
                                        "token-set document");
    // Every nullopt above comes with `failed` set (the fuzzer checks it);
    // this keeps a future path that forgot from dereferencing nothing.
    if (!set) detail::throw_error({make_error_code(errc::storage_corrupt), "token-set document: unreadable"});
    return std::move(*set);
}

/// Encodes a token set as a version-1 document. The text holds the tokens,
/// so it comes back as a secret. Refuses (`failed`: errc::storage_failed and
/// a reason) what decode_token_set would refuse: a token that is not visible
/// ASCII, a lifetime over max_lifetime, a time outside [1970, 2100), a
/// generation over 2^53 - 1. A spent set is written with an empty refresh
/// token whatever the struct still holds: a spent token never reaches storage.
inline secret encode_token_set(const token_set& set, error_info& failed) {
    namespace doc = detail::document;
    failed = {};
    auto refuse = [&](std::string text) {
        failed = {make_error_code(errc::storage_failed), "the token set cannot be stored: " + std::move(text)};
        return secret();
    };
    const std::string_view jwt = set.jwt.reveal();
    const std::string_view refresh = set.refresh_token_spent ? std::string_view() : set.refresh_token.reveal();
    for (char c : jwt)
        if (!doc::is_token_char(c)) return refuse("the JWT holds characters other than visible ASCII");
    for (char c : refresh)
        if (!doc::is_token_char(c)) return refuse("the refresh token holds characters other than visible ASCII");
    if (set.generation > doc::max_generation) return refuse("the generation is over 2^53 - 1");
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(set.received_at.time_since_epoch()).count();
    if (ms < 0 || static_cast<std::uint64_t>(ms) > doc::max_received_at_ms)
        return refuse("received_at is outside 1970..2100");
    for (auto lifetime : {set.jwt_lifetime, set.refresh_lifetime})
        if (lifetime.count() < 0 || lifetime > max_lifetime)
            return refuse("a lifetime is negative or longer than tokmgr::max_lifetime");

    std::string text;
    // Reserved once for the worst case ('"' and '\\' double): no reallocation
    // leaves a copy of a token in freed memory.
    text.reserve(256 + 2 * (jwt.size() + refresh.size()));
    auto append_token = [&](std::string_view token) {
        text += '"';
        for (char c : token) {
            if (c == '"' || c == '\\') text += '\\';
            text += c;
        }
        text += '"';
    };
    text += "{\"format\":\"";
    text += token_set_format;
    text += "\",\"version\":";
    text += std::to_string(token_set_version);
    text += ",\"generation\":";
    text += std::to_string(set.generation);
    text += ",\"received_at_ms\":";
    text += std::to_string(ms);
    text += ",\"jwt\":";
    append_token(jwt);
    text += ",\"jwt_lifetime_s\":";
    text += std::to_string(set.jwt_lifetime.count());
    text += ",\"refresh_token\":";
    append_token(refresh);
    text += ",\"refresh_lifetime_s\":";
    text += std::to_string(set.refresh_lifetime.count());
    text += ",\"refresh_token_spent\":";
    text += set.refresh_token_spent ? "true" : "false";
    text += "}\n";
    if (text.size() > max_document_size) {
        detail::secure_clear(text);
        return refuse("the document would be larger than " + std::to_string(max_document_size) + " bytes");
    }
    return secret(std::move(text));
}

/// As above, with the code alone.
inline secret encode_token_set(const token_set& set, std::error_code& ec) {
    return detail::code_only(ec, [&](error_info& failed) { return encode_token_set(set, failed); });
}

/// Throwing form: tokmgr::error with errc::storage_failed and the reason.
inline secret encode_token_set(const token_set& set) {
    return detail::throw_on_failure([&](error_info& failed) { return encode_token_set(set, failed); });
}

}  // namespace tokmgr
