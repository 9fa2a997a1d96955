// What the Redis tests that drive the fixture's server directly share: the
// numbers its fixture writes (port, pid), and stopping it with SIGSTOP.
#pragma once

#include <doctest/doctest.h>

#include <signal.h>
#include <sys/types.h>

#include <fstream>
#include <string>

namespace redis_test {

/// A number the fixture wrote in TOKMGR_TEST_REDIS_DIR ("port", "redis.pid").
inline int fixture_number(const char* file) {
    std::ifstream in(std::string(TOKMGR_TEST_REDIS_DIR) + "/" + file);
    int n = 0;
    in >> n;
    REQUIRE_MESSAGE(n > 0, "the redis fixture did not write " << file);
    return n;
}

/// Stops the fixture's redis-server (SIGSTOP) until destroyed: a server
/// that keeps its connections and answers nothing.
class stopped_redis {
public:
    stopped_redis() : pid_(fixture_number("redis.pid")) { REQUIRE(::kill(pid_, SIGSTOP) == 0); }
    stopped_redis(const stopped_redis&) = delete;
    stopped_redis& operator=(const stopped_redis&) = delete;
    ~stopped_redis() { ::kill(pid_, SIGCONT); }

private:
    pid_t pid_;
};

}  // namespace redis_test
