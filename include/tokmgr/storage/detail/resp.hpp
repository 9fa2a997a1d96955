// tokmgr/storage/detail/resp.hpp — RESP, the protocol Redis speaks, without
// I/O: an incremental reader of replies and an encoder of commands.
//
// Sans-I/O so that one parser serves a Redis client driven blocking or
// asynchronously alike, and so that it is unit-tested and fuzzed on its own
// (tests/redis/resp_test.cpp, tests/fuzz/resp_reader_fuzz.cpp). The reader
// takes bytes in pieces of any size and hands out whole replies; what it
// hands out, and where it fails, does not depend on where the pieces were cut.
//
// RESP2, and RESP3's types as Redis 7 sends them after HELLO 3; streamed
// RESP3 aggregates (`*?`) are refused, since Redis never sends them.
//
// Nothing the server sends is trusted: each length and count is checked
// against `limits` before anything is allocated for it, and a malformed
// stream is a sticky error (the framing is lost, so the connection must be
// dropped). Error details never quote the stream: a reply may carry a token.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "../../detail/decimal.hpp"
#include "../../errc.hpp"
#include "../../error.hpp"
#include "../../secret.hpp"

namespace tokmgr::detail::resp {

/// What one reader accepts. Passing a limit is errc::response_too_large; a
/// stream that breaks the protocol is errc::protocol_error.
struct limits {
    /// Aggregates inside aggregates. Each level is also a level of recursion
    /// when a reply is compared or destroyed.
    std::size_t max_depth = 16;
    /// A bulk string, blob error or verbatim string: refused from its header,
    /// before its bytes arrive.
    std::size_t max_bulk_bytes = 64 * 1024 * 1024;
    /// Elements of one aggregate; a map's keys and values count one each.
    std::size_t max_elements = 1024 * 1024;
    /// Values in one whole reply, nested ones included. A value costs a
    /// `reply` in memory (about 70 bytes) but may arrive as 3 bytes (`_\r\n`),
    /// so the bytes held alone would let a reply take some 25 times
    /// max_buffered_bytes.
    std::size_t max_values = 1024 * 1024;
    /// A line without its CR LF: a simple string, an error, a number, a length.
    std::size_t max_line_bytes = 64 * 1024;
    /// Bytes fed and not yet handed out: the reply begun plus what was fed
    /// after it. Bounds the reader's memory; above max_bulk_bytes so that
    /// the largest bulk string fits with its framing.
    std::size_t max_buffered_bytes = 128 * 1024 * 1024;
};

/// The reply's type, spelt as its first byte on the wire.
enum class reply_type : char {
    simple_string = '+',
    error = '-',  ///< also RESP3's blob error `!`
    integer = ':',
    bulk_string = '$',
    array = '*',
    null = '_',  ///< also RESP2's `$-1` and `*-1`: a client has no use for telling them apart
    boolean = '#',
    double_number = ',',
    big_number = '(',
    verbatim_string = '=',
    map = '%',
    set = '~',
    push = '>',
};

/// One reply. A RESP3 attribute (`|`) is read and dropped: it annotates the
/// reply after it, and nothing tokmgr sends asks for one.
struct reply {
    reply_type type = reply_type::null;
    /// Strings and errors; a verbatim string without its "txt:" prefix; a
    /// double or big number as sent (its spelling is exact, and no command
    /// tokmgr sends answers one).
    std::string text;
    /// An integer; a boolean is 1 or 0.
    std::int64_t integer = 0;
    /// An aggregate's elements; a map's keys and values alternate.
    std::vector<reply> elements;

    friend bool operator==(const reply& a, const reply& b) {
        return a.type == b.type && a.text == b.text && a.integer == b.integer && a.elements == b.elements;
    }
    friend bool operator!=(const reply& a, const reply& b) { return !(a == b); }
};

/// Wipes every string of a reply that may hold a token, then empties it.
inline void secure_clear(reply& r) noexcept {
    detail::secure_clear(r.text);
    for (reply& element : r.elements) secure_clear(element);
    r.elements.clear();
}

class reader {
public:
    explicit reader(limits bounds = {}) noexcept : limits_(bounds) {}
    reader(reader&&) = default;
    reader(const reader&) = delete;
    reader& operator=(const reader&) = delete;
    reader& operator=(reader&&) = delete;
    /// The buffer and a half-read reply held what the server sent.
    ~reader() {
        detail::secure_clear(buffer_);
        for (frame& open : stack_) secure_clear(open.value);
    }

