// A manager wired to the manual clock and the in-memory fake auth server.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <tokmgr/json/simdjson.hpp>
#include <tokmgr/testing/fake_auth_server.hpp>
#include <tokmgr/testing/fake_transport.hpp>
#include <tokmgr/testing/manual_clock.hpp>
#include <tokmgr/token_manager.hpp>

#include <stdlib.h>

#include <filesystem>
#include <system_error>

#if defined(TOKMGR_TEST_FILE_STORAGE)
#include <tokmgr/storage/file.hpp>
#endif

namespace test {

using namespace std::chrono_literals;

#if defined(TOKMGR_TEST_FILE_STORAGE)
/// file_storage on a file of its own in a fresh directory (on /dev/shm when
/// there, so fsync costs little), removed with the last copy: the whole core
/// suite runs unchanged on the file store (tokmgr_core_tests_file_storage).
class temp_file_storage : public tokmgr::file_storage {
public:
    temp_file_storage() : temp_file_storage(std::make_shared<directory>()) {}

private:
    struct directory {
        std::string path;
        directory() {
            std::string pattern = (std::filesystem::exists("/dev/shm") ? std::string("/dev/shm")
                                                                       : std::filesystem::temp_directory_path().string()) +
                                  "/tokmgr-core-XXXXXX";
            path = ::mkdtemp(pattern.data());
        }
        ~directory() {
            std::error_code ec;
            std::filesystem::remove_all(path, ec);
        }
    };
    explicit temp_file_storage(std::shared_ptr<directory> dir)
        : tokmgr::file_storage(dir->path + "/token.json"), dir_(std::move(dir)) {}
    std::shared_ptr<directory> dir_;
};
using storage_type = temp_file_storage;
#else
using storage_type = tokmgr::memory_storage;
#endif

using manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock, storage_type,
                                      tokmgr::simdjson_json>;

inline const std::string password = "correct horse battery staple";

/// A fresh directory for file_storage tests, removed afterwards.
struct temp_dir {
    std::filesystem::path path;
    temp_dir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "tokmgr-core-XXXXXX").string();
        path = ::mkdtemp(pattern.data());
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

struct harness {
    tokmgr::testing::manual_clock clock;
    tokmgr::testing::fake_auth_server server;
    tokmgr::testing::fake_transport transport;
    tokmgr::manager_options options;

    explicit harness(std::chrono::seconds jwt_lifetime = 30min, std::chrono::seconds refresh_lifetime = 10000min)
        : server(clock, settings(jwt_lifetime, refresh_lifetime)), transport(server) {
        options.assumed_lifetimes = tokmgr::lifetimes{jwt_lifetime, refresh_lifetime};
        options.jitter_fraction = 0;  // exact thresholds; jitter has its own tests
        options.jitter_seed = 42;
    }

    static tokmgr::testing::fake_auth_server::settings settings(std::chrono::seconds jwt, std::chrono::seconds refresh) {
        tokmgr::testing::fake_auth_server::settings s;
        s.password = password;
        s.jwt_lifetime = jwt;
        s.refresh_lifetime = refresh;
        return s;
    }

    std::unique_ptr<manager> make(std::string pw = password) {
        return std::make_unique<manager>(transport, tokmgr::credentials{"user@example.com", tokmgr::secret(pw)},
                                         options, clock);
    }

    /// The requests sent to `target` so far.
    std::size_t sent(const std::string& target) const {
        std::size_t n = 0;
        for (const auto& r : transport.requests()) n += r.target == target;
        return n;
    }
};

inline tokmgr::http_response status(int code, std::string body = "{}") { return {code, {}, std::move(body)}; }

}  // namespace test
