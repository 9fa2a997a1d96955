// tools/cli/store.hpp — what `--store` names: a token file (PATH), or a key
// on a Redis server (redis://… or redis+unix://…) shared by processes on
// several hosts. The caller's code is written once, for either store.
#pragma once

#include <string>
#include <string_view>

#include <tokmgr/storage/file.hpp>
#if TOKMGR_CLI_WITH_REDIS
#include <tokmgr/storage/redis.hpp>
#endif

#include "args.hpp"
#include "client_setup.hpp"

namespace tokmgr_cli {

inline bool names_redis(std::string_view store) {
    return store.rfind("redis://", 0) == 0 || store.rfind("redis+unix://", 0) == 0;
}

/// Calls `use(storage)` with the store `spec` names. The Redis password comes
/// from the URL, else from TOKMGR_REDIS_PASSWORD (so it need not be on the
/// command line, where `ps` shows it); --lease-ttl SECONDS sets how long a
/// Redis lease lives (default 60 s: the transport's timeouts plus a margin).
template <class Use>
int with_store(const parsed_options& args, const std::string& spec, Use&& use) {
    if (names_redis(spec)) {
#if TOKMGR_CLI_WITH_REDIS
        std::error_code ec;
        std::string why;
        auto options = tokmgr::redis_options::from_url(spec, ec, &why);
        if (ec) throw usage_error{"--store: " + why};
        if (options.password.empty()) {
            if (const char* env = std::getenv("TOKMGR_REDIS_PASSWORD"); env && *env)
                options.password = tokmgr::secret(env);
        }
        if (auto ttl = args.get("lease-ttl"))
            options.lease_ttl = std::chrono::milliseconds(
                static_cast<std::int64_t>(parse_positive_seconds(*ttl, 3600, "--lease-ttl") * 1000));
        return use(tokmgr::redis_storage(std::move(options)));
#else
        throw usage_error{"--store names a Redis server, but this tokmgr was built without hiredis; "
                          "install libhiredis-dev and rebuild, or use a file path"};
#endif
    }
    if (args.get("lease-ttl")) throw usage_error{"--lease-ttl applies to a redis:// store only"};
    return use(tokmgr::file_storage(spec));
}

}  // namespace tokmgr_cli
