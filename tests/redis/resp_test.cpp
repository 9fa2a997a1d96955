// The RESP reader and command encoder (storage/detail/resp.hpp): no Redis,
// no Redis, no Asio, so these run in every build.
#include <tokmgr/storage/detail/resp.hpp>

#include <doctest/doctest.h>

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace resp = tokmgr::detail::resp;
using resp::reply;
using resp::reply_type;
using namespace std::string_literals;

namespace {

reply make(reply_type type, std::string text = {}, std::int64_t integer = 0, std::vector<reply> elements = {}) {
    return reply{type, std::move(text), integer, std::move(elements)};
}
reply bulk(std::string text) { return make(reply_type::bulk_string, std::move(text)); }
reply integer(std::int64_t n) { return make(reply_type::integer, {}, n); }
reply aggregate(reply_type type, std::vector<reply> elements) { return make(type, {}, 0, std::move(elements)); }
reply null() { return {}; }

struct outcome {
    std::vector<reply> replies;
    tokmgr::error_info failed;
    std::size_t buffered = 0;
};

/// Feeds `wire` cut at `cuts` (ascending offsets), pulling every reply
/// ready after each piece.
outcome read(std::string_view wire, const std::vector<std::size_t>& cuts = {}, resp::limits limits = {}) {
    resp::reader reader(limits);
    outcome o;
    std::size_t from = 0;
    std::vector<std::size_t> ends = cuts;
    ends.push_back(wire.size());
    for (const std::size_t end : ends) {
        if (!reader.feed(wire.substr(from, end - from), o.failed)) break;
        from = end;
        reply r;
        while (reader.next(r, o.failed)) o.replies.push_back(r);
        if (o.failed) break;
    }
    o.buffered = reader.buffered();
    return o;
}

tokmgr::error_info failure(std::string_view wire, resp::limits limits = {}) { return read(wire, {}, limits).failed; }

// A stream of every type, and what it reads as.
const std::string every_type_wire =
    "+OK\r\n"
    "-ERR wrong type\r\n"
    ":-42\r\n"
    "$5\r\nhello\r\n"
    "$0\r\n\r\n"
    "$-1\r\n"
    "*-1\r\n"
    "*3\r\n:1\r\n*2\r\n+a\r\n$1\r\nb\r\n*0\r\n"
    "_\r\n"
    "#t\r\n"
    "#f\r\n"
    ",-1.5e+3\r\n"
    ",inf\r\n"
    "(-3492890328409238509324850943850943825024385\r\n"
    "!8\r\nSYNTAX x\r\n"
    "=8\r\ntxt:some\r\n"
    "%2\r\n+k\r\n:1\r\n$2\r\nk2\r\n_\r\n"
    "~2\r\n:1\r\n:2\r\n"
    ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nmsg\r\n"
    "|1\r\n+ttl\r\n:3600\r\n$5\r\nvalue\r\n"
    "*2\r\n|1\r\n+a\r\n+b\r\n:7\r\n:8\r\n";

std::vector<reply> every_type_replies() {
    return {
        make(reply_type::simple_string, "OK"),
        make(reply_type::error, "ERR wrong type"),
        integer(-42),
        bulk("hello"),
        bulk(""),
        null(),
        null(),
        aggregate(reply_type::array,
                  {integer(1), aggregate(reply_type::array, {make(reply_type::simple_string, "a"), bulk("b")}),
                   aggregate(reply_type::array, {})}),
        null(),
        make(reply_type::boolean, {}, 1),
        make(reply_type::boolean, {}, 0),
        make(reply_type::double_number, "-1.5e+3"),
        make(reply_type::double_number, "inf"),
        make(reply_type::big_number, "-3492890328409238509324850943850943825024385"),
        make(reply_type::error, "SYNTAX x"),
        make(reply_type::verbatim_string, "some"),
        aggregate(reply_type::map, {make(reply_type::simple_string, "k"), integer(1), bulk("k2"), null()}),
        aggregate(reply_type::set, {integer(1), integer(2)}),
        aggregate(reply_type::push, {bulk("message"), bulk("ch"), bulk("msg")}),
        bulk("value"),  // its attribute dropped
        aggregate(reply_type::array, {integer(7), integer(8)}),
    };
}

}  // namespace

namespace tokmgr::detail::resp {
// For failure messages: the type and what the reply holds.
std::ostream& operator<<(std::ostream& os, const reply& r) {
    os << static_cast<char>(r.type) << '"' << r.text << "\" " << r.integer << " [";
    for (const reply& element : r.elements) os << element << ", ";
    return os << ']';
}
}  // namespace tokmgr::detail::resp