    /// Appends bytes received. Fails when holding them would pass
    /// limits::max_buffered_bytes, and after any earlier failure.
    bool feed(std::string_view bytes, error_info& failed) {
        if (error_) return failed = error_, false;
        if (bytes.size() > limits_.max_buffered_bytes - buffered()) {
            fail(errc::response_too_large, "holding " + std::to_string(buffered() + bytes.size()) +
                                               " bytes would pass the limit of " +
                                               std::to_string(limits_.max_buffered_bytes) +
                                               " (the reply begun and what follows it: pull replies first)");
            return failed = error_, false;
        }
        compact();
        reserve_wiping(buffer_, buffer_.size() + bytes.size());
        buffer_.append(bytes);
        failed = {};
        return true;
    }

    /// Moves the next complete reply into `out` and returns true. False with
    /// `failed` empty: more bytes are needed. False with `failed` set: the
    /// stream is malformed or passed a limit, and stays failed.
    bool next(reply& out, error_info& failed) {
        failed = {};
        for (;;) {
            reply value;
            const step read = error_ ? step::failed : read_one(value);
            if (read == step::need_more) return false;
            if (read == step::failed) return failed = error_, false;
            if (read == step::value && deliver(std::move(value), out)) {
                partial_bytes_ = 0;
                values_ = 0;
                return true;
            }
        }
    }

    /// Bytes held: of a reply begun and of those fed after it. Not zero when
    /// the stream ends: the last reply was cut short.
    std::size_t buffered() const noexcept { return partial_bytes_ + (buffer_.size() - pos_); }

    const error_info& last_error() const noexcept { return error_; }

private:
    // What reading at pos_ gave: a whole value, or a header whose value is
    // still to come (an aggregate's elements, a bulk string's bytes).
    enum class step { need_more, failed, value, header };

    struct frame {
        reply value;
        std::size_t remaining;
        bool attribute;
    };

    /// Reads what is at pos_: a value, a header, or a bulk string's bytes.
    step read_one(reply& value) {
        if (bulk_) return read_bulk_payload(value);
        if (pos_ == buffer_.size()) return step::need_more;
        const char type = buffer_[pos_];
        if (!is_type(type)) return fail(errc::protocol_error, "a reply begins with a byte that is no RESP type");
        std::string_view line;
        const step got = take_line(line);
        if (got != step::value) return got;
        const std::size_t line_bytes = 1 + line.size() + 2;
        value.type = static_cast<reply_type>(type);
        switch (type) {
        case '+':
        case '-':
            value.text.assign(line);
            break;
        case ':': {
            const auto number = parse_integer(line);
            if (!number) return fail(errc::protocol_error, "an integer is not a 64-bit decimal number");
            value.integer = *number;
            break;
        }
        case '_':
            if (!line.empty()) return fail(errc::protocol_error, "a null has bytes after its type");
            break;
        case '#':
            if (line != "t" && line != "f") return fail(errc::protocol_error, "a boolean is neither t nor f");
            value.integer = line == "t";
            break;
        case ',':
            if (!is_double(line)) return fail(errc::protocol_error, "a double is not a number");
            value.text.assign(line);
            break;
        case '(':
            if (!all_digits(line.substr(negative(line))))  // any size: that is what it is for
                return fail(errc::protocol_error, "a big number is not a decimal number");
            value.text.assign(line);
            break;
        default: {  // the types with a length or a count
            std::optional<std::uint64_t> count;
            if (!parse_count(type, line, count)) return step::failed;
            if (!count) {  // RESP2's `$-1` and `*-1`
                value.type = reply_type::null;
                break;
            }
            const bool bulk = type == '$' || type == '!' || type == '=';
            return bulk ? read_bulk_header(type, *count, line_bytes) : read_aggregate_header(type, *count, line_bytes, value);
        }
        }
        consume(line_bytes);
        return step::value;
    }

    /// Checks a bulk header and moves on to its bytes, which read_one reads
    /// when they are all there.
    step read_bulk_header(char type, std::uint64_t length, std::size_t line_bytes) {
        if (length > limits_.max_bulk_bytes)
            return fail(errc::response_too_large, std::string(name_of(type)) + " of " + std::to_string(length) +
                                                      " bytes exceeds the limit of " +
                                                      std::to_string(limits_.max_bulk_bytes));
        if (type == '=' && length < 4)
            return fail(errc::protocol_error, "a verbatim string is shorter than its format prefix");
        consume(line_bytes);
        bulk_ = pending_bulk{type, static_cast<std::size_t>(length)};
        return step::header;
    }

