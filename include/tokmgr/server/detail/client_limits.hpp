// tokmgr/server/detail/client_limits.hpp — what one client address may take
// from the reference server: open connections (a cap per address and one for
// the whole server) and login + token_refresh requests per minute (the real
// server's SOLAR_AUTH_RPM_LIMIT). No Asio: addresses are strings, time is
// passed in, so every rule is tested without a socket or a sleep.
//
// Thread-safe: the server's threads accept and answer concurrently.
#pragma once

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace tokmgr::server::detail {

struct client_limits_config {
    std::size_t max_connections = 512;            ///< 0: no cap
    std::size_t max_connections_per_client = 128; ///< 0: no cap
    std::uint32_t auth_requests_per_minute = 600;  ///< 0: no limit
    /// Addresses whose rate state is remembered at once; past it, fully
    /// recovered addresses are forgotten, and if none is, a new address is
    /// refused rather than let the table grow without bound.
    std::size_t max_tracked_clients = 65'536;
};

class client_limits {
public:
    using clock = std::chrono::steady_clock;

    using config = client_limits_config;

    explicit client_limits(config c = {}) : config_(c) {}

    client_limits(const client_limits&) = delete;
    client_limits& operator=(const client_limits&) = delete;

    /// Takes a connection slot for `client`; false when a cap is reached.
    bool open_connection(std::string_view client) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (config_.max_connections != 0 && open_ >= config_.max_connections) return false;
        auto it = connections_.find(std::string(client));
        const std::size_t held = it == connections_.end() ? 0 : it->second;
        if (config_.max_connections_per_client != 0 && held >= config_.max_connections_per_client) return false;
        if (it == connections_.end()) it = connections_.emplace(std::string(client), 0).first;
        ++it->second;
        ++open_;
        return true;
    }

    void close_connection(std::string_view client) noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto it = connections_.find(std::string(client));
        if (it == connections_.end()) return;
        --open_;
        if (--it->second == 0) connections_.erase(it);
    }

    std::size_t open_connections() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return open_;
    }

    /// Admits one login or token_refresh from `client` at `now`, or says in
    /// `retry_after` how long until one would be admitted.
    ///
    /// A generic cell rate algorithm: each request advances the client's
    /// "theoretical arrival time" by 60 s / limit, and a request is admitted
    /// while that time is less than a minute ahead of now. So a client may
    /// send `limit` requests at once after a quiet minute, and then one every
    /// 60 s / limit, which is never more than `limit` in any minute plus one
    /// burst. Constant memory per client, no log of timestamps.
    bool admit_auth_request(std::string_view client, clock::time_point now, std::chrono::seconds& retry_after) {
        if (config_.auth_requests_per_minute == 0) return true;
        const auto interval = std::chrono::duration_cast<clock::duration>(std::chrono::minutes(1)) /
                              config_.auth_requests_per_minute;
        const auto tolerance = std::chrono::duration_cast<clock::duration>(std::chrono::minutes(1)) - interval;
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = arrival_.find(std::string(client));
        if (it == arrival_.end()) {
            if (arrival_.size() >= config_.max_tracked_clients) forget_recovered(now);
            if (arrival_.size() >= config_.max_tracked_clients) {
                retry_after = std::chrono::seconds(1);
                return false;
            }
            it = arrival_.emplace(std::string(client), now).first;
        }
        clock::time_point& tat = it->second;
        if (tat < now) tat = now;
        if (tat - now > tolerance) {
            const auto wait = std::chrono::duration<double>(tat - tolerance - now).count();
            retry_after = std::chrono::seconds(static_cast<std::int64_t>(std::ceil(wait)));
            if (retry_after.count() < 1) retry_after = std::chrono::seconds(1);
            return false;
        }
        tat += interval;
        return true;
    }

    std::size_t tracked_clients() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return arrival_.size();
    }

private:
    /// A client whose theoretical arrival time has passed has its full quota
    /// again: remembering it changes nothing.
    void forget_recovered(clock::time_point now) {
        for (auto it = arrival_.begin(); it != arrival_.end();) {
            if (it->second <= now) it = arrival_.erase(it);
            else ++it;
        }
    }

    config config_;
    mutable std::mutex mutex_;
    std::size_t open_ = 0;
    std::unordered_map<std::string, std::size_t> connections_;
    std::unordered_map<std::string, clock::time_point> arrival_;
};

/// A connection's slot, given back when the connection is destroyed.
class connection_slot {
public:
    connection_slot() = default;
    connection_slot(client_limits& limits, std::string client) : limits_(&limits), client_(std::move(client)) {}
    connection_slot(connection_slot&& other) noexcept
        : limits_(std::exchange(other.limits_, nullptr)), client_(std::move(other.client_)) {}
    connection_slot& operator=(connection_slot&&) = delete;
    connection_slot(const connection_slot&) = delete;
    ~connection_slot() {
        if (limits_) limits_->close_connection(client_);
    }
    const std::string& client() const noexcept { return client_; }

private:
    client_limits* limits_ = nullptr;
    std::string client_;
};

}  // namespace tokmgr::server::detail
