// The client's response parser: the same bytes split anywhere give the same
// outcome as fed at once, and nothing passes its limits.
#include <tokmgr/transport/detail/response_parser.hpp>

#include "fuzz_target.hpp"

namespace {

struct outcome {
    std::error_code ec;
    bool done = false;
    bool keep_alive = false;
    std::size_t consumed = 0;
    int status = 0;
    std::string body;
};

/// Feeds `wire` in pieces whose sizes come from `cuts` (0: all at once).
outcome run(std::string_view wire, std::string_view cuts, bool head, bool eof) {
    tokmgr::detail::response_limits limits;
    limits.max_body_bytes = 4096;
    limits.max_header_bytes = 2048;
    tokmgr::detail::response_parser parser(limits, head);
    outcome o;
    std::size_t offset = 0, cut = 0;
    while (offset < wire.size() && !parser.done()) {
        std::size_t n = wire.size() - offset;
        if (!cuts.empty()) n = std::min<std::size_t>(n, 1 + static_cast<unsigned char>(cuts[cut++ % cuts.size()]) % 16);
        const std::size_t used = parser.feed(wire.substr(offset, n), o.ec);
        FUZZ_CHECK(used <= n);
        o.consumed += used;
        offset += n;
        if (o.ec || used < n) break;
    }
    if (!o.ec && !parser.done() && eof) parser.finish(o.ec);
    o.done = parser.done();
    o.keep_alive = parser.keep_alive();
    FUZZ_CHECK(!o.ec || !o.keep_alive);  // an error never leaves a connection reusable
    o.status = parser.response().status;
    o.body = parser.response().body;
    FUZZ_CHECK(o.body.size() <= limits.max_body_bytes);
    return o;
}

}  // namespace

// Input: one flags byte, 16 bytes of split sizes, then the response.
TOKMGR_FUZZ_TARGET(response_parser) {
    if (size < 17) return 0;
    const bool head = data[0] & 1, eof = data[0] & 2;
    const auto cuts = tokmgr_fuzz::as_text(data + 1, 16);
    const auto wire = tokmgr_fuzz::as_text(data + 17, size - 17);
    const outcome whole = run(wire, {}, head, eof);
    const outcome split = run(wire, cuts, head, eof);
    FUZZ_CHECK(whole.ec == split.ec);
    FUZZ_CHECK(whole.done == split.done);
    FUZZ_CHECK(whole.keep_alive == split.keep_alive);
    FUZZ_CHECK(whole.status == split.status);
    if (!whole.ec) {
        FUZZ_CHECK(whole.body == split.body);
        if (whole.done) FUZZ_CHECK(whole.consumed == split.consumed);
    }
    return 0;
}
