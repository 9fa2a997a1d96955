// tokmgr/protocol/refresh_registry.hpp — refresh tokens as the Textual server
// treats them, for the reference server and testing::fake_auth_server alike:
// opaque, single use, grouped in families (one per login), with reuse
// detection after RFC 9700 §4.14.2: presenting a token that was already
// exchanged revokes every token of its family, the current one too.
//
// Time and token text come from the owner: the reference server runs on the
// wall clock and mints random tokens, the fake on its manual clock with
// readable ones.
//
// Memory is bounded: at most `max_families` logins are remembered, each with
// at most `max_retired_per_family` retired tokens (the oldest are forgotten
// first; presenting a forgotten one is then only "unknown", still refused).
// A family is dropped once all its tokens are past reuse detection, or under
// pressure once its newest token has expired; never while that token lives.
// Not thread-safe: its owner calls it under its lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace tokmgr::protocol {

template <class TimePoint>
class refresh_registry {
public:
    using time_point = TimePoint;
    /// Makes the text of a new token; every call a different one.
    using token_source = std::function<std::string()>;

    static constexpr std::size_t max_retired_per_family = 32;

    enum class result { rotated, unknown, expired, reused, revoked };

    struct rotation {
        result outcome = result::unknown;
        std::string user;       ///< the family's user, when known
        std::string new_token;  ///< when rotated
    };

    explicit refresh_registry(token_source mint, std::size_t max_families = 100'000)
        : mint_(std::move(mint)), max_families_(max_families) {}

    /// A new family for `user` (a login) and its first token; empty when
    /// `max_families` families are remembered and every one is still alive.
    std::string issue(std::string_view user, time_point now, std::chrono::seconds ttl) {
        if (families_.size() >= max_families_) {
            forget_dead(now, ttl);
            if (families_.size() >= max_families_) forget_expired(now);
            if (families_.size() >= max_families_) return {};
        }
        const std::uint64_t family_id = ++last_family_;
        std::string token = mint_();
        families_.emplace(family_id, family{std::string(user), token, {}, false});
        tokens_.emplace(token, entry{family_id, later(now, ttl), false});
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
        // Mint and record the new token before retiring the presented one:
        // if minting or an allocation throws, the client's retry with the
        // same token must be a refresh, not a reuse that revokes its family.
        r.new_token = mint_();
        tokens_.emplace(r.new_token, entry{presented.family_id, later(now, ttl), false});
        fam.retired.push_back(fam.current);
        presented.retired = true;  // references into an unordered_map survive the emplace
        fam.current = r.new_token;
        if (fam.retired.size() > max_retired_per_family) {
            tokens_.erase(fam.retired.front());
            fam.retired.pop_front();
        }
        r.outcome = result::rotated;
        after_issue(now, ttl);
        return r;
    }

    std::uint64_t families_revoked() const noexcept { return families_revoked_; }
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

    /// `t + d`, or the latest representable time: lifetimes reach a
    /// century, and a retired token is kept a lifetime past its expiry.
    static time_point later(time_point t, std::chrono::seconds d) noexcept {
        using duration = typename time_point::duration;
        if (t >= time_point() &&
            std::chrono::duration_cast<std::chrono::seconds>(time_point::max() - t) <= d)
            return time_point::max();
        return t + std::chrono::duration_cast<duration>(d);
    }

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
            if (current == tokens_.end() || now >= later(current->second.expires_at, ttl)) it = forget(it);
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

    using family_iterator = typename std::unordered_map<std::uint64_t, family>::iterator;

    family_iterator forget(family_iterator it) {
        for (const auto& token : it->second.retired) tokens_.erase(token);
        tokens_.erase(it->second.current);
        return families_.erase(it);
    }

    token_source mint_;
    std::size_t max_families_;
    std::unordered_map<std::string, entry> tokens_;
    std::unordered_map<std::uint64_t, family> families_;
    std::uint64_t last_family_ = 0;
    std::uint64_t families_revoked_ = 0;
    unsigned issued_since_sweep_ = 0;
};

}  // namespace tokmgr::protocol
