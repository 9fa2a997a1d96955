// tokmgr/server/detail/refresh_registry.hpp — the reference server's refresh
// tokens: opaque, single use, grouped in families (one per login), with
// reuse detection after RFC 9700 §4.14.2: presenting a token that was
// already exchanged revokes every token of its family, the current one too.
//
// Memory is bounded: at most `max_families` logins are remembered, each with
// at most `max_retired_per_family` retired tokens (the oldest are forgotten
// first; presenting a forgotten one is then only "unknown", still refused).
// A family is dropped once all its tokens are past reuse detection, or under
// pressure once its newest token has expired; never while that token lives.
// Not thread-safe: the auth service calls it under its lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>

#include "crypto.hpp"

namespace tokmgr::server::detail {

class refresh_registry {
public:
    using time_point = std::chrono::system_clock::time_point;

    static constexpr std::size_t max_retired_per_family = 32;

    enum class result { rotated, unknown, expired, reused, revoked };

    struct rotation {
        result outcome = result::unknown;
        std::string user;       ///< the family's user, when known
        std::string new_token;  ///< when rotated
    };

    explicit refresh_registry(std::size_t max_families = 100'000) : max_families_(max_families) {}

    /// A new family for `user` (a login) and its first token; empty when
    /// `max_families` families are remembered and every one is still alive.
    std::string issue(std::string_view user, time_point now, std::chrono::seconds ttl) {
        if (families_.size() >= max_families_) {
            forget_dead(now, ttl);
            if (families_.size() >= max_families_) forget_expired(now);
            if (families_.size() >= max_families_) return {};
        }
        const std::uint64_t family_id = ++last_family_;
        std::string token = fresh_token();
        families_.emplace(family_id, family{std::string(user), token, {}, false});
        tokens_.emplace(token, entry{family_id, now + ttl, false});
        after_issue(now, ttl);
        return token;
    }

    /// Exchanges `token` for the next one of its family.
    rotation rotate(std::string_view token, time_point now, std::chrono::seconds ttl) {
        rotation r;
        const auto it = tokens_.find(std::string(token));
        if (it == tokens_.end()) return r;
        entry& presented = it->second;
        const auto fam_it = families_.find(presented.family_id);
        if (fam_it == families_.end()) return r;
        family& fam = fam_it->second;
        r.user = fam.user;
        if (presented.retired) {
            // Someone holds a copy of a token that was already exchanged: the
            // legitimate client or a thief. The server cannot tell which, so
            // neither may go on (RFC 9700 §4.14.2).
            r.outcome = result::reused;
            if (!fam.revoked) {
                fam.revoked = true;
                ++families_revoked_;
            }
            return r;
        }
        if (fam.revoked) {
            r.outcome = result::revoked;
            return r;
        }
        if (now >= presented.expires_at) {
            r.outcome = result::expired;
            return r;
        }
        presented.retired = true;
        fam.retired.push_back(fam.current);
        if (fam.retired.size() > max_retired_per_family) {
            tokens_.erase(fam.retired.front());
            fam.retired.pop_front();
        }
        r.new_token = fresh_token();
        fam.current = r.new_token;
        tokens_.emplace(r.new_token, entry{presented.family_id, now + ttl, false});
        r.outcome = result::rotated;
        after_issue(now, ttl);
        return r;
    }

    std::uint64_t families_revoked() const noexcept { return families_revoked_; }
    std::size_t tokens_remembered() const noexcept { return tokens_.size(); }
    std::size_t families_remembered() const noexcept { return families_.size(); }

private:
    struct entry {
        std::uint64_t family_id;
        time_point expires_at;
        bool retired;
    };
    struct family {
        std::string user;
        std::string current;
        std::deque<std::string> retired;  ///< oldest first
        bool revoked;
    };

    /// 256 random bits: guessing one is hopeless, and the spec asks for at least 128.
    static std::string fresh_token() { return random_token(32); }

    /// Retired tokens are remembered for a whole lifetime past their expiry,
    /// so reuse is caught while it still matters; after that they are
    /// forgotten, which keeps a long-running server's memory bounded.
    void after_issue(time_point now, std::chrono::seconds ttl) {
        if (++issued_since_sweep_ < 1024) return;
        forget_dead(now, ttl);
    }

    void forget_dead(time_point now, std::chrono::seconds ttl) {
        issued_since_sweep_ = 0;
        for (auto it = families_.begin(); it != families_.end();) {
            const auto current = tokens_.find(it->second.current);
            if (current == tokens_.end() || now >= current->second.expires_at + ttl) it = forget(it);
            else ++it;
        }
    }

    /// Under pressure: families whose newest token has expired can no longer
    /// be refreshed, so only reuse detection is lost by forgetting them.
    void forget_expired(time_point now) {
        for (auto it = families_.begin(); it != families_.end();) {
            const auto current = tokens_.find(it->second.current);
            if (current == tokens_.end() || now >= current->second.expires_at) it = forget(it);
            else ++it;
        }
    }

    std::unordered_map<std::uint64_t, family>::iterator forget(std::unordered_map<std::uint64_t, family>::iterator it) {
        for (const auto& token : it->second.retired) tokens_.erase(token);
        tokens_.erase(it->second.current);
        return families_.erase(it);
    }

    std::size_t max_families_;
    std::unordered_map<std::string, entry> tokens_;
    std::unordered_map<std::uint64_t, family> families_;
    std::uint64_t last_family_ = 0;
    std::uint64_t families_revoked_ = 0;
    unsigned issued_since_sweep_ = 0;
};

}  // namespace tokmgr::server::detail