    step read_bulk_payload(reply& value) {
        const std::size_t length = bulk_->length;
        const std::size_t available = buffer_.size() - pos_;
        if (available < length || available - length < 2) return step::need_more;
        if (buffer_[pos_ + length] != '\r' || buffer_[pos_ + length + 1] != '\n')
            return fail(errc::protocol_error, std::string(name_of(bulk_->type)) + " of " + std::to_string(length) +
                                                  " bytes is not followed by CR LF");
        const bool verbatim = bulk_->type == '=';
        if (verbatim && buffer_[pos_ + 3] != ':')
            return fail(errc::protocol_error, "a verbatim string has no format prefix");
        value.type = bulk_->type == '!' ? reply_type::error : static_cast<reply_type>(bulk_->type);
        value.text.assign(buffer_, pos_ + (verbatim ? 4 : 0), length - (verbatim ? 4 : 0));
        bulk_.reset();
        consume(length + 2);
        return step::value;
    }

    step read_aggregate_header(char type, std::uint64_t count, std::size_t line_bytes, reply& value) {
        const bool pairs = type == '%' || type == '|';
        if (count > (pairs ? limits_.max_elements / 2 : limits_.max_elements))
            return fail(errc::response_too_large,
                        std::string(name_of(type)) + " of " + std::to_string(count) + (pairs ? " pairs" : " elements") +
                            " exceeds the limit of " + std::to_string(limits_.max_elements) + " elements");
        if (stack_.size() >= limits_.max_depth)
            return fail(errc::response_too_large,
                        "aggregates nest deeper than the limit of " + std::to_string(limits_.max_depth));
        consume(line_bytes);
        const std::size_t elements = static_cast<std::size_t>(count) * (pairs ? 2 : 1);
        if (elements == 0) return type == '|' ? step::header : step::value;  // an empty attribute: nothing to keep
        // Reserved only up to a bound: the count is the server's word, and
        // the bytes that would back it have not arrived.
        value.elements.reserve(std::min<std::size_t>(elements, 64));
        stack_.push_back(frame{std::move(value), elements, type == '|'});
        return step::header;
    }

    /// Adds a finished value to the aggregate it belongs to and closes each
    /// aggregate it completes; true when a whole reply is in `out`.
    bool deliver(reply value, reply& out) {
        while (!stack_.empty()) {
            if (++values_ > limits_.max_values) {
                secure_clear(value);
                fail(errc::response_too_large, "a reply of more than " + std::to_string(limits_.max_values) +
                                                   " values in all exceeds the limit of " +
                                                   std::to_string(limits_.max_values));
                return false;
            }
            frame& top = stack_.back();
            top.value.elements.push_back(std::move(value));
            if (--top.remaining != 0) return false;
            const bool attribute = top.attribute;
            value = std::move(top.value);
            stack_.pop_back();
            if (attribute) return false;  // it annotated the next value, which still follows
        }
        secure_clear(out);  // a reused reply's strings would be freed unwiped by the assignment
        out = std::move(value);
        return true;
    }

    /// The line after the type byte at pos_, without its CR LF. Scans each
    /// byte once however the line arrives, and stops at the limit rather
    /// than waiting for a CR LF that may never come.
    step take_line(std::string_view& line) {
        const std::size_t start = pos_ + 1;
        for (std::size_t i = scanned_;; ++i) {
            scanned_ = i;
            if (start + i >= buffer_.size()) return step::need_more;
            const char c = buffer_[start + i];
            if (c == '\r') {
                if (start + i + 1 >= buffer_.size()) return step::need_more;
                if (buffer_[start + i + 1] != '\n') return fail(errc::protocol_error, "a line has a CR without LF");
                line = std::string_view(buffer_).substr(start, i);
                return step::value;
            }
            if (c == '\n') return fail(errc::protocol_error, "a line ends in LF without CR");
            if (i >= limits_.max_line_bytes)
                return fail(errc::response_too_large,
                            "a line is longer than the limit of " + std::to_string(limits_.max_line_bytes) + " bytes");
        }
    }

    /// A length or count into `count`; left empty for `-1`, a null where
    /// RESP2 has one. False when the line is neither.
    bool parse_count(char type, std::string_view line, std::optional<std::uint64_t>& count) {
        if (line == "-1" && (type == '$' || type == '*')) return true;
        if (negative(line))
            return fail(errc::protocol_error, std::string("the length of ") + name_of(type) + " is negative"), false;
        count = parse_decimal<std::uint64_t>(line);
        if (!count)
            return fail(errc::protocol_error,
                        std::string("the length of ") + name_of(type) + " is not a 64-bit decimal number"),
                   false;
        return true;
    }

