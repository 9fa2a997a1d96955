// The RESP reader: the same bytes give the same replies and the same error
// fed at once, in two pieces or byte by byte; no reply passes a limit; a
// message is made of the reader's own words; and any command the encoder
// writes reads back as itself.
#include <tokmgr/storage/detail/resp.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "fuzz_target.hpp"

namespace {

namespace resp = tokmgr::detail::resp;

struct outcome {
    std::vector<resp::reply> replies;
    tokmgr::error_info failed;
    std::size_t buffered = 0;
};

/// Feeds `wire` in pieces of `piece` bytes (the first one `first` bytes),
/// pulling every reply ready after each.
outcome run(std::string_view wire, const resp::limits& limits, std::size_t first, std::size_t piece) {
    resp::reader reader(limits);
    outcome o;
    for (std::size_t from = 0, n = first; from < wire.size() || from == 0; from += n, n = piece) {
        n = std::min(n, wire.size() - from);
        if (!reader.feed(wire.substr(from, n), o.failed)) break;
        resp::reply r;
        while (reader.next(r, o.failed)) o.replies.push_back(std::move(r));
        if (o.failed || from + n == wire.size()) break;
    }
    o.buffered = reader.buffered();
    return o;
}

std::size_t values_in(const resp::reply& r) {
    std::size_t n = r.elements.size();
    for (const auto& element : r.elements) n += values_in(element);
    return n;
}

void check_bounds(const resp::reply& r, const resp::limits& limits, std::size_t depth) {
    const bool aggregate = !r.elements.empty() || r.type == resp::reply_type::array ||
                           r.type == resp::reply_type::map || r.type == resp::reply_type::set ||
                           r.type == resp::reply_type::push;
    if (aggregate) FUZZ_CHECK(depth < limits.max_depth);
    FUZZ_CHECK(r.elements.size() <= limits.max_elements);
    FUZZ_CHECK(r.text.size() <= std::max(limits.max_bulk_bytes, limits.max_line_bytes));
    for (const auto& element : r.elements) check_bounds(element, limits, depth + 1);
}

/// The reader's messages are lowercase English, numbers and punctuation
/// (and the words RESP, CR, LF): never a byte of the stream outside those.
bool own_words(std::string text) {
    for (const char* word : {"RESP", "CR", "LF"})
        for (std::size_t at; (at = text.find(word)) != std::string::npos;) text.erase(at, std::string_view(word).size());
    return std::all_of(text.begin(), text.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || std::string_view(" :(),-").find(c) != std::string_view::npos;
    });
}

void check_command_round_trip(std::string_view bytes, const std::uint8_t* sizes) {
    std::vector<std::string_view> arguments;
    for (std::size_t from = 0, i = 0; from < bytes.size(); ++i) {
        const std::size_t n = i < 64 ? std::min<std::size_t>(sizes[i % 8], bytes.size() - from) : bytes.size() - from;
        arguments.push_back(bytes.substr(from, n));
        from += n;
    }
    std::string wire = "+";  // encoding appends to what the buffer holds
    resp::encode_command(arguments, wire);
    resp::encode_command(arguments, wire);
    FUZZ_CHECK(wire[0] == '+');
    const outcome o = run(std::string_view(wire).substr(1), {}, wire.size(), wire.size());
    FUZZ_CHECK(!o.failed && o.buffered == 0 && o.replies.size() == 2);
    for (const auto& command : o.replies) {
        FUZZ_CHECK(command.type == resp::reply_type::array && command.elements.size() == arguments.size());
        for (std::size_t i = 0; i < arguments.size(); ++i) {
            FUZZ_CHECK(command.elements[i].type == resp::reply_type::bulk_string);
            FUZZ_CHECK(command.elements[i].text == arguments[i]);
        }
    }
}

}  // namespace

// Input: two bytes of limits, two of the split point, eight argument sizes,
// then the stream.
TOKMGR_FUZZ_TARGET(resp_reader) {
    if (size < 12) return 0;
    resp::limits limits;
    limits.max_depth = 1 + (data[0] & 7);
    limits.max_bulk_bytes = (data[0] >> 3) * 9;
    limits.max_elements = data[1] & 15;
    limits.max_line_bytes = 4 + (data[1] >> 4) * 16;
    limits.max_values = 1 + (data[2] & 31);  // also the split point's low byte: limits are reached often
    limits.max_buffered_bytes = 1 << 20;  // past any input: what is held depends on the pulls
    const auto wire = tokmgr_fuzz::as_text(data + 12, size - 12);
    const std::size_t split = (data[2] | data[3] << 8) % (wire.size() + 1);

    const outcome whole = run(wire, limits, wire.size(), wire.size());
    const outcome split_in_two = run(wire, limits, split, wire.size());
    const outcome byte_by_byte = run(wire, limits, 1, 1);
    for (const outcome* other : {&split_in_two, &byte_by_byte}) {
        FUZZ_CHECK(other->replies == whole.replies);
        FUZZ_CHECK(other->failed.code == whole.failed.code);
        FUZZ_CHECK(other->failed.detail == whole.failed.detail);
        if (!whole.failed) FUZZ_CHECK(other->buffered == whole.buffered);  // a failed reader stops taking bytes
    }
    for (const auto& r : whole.replies) {
        check_bounds(r, limits, 0);
        FUZZ_CHECK(values_in(r) <= limits.max_values);
    }
    if (whole.failed) {
        FUZZ_CHECK(whole.failed.code == tokmgr::errc::protocol_error ||
                   whole.failed.code == tokmgr::errc::response_too_large);
        FUZZ_CHECK(own_words(whole.failed.detail));
    } else {
        FUZZ_CHECK(whole.buffered <= wire.size());
    }

    check_command_round_trip(wire, data + 4);
    return 0;
}