TEST_CASE("RESP: every type reads as its reply, in one pipelined stream") {
    const outcome o = read(every_type_wire);
    CHECK_MESSAGE(!o.failed, o.failed.message());
    CHECK(o.buffered == 0);
    const auto expected = every_type_replies();
    REQUIRE(o.replies.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        INFO("reply " << i);
        CHECK(o.replies[i] == expected[i]);
    }
}

TEST_CASE("RESP: the replies do not depend on where the stream is cut") {
    const auto expected = every_type_replies();
    SUBCASE("byte by byte") {
        std::vector<std::size_t> cuts;
        for (std::size_t i = 1; i < every_type_wire.size(); ++i) cuts.push_back(i);
        const outcome o = read(every_type_wire, cuts);
        CHECK_MESSAGE(!o.failed, o.failed.message());
        CHECK(o.replies == expected);
    }
    SUBCASE("at every split point") {
        for (std::size_t i = 0; i <= every_type_wire.size(); ++i) {
            INFO("split at " << i);
            const outcome o = read(every_type_wire, {i});
            CHECK_MESSAGE(!o.failed, o.failed.message());
            CHECK(o.replies == expected);
        }
    }
    SUBCASE("at every pair of split points of a shorter stream") {
        const std::string wire = "*2\r\n$3\r\na\r\n\r\n%1\r\n+k\r\n_\r\n:5\r\n";
        const auto whole = read(wire).replies;
        REQUIRE(whole.size() == 2);
        for (std::size_t i = 0; i <= wire.size(); ++i)
            for (std::size_t j = i; j <= wire.size(); ++j) {
                INFO("split at " << i << " and " << j);
                CHECK(read(wire, {i, j}).replies == whole);
            }
    }
}

TEST_CASE("RESP: a reply cut short waits for its bytes and counts them as held") {
    const outcome o = read("*2\r\n$5\r\nhel");
    CHECK_MESSAGE(!o.failed, o.failed.message());
    CHECK(o.replies.empty());
    CHECK(o.buffered == 11);
}

TEST_CASE("RESP: empty aggregates are replies; an empty attribute is dropped") {
    const outcome o = read("*0\r\n%0\r\n~0\r\n>0\r\n|0\r\n:1\r\n");
    CHECK(o.replies == std::vector<reply>{aggregate(reply_type::array, {}), aggregate(reply_type::map, {}),
                                          aggregate(reply_type::set, {}), aggregate(reply_type::push, {}), integer(1)});
}

TEST_CASE("RESP: bulk strings are binary-safe") {
    const std::string payload = "a\r\nb\0c\r\n\n\r"s;
    const outcome o = read("$" + std::to_string(payload.size()) + "\r\n" + payload + "\r\n");
    REQUIRE(o.replies.size() == 1);
    CHECK(o.replies[0].text == payload);
}

TEST_CASE("RESP: the integers at both ends of 64 bits") {
    const outcome o = read(":9223372036854775807\r\n:-9223372036854775808\r\n:0\r\n");
    CHECK(o.replies == std::vector<reply>{integer(INT64_MAX), integer(INT64_MIN), integer(0)});
}