    static std::optional<std::int64_t> parse_integer(std::string_view line) noexcept {
        if (!negative(line)) return parse_decimal<std::int64_t>(line);
        constexpr auto most_negative = std::uint64_t{1} << 63;
        const auto magnitude = parse_decimal<std::uint64_t>(line.substr(1));
        if (!magnitude || *magnitude > most_negative) return std::nullopt;
        return *magnitude == most_negative ? std::numeric_limits<std::int64_t>::min()
                                           : -static_cast<std::int64_t>(*magnitude);
    }

    static bool negative(std::string_view number) noexcept { return !number.empty() && number[0] == '-'; }

    static bool all_digits(std::string_view text) noexcept {
        return !text.empty() &&
               std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
    }

    /// RESP3's double: a decimal with an optional exponent, or inf, -inf, nan.
    static bool is_double(std::string_view text) noexcept {
        if (text == "inf" || text == "-inf" || text == "nan") return true;
        std::size_t i = !text.empty() && (text[0] == '-' || text[0] == '+');
        const auto digits = [&] {
            const std::size_t from = i;
            while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
            return i > from;
        };
        if (!digits()) return false;
        if (i < text.size() && text[i] == '.' && (++i, !digits())) return false;
        if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
            ++i;
            if (i < text.size() && (text[i] == '-' || text[i] == '+')) ++i;
            if (!digits()) return false;
        }
        return i == text.size();
    }

    static bool is_type(char c) noexcept {
        return std::string_view("+-:$*_#,(=!%~>|").find(c) != std::string_view::npos;
    }

    static const char* name_of(char type) noexcept {
        switch (type) {
        case '$': return "a bulk string";
        case '!': return "a blob error";
        case '=': return "a verbatim string";
        case '*': return "an array";
        case '%': return "a map";
        case '~': return "a set";
        case '>': return "a push";
        default: return "an attribute";
        }
    }

    void consume(std::size_t n) noexcept {
        pos_ += n;
        partial_bytes_ += n;
        scanned_ = 0;
    }

    /// Drops consumed bytes once they are half the buffer, so that each byte
    /// moves a bounded number of times; wiped, as they may hold a token.
    void compact() noexcept {
        if (pos_ == 0 || pos_ < buffer_.size() - pos_) return;
        secure_wipe(&buffer_[0], pos_);
        offset_ += pos_;
        buffer_.erase(0, pos_);
        pos_ = 0;
    }

    step fail(errc code, std::string detail) {
        error_ = {make_error_code(code), "RESP at byte " + std::to_string(offset_ + pos_) + ": " + detail};
        return step::failed;
    }

    struct pending_bulk {
        char type;
        std::size_t length;
    };

    limits limits_;
    std::string buffer_;
    std::size_t pos_ = 0;            // the first byte not yet read
    std::size_t scanned_ = 0;        // bytes of the line at pos_ already scanned for its CR LF
    std::size_t partial_bytes_ = 0;  // bytes read into the reply begun
    std::size_t values_ = 0;         // values read into the reply begun
    std::uint64_t offset_ = 0;       // bytes dropped from the front of buffer_, for messages
    std::optional<pending_bulk> bulk_;  // a bulk header read, its bytes awaited
    std::vector<frame> stack_;          // the aggregates open, outermost first
    error_info error_;
};

/// Appends one command — an array of bulk strings, as Redis reads them —
/// to `out`, after what it holds (pipelined commands). Arguments are
/// binary-safe. An argument may be a secret (AUTH's password, a token set):
/// the caller wipes `out` with detail::secure_clear once it is sent; if `out`
/// has to grow, its old buffer is wiped, so no copy is left in freed memory.
inline void encode_command(const std::vector<std::string_view>& arguments, std::string& out) {
    const auto header = [](char type, std::size_t n) { return type + std::to_string(n) + "\r\n"; };
    std::size_t size = out.size() + header('*', arguments.size()).size();
    for (std::string_view argument : arguments) size += header('$', argument.size()).size() + argument.size() + 2;
    reserve_wiping(out, size);
    out += header('*', arguments.size());
    for (std::string_view argument : arguments) {
        out += header('$', argument.size());
        out.append(argument).append("\r\n");
    }
}

/// The same into a new string, which the caller wipes when it holds a secret.
inline std::string encode_command(const std::vector<std::string_view>& arguments) {
    std::string out;
    encode_command(arguments, out);
    return out;
}

}  // namespace tokmgr::detail::resp
