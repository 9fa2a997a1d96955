// What the PostgreSQL store's test files share: the fixture's port and
// files, test token sets, and a port that accepts and never answers.
#pragma once

#include <doctest/doctest.h>

#include <tokmgr/token_set.hpp>

#include "harness.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>

namespace postgres_test {

using namespace std::chrono_literals;

inline std::string fixture_file(const std::string& name) { return std::string(TOKMGR_TEST_POSTGRES_DIR) + "/" + name; }

inline int postgres_port() {
    static const int port = [] {
        std::ifstream in(fixture_file("port"));
        int p = 0;
        in >> p;
        return p;
    }();
    REQUIRE_MESSAGE(port > 0, "the postgres fixture did not write its port");
    return port;
}

inline std::string connection_for(const std::string& user, const std::string& extra = "") {
    return "host=127.0.0.1 port=" + std::to_string(postgres_port()) + " dbname=postgres user=" + user + " " + extra;
}

using test::set_of;

/// A loopback TCP port that accepts connections and never answers.
class silent_server {
public:
    silent_server() : fd_(test::listen_on_loopback(port_)) {}
    ~silent_server() { ::close(fd_); }
    int port() const { return port_; }

private:
    int port_ = 0;  // before fd_: initialised first, then written by listen_on_loopback
    int fd_ = -1;
};

}  // namespace postgres_test
