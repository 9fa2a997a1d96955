// tools/cli/store.hpp — what `--store` names: a token file (PATH), a key on a
// Redis server (redis://… or redis+unix://…), or a row in a PostgreSQL table
// (postgresql://…), the last two shared by processes on several hosts. The
// caller's code is written once, for any store.
#pragma once

#include <string>

#include <tokmgr/storage/file.hpp>
#if TOKMGR_CLI_WITH_REDIS
#include <tokmgr/storage/redis.hpp>
#endif
#if TOKMGR_CLI_WITH_POSTGRES
#include <tokmgr/storage/postgres.hpp>
#endif

#include "args.hpp"

namespace tokmgr_cli {

/// Whether `spec` names a Redis key rather than a file.
bool names_redis(const std::string& spec);
/// Whether `spec` names a PostgreSQL row (postgresql:// or postgres://).
bool names_postgres(const std::string& spec);

#if TOKMGR_CLI_WITH_REDIS
/// The Redis store `url` names. The password comes from the URL, else from
/// TOKMGR_REDIS_PASSWORD (so it need not be on the command line, where `ps`
/// shows it); --lease-ttl SECONDS sets how long a lease lives (default 60 s:
/// the transport's timeouts plus a margin). Throws usage_error.
tokmgr::redis_options redis_store_options(const parsed_options& args, const std::string& url);
#endif

#if TOKMGR_CLI_WITH_POSTGRES
/// The PostgreSQL store `url` names. The password comes from
/// TOKMGR_POSTGRES_PASSWORD or libpq's PGPASSFILE, never from the URL (which
/// `ps` shows: from_url refuses one); --lease-ttl as for Redis. Throws
/// usage_error.
tokmgr::postgres_options postgres_store_options(const parsed_options& args, const std::string& url);
#endif

/// `spec` as a token file's path. Throws usage_error when it names Redis or
/// PostgreSQL in a build without their client library, or comes with the
/// shared stores' --lease-ttl.
std::string file_store_path(const parsed_options& args, const std::string& spec);

/// Calls `use(storage)` with the store `spec` names.
template <class Use>
int with_store(const parsed_options& args, const std::string& spec, Use&& use) {
#if TOKMGR_CLI_WITH_REDIS
    if (names_redis(spec)) return use(tokmgr::redis_storage(redis_store_options(args, spec)));
#endif
#if TOKMGR_CLI_WITH_POSTGRES
    if (names_postgres(spec)) return use(tokmgr::postgres_storage(postgres_store_options(args, spec)));
#endif
    return use(tokmgr::file_storage(file_store_path(args, spec)));
}

}  // namespace tokmgr_cli
