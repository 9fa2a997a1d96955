// The reference server's request reader: pipelined requests read from a
// buffer that grows a piece at a time give the same requests and the same
// verdict as the whole buffer at once; the head cap holds.
#include <tokmgr/server/detail/request_parser.hpp>

#include <vector>

#include "fuzz_target.hpp"

namespace {

using namespace tokmgr::server::detail;

struct transcript {
    std::vector<std::string> requests;  // method, target, body of each complete request
    int status = 0;                     // of the failure, if any
};

transcript run(std::string_view wire, std::string_view cuts) {
    request_limits limits;
    limits.max_header_bytes = 1024;
    limits.max_body_bytes = 1024;
    request_reader reader(limits);
    parsed_request request;
    transcript t;
    std::string buffer;
    std::size_t offset = 0, cut = 0;
    while (offset < wire.size()) {
        std::size_t n = wire.size() - offset;
        if (!cuts.empty()) n = std::min<std::size_t>(n, 1 + static_cast<unsigned char>(cuts[cut++ % cuts.size()]) % 32);
        buffer.append(wire.substr(offset, n));
        offset += n;
        for (;;) {
            const auto outcome = reader.parse(buffer, request);
            if (outcome.state == parse_state::incomplete) {
                // Never waits on a head that is already over the cap.
                FUZZ_CHECK(buffer.size() <= limits.max_header_bytes + 4 + limits.max_body_bytes);
                break;
            }
            if (outcome.state == parse_state::failed) {
                FUZZ_CHECK(outcome.status >= 400 && outcome.status < 600);
                t.status = outcome.status;
                return t;
            }
            FUZZ_CHECK(outcome.consumed > 0 && outcome.consumed <= buffer.size());
            FUZZ_CHECK(request.body.size() <= limits.max_body_bytes);
            t.requests.push_back(request.method + ' ' + request.target + ' ' + request.body);
            buffer.erase(0, outcome.consumed);
        }
    }
    return t;
}

}  // namespace

// Input: 16 bytes of split sizes, then the bytes a client sends.
TOKMGR_FUZZ_TARGET(request_parser) {
    if (size < 16) return 0;
    const auto cuts = tokmgr_fuzz::as_text(data, 16);
    const auto wire = tokmgr_fuzz::as_text(data + 16, size - 16);
    const transcript whole = run(wire, {});
    const transcript split = run(wire, cuts);
    FUZZ_CHECK(whole.requests == split.requests);
    FUZZ_CHECK(whole.status == split.status);
    return 0;
}