TEST_CASE("RESP: each limit holds exactly at its bound and refuses one past it") {
    struct bound_case {
        std::size_t resp::limits::*limit;
        std::size_t bound;
        std::vector<std::string> at_bound;                         // each one reply
        std::vector<std::pair<std::string, std::string>> past_it;  // the wire, what the detail says
    };
    const bound_case cases[] = {
        {&resp::limits::max_depth, 3,
         {"*1\r\n*1\r\n*1\r\n:1\r\n", "*1\r\n%1\r\n*0\r\n:1\r\n"},
         {{"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", "RESP at byte 12: aggregates nest deeper than the limit of 3"},
          {"*1\r\n*1\r\n*1\r\n*0\r\n", "nest deeper"},
          {"|1\r\n*1\r\n*1\r\n*0\r\n+v\r\n+w\r\n", "nest deeper"}}},
        // Refused from the header, before the bytes arrive.
        {&resp::limits::max_bulk_bytes, 5,
         {"$5\r\nhello\r\n", "=5\r\ntxt:x\r\n", "!5\r\nERR x\r\n"},
         {{"$6\r\n", "RESP at byte 0: a bulk string of 6 bytes exceeds the limit of 5"},
          {"!6\r\n", "a blob error of 6 bytes"},
          {"=6\r\n", "a verbatim string of 6 bytes"}}},
        {&resp::limits::max_elements, 4,
         {"*4\r\n_\r\n_\r\n_\r\n_\r\n", "%2\r\n_\r\n_\r\n_\r\n_\r\n", "~4\r\n_\r\n_\r\n_\r\n_\r\n"},
         {{"*5\r\n", "RESP at byte 0: an array of 5 elements exceeds the limit of 4 elements"},
          {"~5\r\n", "a set of 5 elements"},
          {">5\r\n", "a push of 5 elements"},
          {"%3\r\n", "a map of 3 pairs"},
          {"|3\r\n", "an attribute of 3 pairs"}}},
        // A map's keys and values count one each: an odd bound holds one pair less.
        {&resp::limits::max_elements, 5, {"%2\r\n_\r\n_\r\n_\r\n_\r\n"}, {{"%3\r\n", "a map of 3 pairs"}}},
        // Refused before the CR LF arrives, when one may never come.
        {&resp::limits::max_line_bytes, 5,
         {"+hello\r\n", ":12345\r\n", "$00005\r\nhello\r\n"},
         {{"+hello!", "RESP at byte 0: a line is longer than the limit of 5 bytes"},
          {":123456\r\n", "longer than the limit"},
          {"$000005\r\nhello\r\n", "longer than the limit"}}},
        // Values in all, nested ones included: each aggregate within the
        // element limit, the whole reply past it (a value costs about 70
        // bytes in memory and may come as 3 on the wire).
        {&resp::limits::max_values, 3,
         {"*3\r\n_\r\n_\r\n_\r\n", "*1\r\n*2\r\n_\r\n_\r\n", "_\r\n"},
         {{"*1\r\n*3\r\n_\r\n_\r\n_\r\n", "RESP at byte 17: a reply of more than 3 values in all exceeds the limit of 3"},
          {"*2\r\n*2\r\n_\r\n_\r\n_\r\n", "values in all"}}},
    };
    for (const bound_case& c : cases) {
        resp::limits limits;
        limits.*c.limit = c.bound;
        for (const std::string& wire : c.at_bound) {
            INFO("at the bound " << c.bound << ": " << wire);
            const outcome o = read(wire, {}, limits);
            CHECK_MESSAGE(!o.failed, o.failed.message());
            CHECK(o.replies.size() == 1);
        }
        for (const auto& [wire, saying] : c.past_it) {
            INFO("past the bound " << c.bound << ": " << wire);
            const auto failed = failure(wire, limits);
            CHECK(failed.code == tokmgr::errc::response_too_large);
            CHECK_MESSAGE(failed.detail.find(saying) != std::string::npos, failed.detail);
        }
    }
}

TEST_CASE("RESP: the bytes held count the reply begun and what follows it, at and past the bound") {
    resp::limits limits;
    limits.max_buffered_bytes = 12;
    resp::reader reader(limits);
    tokmgr::error_info failed;
    CHECK(reader.feed("*2\r\n:1\r\n", failed));  // 8 bytes
    reply r;
    CHECK_FALSE(reader.next(r, failed));
    CHECK_FALSE(failed);
    CHECK(reader.feed(":2\r\n", failed));  // 12: exactly the limit
    CHECK(reader.next(r, failed));
    CHECK(reader.buffered() == 0);  // a reply handed out is no longer held
    CHECK(reader.feed("+123456789\r\n", failed));
    CHECK_FALSE(reader.feed("+", failed));
    CHECK(failed.code == tokmgr::errc::response_too_large);
    CHECK(failed.detail == "RESP at byte 12: holding 13 bytes would pass the limit of 12 (the reply begun and what follows it: pull replies first)");
}

TEST_CASE("RESP: a malformed stream is a protocol error") {
    const char* const malformed[] = {
        "?x\r\n",                     // no RESP type
        "\r\n",                       // nor is CR
        "+OK\n",                      // LF without CR
        "+O\rK\r\n",                  // CR without LF
        "$3\r\nabcde\r\n",            // payload longer than its length
        "$3\r\nab\r\n\r\n",           // ... or shorter
        "$abc\r\n",                   // a length that is no number
        "$\r\n",                      // an empty length
        "$+3\r\nabc\r\n",             // a sign
        "$ 3\r\nabc\r\n",             // a space
        "$-2\r\n",                    // negative, not -1
        "*-5\r\n",                    //
        "!-1\r\n",                    // -1 is a null only where RESP2 has one
        "%-1\r\n",                    //
        "$?\r\n",                     // RESP3's streamed strings, which Redis never sends
        "*?\r\n",                     // ... and aggregates
        "$18446744073709551616\r\n",  // a length past 64 bits
        ":9223372036854775808\r\n",   // an integer past 64 bits
        ":-9223372036854775809\r\n",  //
        ":1x\r\n",                    //
        ":\r\n",                      //
        ":-\r\n",                     //
        "#x\r\n",                     // a boolean neither t nor f
        "#\r\n",                      //
        "_x\r\n",                     // bytes after a null
        ",1.\r\n",                    // a double cut short
        ",abc\r\n",                   //
        ",\r\n",                      //
        "(12a\r\n",                   // a big number with a letter
        "(\r\n",                      //
        "=3\r\ntxt\r\n",              // a verbatim string without room for its prefix
        "=5\r\ntxt!x\r\n",            // ... or without its colon
    };
    for (const char* wire : malformed) {
        INFO("wire: " << wire);
        CHECK(failure(wire).code == tokmgr::errc::protocol_error);
    }
}

