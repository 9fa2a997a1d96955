// tools/cli/store.hpp — what `--store` names: a token file (PATH), or a key
// on a Redis server (redis://… or redis+unix://…) shared by processes on
// several hosts. The caller's code is written once, for either store.
#pragma once

#include <string>

#include <tokmgr/storage/file.hpp>
#if TOKMGR_CLI_WITH_REDIS
#include <tokmgr/storage/redis.hpp>
#endif

#include "args.hpp"

namespace tokmgr_cli {

/// Whether `spec` names a Redis key rather than a file.
bool names_redis(const std::string& spec);

#if TOKMGR_CLI_WITH_REDIS
/// The Redis store `url` names. The password comes from the URL, else from
/// TOKMGR_REDIS_PASSWORD (so it need not be on the command line, where `ps`
/// shows it); --lease-ttl SECONDS sets how long a lease lives (default 60 s:
/// the transport's timeouts plus a margin). Throws usage_error.
tokmgr::redis_options redis_store_options(const parsed_options& args, const std::string& url);
#endif

/// `spec` as a token file's path. Throws usage_error when it names Redis in
/// a build without hiredis, or comes with the Redis-only --lease-ttl.
std::string file_store_path(const parsed_options& args, const std::string& spec);

/// Calls `use(storage)` with the store `spec` names.
template <class Use>
int with_store(const parsed_options& args, const std::string& spec, Use&& use) {
#if TOKMGR_CLI_WITH_REDIS
    if (names_redis(spec)) return use(tokmgr::redis_storage(redis_store_options(args, spec)));
#endif
    return use(tokmgr::file_storage(file_store_path(args, spec)));
}

}  // namespace tokmgr_cli
