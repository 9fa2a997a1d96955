#include "store.hpp"

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <system_error>

namespace tokmgr_cli {

bool names_redis(const std::string& spec) {
    return spec.rfind("redis://", 0) == 0 || spec.rfind("rediss://", 0) == 0 || spec.rfind("redis+unix://", 0) == 0;
}

bool names_postgres(const std::string& spec) {
    return spec.rfind("postgresql://", 0) == 0 || spec.rfind("postgres://", 0) == 0;
}

namespace {

/// --lease-ttl SECONDS, for either shared store.
std::chrono::milliseconds lease_ttl_from(const parsed_options& args, std::chrono::milliseconds otherwise) {
    if (auto ttl = args.get("lease-ttl"))
        return std::chrono::milliseconds(
            static_cast<std::int64_t>(parse_positive_seconds(*ttl, 3600, "--lease-ttl") * 1000));
    return otherwise;
}

}  // namespace

#if TOKMGR_CLI_WITH_REDIS
tokmgr::redis_options redis_store_options(const parsed_options& args, const std::string& url) {
    tokmgr::error_info failed;
    auto options = tokmgr::redis_options::from_url(url, failed);
    if (failed) throw usage_error{"--store: " + failed.detail};
    const auto ca = args.get("store-ca-file"), cert = args.get("store-cert-file"), key = args.get("store-key-file");
    if (!options.tls && (ca || cert || key))  // never a certificate given for a plaintext connection
        throw usage_error{"--store-ca-file, --store-cert-file and --store-key-file are for TLS: use a rediss:// URL"};
    if (bool(cert) != bool(key))
        throw usage_error{"--store-cert-file and --store-key-file go together (a client certificate and its key)"};
    if (ca) options.tls_ca_file = *ca;
    if (cert) options.tls_cert_file = *cert;
    if (key) options.tls_key_file = *key;
    if (options.password.empty()) {
        if (const char* env = std::getenv("TOKMGR_REDIS_PASSWORD"); env && *env) options.password = tokmgr::secret(env);
    }
    options.lease_ttl = lease_ttl_from(args, options.lease_ttl);
    return options;
}
#endif

#if TOKMGR_CLI_WITH_POSTGRES
tokmgr::postgres_options postgres_store_options(const parsed_options& args, const std::string& url) {
    tokmgr::error_info failed;
    auto options = tokmgr::postgres_options::from_url(url, failed);
    if (failed) throw usage_error{"--store: " + failed.detail};
    if (const char* env = std::getenv("TOKMGR_POSTGRES_PASSWORD"); env && *env) options.password = tokmgr::secret(env);
    options.lease_ttl = lease_ttl_from(args, options.lease_ttl);
    return options;
}
#endif

std::string file_store_path(const parsed_options& args, const std::string& spec) {
    if (names_redis(spec))
        throw usage_error{"--store names a Redis server, but this tokmgr was built without its Redis store; "
                          "rebuild it with tokmgr::redis, or use a file path"};
    if (names_postgres(spec))
        throw usage_error{"--store names a PostgreSQL database, but this tokmgr was built without libpq; "
                          "install libpq-dev and rebuild, or use a file path"};
    if (args.get("lease-ttl")) throw usage_error{"--lease-ttl applies to a redis:// or postgresql:// store only"};
    if (args.get("store-ca-file") || args.get("store-cert-file") || args.get("store-key-file"))
        throw usage_error{"--store-ca-file, --store-cert-file and --store-key-file apply to a rediss:// store only"};
    return spec;
}

}  // namespace tokmgr_cli