TEST_CASE("RESP: an error is sticky, for feed and next") {
    resp::reader reader;
    tokmgr::error_info failed;
    CHECK(reader.feed("+OK\r\n$x\r\n+later\r\n", failed));
    reply r;
    CHECK(reader.next(r, failed));
    CHECK_FALSE(reader.next(r, failed));
    REQUIRE(failed.code == tokmgr::errc::protocol_error);
    CHECK(failed.detail == "RESP at byte 5: the length of a bulk string is not a 64-bit decimal number");
    const auto first = failed;
    CHECK_FALSE(reader.next(r, failed));
    CHECK(failed.detail == first.detail);
    CHECK_FALSE(reader.feed("+OK\r\n", failed));
    CHECK(failed.detail == first.detail);
    CHECK(reader.last_error().detail == first.detail);
}

TEST_CASE("RESP: no error message quotes the stream") {
    // Each payload may be a token: the reader says what was wrong, with
    // lengths and offsets, and never repeats a byte of it.
    resp::limits limits;
    limits.max_bulk_bytes = 8;
    limits.max_line_bytes = 16;
    const char* const wires[] = {
        "$12\r\nSECRETTOKEN!\r\n",
        "$11\r\nSECRETTOKEN\r\r\n",
        "+SECRETTOKEN\n",
        "+SECRETTOKEN\rX\r\n",
        "+SECRETTOKENSECRETTOKEN\r\n",
        "$SECRETTOKEN\r\n",
        ":SECRETTOKEN\r\n",
        "#SECRETTOKEN\r\n",
        ",SECRETTOKEN\r\n",
        "(SECRETTOKEN\r\n",
        "_SECRETTOKEN\r\n",
        "*SECRETTOKEN\r\n",
        "=5\r\nSECRE\r\n",
        "SECRETTOKEN\r\n",
        "*1\r\nSECRETTOKEN\r\n",
    };
    for (const char* wire : wires) {
        INFO("wire: " << wire);
        const auto failed = failure(wire, limits);
        REQUIRE(failed);
        for (const std::string& piece : {"SEC"s, "ECR"s, "CRE"s, "RET"s, "TOK"s, "OKE"s, "KEN"s})
            CHECK(failed.message().find(piece) == std::string::npos);
    }
}

TEST_CASE("RESP: a command encodes as an array of bulk strings") {
    CHECK(resp::encode_command({"GET", "{k}"}) == "*2\r\n$3\r\nGET\r\n$3\r\n{k}\r\n");
    CHECK(resp::encode_command({}) == "*0\r\n");
    CHECK(resp::encode_command({""}) == "*1\r\n$0\r\n\r\n");
}

TEST_CASE("RESP: encoded commands read back through the reader, binary-safe and pipelined") {
    const std::string binary = "pa\r\nss\0word\r"s;
    const std::vector<std::string_view> auth = {"AUTH", "user", binary};
    const std::vector<std::string_view> get = {"GET", "", std::string_view("\0\n", 2)};
    std::string out = "PING\r\n";  // what the buffer already holds is kept
    resp::encode_command(auth, out);
    resp::encode_command(get, out);
    REQUIRE(out.rfind("PING\r\n", 0) == 0);
    const outcome o = read(std::string_view(out).substr(6));
    CHECK_MESSAGE(!o.failed, o.failed.message());
    REQUIRE(o.replies.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        const auto& command = i == 0 ? auth : get;
        CHECK(o.replies[i].type == reply_type::array);
        REQUIRE(o.replies[i].elements.size() == command.size());
        for (std::size_t j = 0; j < command.size(); ++j) CHECK(o.replies[i].elements[j] == bulk(std::string(command[j])));
    }
    tokmgr::detail::secure_clear(out);
}

TEST_CASE("RESP: secure_clear empties a reply with all its strings") {
    reply r = every_type_replies()[7];
    resp::secure_clear(r);
    CHECK(r.text.empty());
    CHECK(r.elements.empty());
}
