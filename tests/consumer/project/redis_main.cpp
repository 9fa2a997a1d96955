// The installed tokmgr::redis, used as a consumer would: a store whose
// server cannot be reached reports storage_unreachable with a detail naming it.
#include <tokmgr/concepts.hpp>
#include <tokmgr/storage/redis.hpp>

#include <iostream>

int main() {
    static_assert(tokmgr::is_coordinating_storage_v<tokmgr::redis_storage>);
    tokmgr::redis_options options;
    options.port = 1;  // nothing serves Redis on port 1
    tokmgr::redis_storage store(options);
    std::error_code ec;
    store.load(ec);
    std::cout << store.last_error().detail << "\n";
    return ec == tokmgr::errc::storage_unreachable && !store.last_error().detail.empty() ? 0 : 1;
}
