// tokmgr/server/stats_json.hpp — server_stats as one line of JSON, the form
// `tokmgr serve` prints when it stops and scripts read back.
#pragma once

#include <string>

#include "options.hpp"

namespace tokmgr::server {

/// `{"requests": 12, "logins": 1, ...}` on one line, every field of server_stats.
inline std::string to_json(const server_stats& s) {
    std::string out = "{";
    auto field = [&out](const char* name, std::uint64_t value) {
        if (out.size() > 1) out += ", ";
        out += '"';
        out += name;
        out += "\": ";
        out += std::to_string(value);
    };
    field("connections", s.connections);
    field("connections_timed_out", s.connections_timed_out);
    field("connections_refused", s.connections_refused);
    field("requests", s.requests);
    field("requests_malformed", s.requests_malformed);
    field("logins", s.logins);
    field("logins_rejected", s.logins_rejected);
    field("logins_refused_full", s.logins_refused_full);
    field("auth_requests_limited", s.auth_requests_limited);
    field("unsupported_media_type", s.unsupported_media_type);
    field("refreshes", s.refreshes);
    field("refreshes_rejected", s.refreshes_rejected);
    field("refresh_tokens_reused", s.refresh_tokens_reused);
    field("refresh_tokens_expired", s.refresh_tokens_expired);
    field("refresh_tokens_unknown", s.refresh_tokens_unknown);
    field("refresh_tokens_revoked", s.refresh_tokens_revoked);
    field("families_revoked", s.families_revoked);
    field("resources_served", s.resources_served);
    field("api_key_requests", s.api_key_requests);
    field("unauthorized", s.unauthorized);
    field("expired_jwts_presented", s.expired_jwts_presented);
    field("invalid_jwts_presented", s.invalid_jwts_presented);
    field("revoked_jwts_presented", s.revoked_jwts_presented);
    field("max_refreshes_in_flight", s.max_refreshes_in_flight);
    field("max_auth_requests_in_flight", s.max_auth_requests_in_flight);
    out += '}';
    return out;
}

}  // namespace tokmgr::server
