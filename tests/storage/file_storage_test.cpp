// file_storage: what reaches the disk, who may read it, what happens to a
// bad file, and the lease, between objects, threads and processes, including
// writers and holders killed -9.
#include <doctest/doctest.h>

#include <tokmgr/concepts.hpp>
#include <tokmgr/storage/file.hpp>

#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using tokmgr::errc;
using tokmgr::file_storage;

/// A fresh 0700 directory, removed with everything in it at the end.
class temp_dir {
public:
    temp_dir() {
        const char* base = std::getenv("TMPDIR");
        std::string pattern = std::string(base && *base ? base : "/tmp") + "/tokmgr-storage-XXXXXX";
        REQUIRE(::mkdtemp(pattern.data()) != nullptr);
        path_ = pattern;
    }
    ~temp_dir() {
        std::error_code ignored;
        fs::permissions(path_, fs::perms::owner_all, ignored);
        fs::remove_all(path_, ignored);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    const std::string& path() const { return path_; }
    std::string file(const std::string& name = "tokens.json") const { return path_ + "/" + name; }

private:
    std::string path_;
};

tokmgr::token_set set_of(std::uint64_t generation) {
    tokmgr::token_set set;
    set.jwt = tokmgr::secret("eyJhbGciOiJIUzI1NiJ9.eyJnIjo" + std::to_string(generation) + "fQ.c2ln");
    set.refresh_token = tokmgr::secret("rt-SECRET-" + std::to_string(generation));
    set.received_at = std::chrono::system_clock::time_point(std::chrono::seconds(1764625200));
    set.jwt_lifetime = 1800s;
    set.refresh_lifetime = 600000s;
    set.generation = generation;
    return set;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

void write_file(const std::string& path, const std::string& text, fs::perms mode = fs::perms::owner_read |
                                                                                 fs::perms::owner_write) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    fs::permissions(path, mode);
}

unsigned mode_of(const std::string& path) {
    struct stat info {};
    REQUIRE(::stat(path.c_str(), &info) == 0);
    return info.st_mode & 07777;
}

std::vector<std::string> names_in(const std::string& dir, const std::string& containing) {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir)) {
        const auto name = entry.path().filename().string();
        if (name.find(containing) != std::string::npos) names.push_back(name);
    }
    return names;
}

std::uint64_t stored_generation(const std::string& path) {
    file_storage reader(path);
    std::error_code ec;
    const auto set = reader.load(ec);
    REQUIRE_MESSAGE(!ec, reader.last_error().message());
    return set ? set->generation : 0;
}

/// How many descriptors this process has open: a failure must leak none.
std::size_t open_descriptors() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

/// Arms the next call's n-th system call to fail with EIO (see
/// detail::file::fail_call); reports whether the call reached it.
class injected_fault {
public:
    explicit injected_fault(std::size_t n) : n_(n) { tokmgr::detail::file::fail_call(n, EIO); }
    ~injected_fault() { tokmgr::detail::file::fail_call(0, 0); }
    injected_fault(const injected_fault&) = delete;
    injected_fault& operator=(const injected_fault&) = delete;
    bool reached() const { return tokmgr::detail::file::faults().calls >= n_; }

private:
    std::size_t n_;
};

/// A forked child that the parent can wait for, or kill.
struct child {
    pid_t pid = -1;
    int status = 0;
    void kill_hard() const { ::kill(pid, SIGKILL); }
    int wait() {
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        return status;
    }
};

/// fork()s `body` (which must not return) and a pipe on which it says "ready".
child spawn(const std::function<void(int ready_fd)>& body, int& ready_read_fd) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    child c;
    c.pid = ::fork();
    REQUIRE(c.pid >= 0);
    if (c.pid == 0) {
        ::close(fds[0]);
        body(fds[1]);
        ::_exit(0);
    }
    ::close(fds[1]);
    ready_read_fd = fds[0];
    return c;
}

void wait_ready(int fd) {
    char byte = 0;
    REQUIRE(::read(fd, &byte, 1) == 1);
    ::close(fd);
}

/// Runs `body` in a forked child, returning what it reports (empty: every
/// check passed). A child that has not finished after `deadline` is killed
/// and reported as hung, so a call that blocks forever fails its test
/// instead of hanging the suite.
std::string in_child(const std::function<std::string()>& body, std::chrono::milliseconds deadline = 5s) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(fds[0]);
        std::string report;
        try {
            report = body();
        } catch (const std::exception& e) {
            report = std::string("exception: ") + e.what();
        }
        for (std::string_view left = report; !left.empty();) {
            const ssize_t n = ::write(fds[1], left.data(), left.size());
            if (n <= 0) break;
            left.remove_prefix(static_cast<std::size_t>(n));
        }
        ::_exit(0);
    }
    ::close(fds[1]);
    std::string report;
    const auto give_up_at = std::chrono::steady_clock::now() + deadline;
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(give_up_at - std::chrono::steady_clock::now());
        pollfd p{fds[0], POLLIN, 0};
        const int ready = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) {
            ::kill(pid, SIGKILL);
            report += "hung: still running after " + std::to_string(deadline.count()) + " ms";
            break;
        }
        char buffer[512];
        const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        report.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) report += " (the child did not exit cleanly)";
    return report;
}

/// Runs `check` in a child process with a private mount namespace and a
/// small tmpfs at `dir` (root and CAP_SYS_ADMIN needed: tests run as root).
/// Returns the child's report: empty when every check passed, "SKIP: ..."
/// when the namespace or the mount is not possible here.
std::string with_private_tmpfs(const std::string& dir, const std::string& options,
                               const std::function<std::string()>& check) {
    return in_child(
        [&]() -> std::string {
            if (::unshare(CLONE_NEWNS) != 0)
                return "SKIP: cannot create a mount namespace (unshare: " + std::string(std::strerror(errno)) + ")";
            if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
                return "SKIP: cannot make mounts private (" + std::string(std::strerror(errno)) + ")";
            if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) != 0)
                return "SKIP: cannot mount a tmpfs (" + std::string(std::strerror(errno)) + ")";
            return check();
        },
        60s);
}

/// Collects failures inside the child, where doctest's assertions would not
/// reach the parent's report.
struct child_checks {
    std::string failures;
    void expect(bool condition, const std::string& what) {
        if (!condition) failures += "failed: " + what + "\n";
    }
};

void check_report(const std::string& report) {
    if (report.rfind("SKIP:", 0) == 0) {
        MESSAGE("skipped on this machine: " << report);
        return;
    }
    CHECK_MESSAGE(report.empty(), report);
}

/// A private tmpfs (see with_private_tmpfs) in which generation 1 is stored
/// at `relative_path`; `check` then does the harm and inspects the result.
void with_one_set_on_tmpfs(const std::string& options, const std::string& relative_path,
                           const std::function<std::string(file_storage&, child_checks&, const std::string&)>& check) {
    temp_dir dir;
    const std::string root = dir.path();
    check_report(with_private_tmpfs(root, options, [&] {
        child_checks c;
        file_storage storage(root + "/" + relative_path);
        std::error_code ec;
        storage.store(set_of(1), ec);
        c.expect(!ec, "the first store succeeds: " + storage.last_error().message());
        const auto report = check(storage, c, root);
        return report.empty() ? c.failures : report;
    }));
}

/// The second local user of the hostile-user tests: the one every Linux has.
constexpr uid_t other_uid = 65534;
constexpr gid_t other_gid = 65534;

/// Why the hostile-user tests cannot run here, or empty when they can: they
/// need root, to act as a second user (uid 65534) and to give it files.
std::string why_no_second_user() {
    if (::geteuid() == 0) return {};
    return "these tests act as a second local user (uid " + std::to_string(other_uid) +
           ") and need root for it; run the suite as root";
}

/// Runs `body` as the second local user, in a child; its report as in_child.
std::string as_other_user(const std::function<std::string()>& body) {
    return in_child([&]() -> std::string {
        if (::setgroups(0, nullptr) != 0 || ::setresgid(other_gid, other_gid, other_gid) != 0 ||
            ::setresuid(other_uid, other_uid, other_uid) != 0)
            return "cannot become uid " + std::to_string(other_uid) + ": " + std::strerror(errno);
        return body();
    });
}

/// A directory like /tmp (mode 1777, sticky) inside `dir`, whose own mode is
/// opened to 0755 so that the second user can reach it.
std::string sticky_shared_dir(const temp_dir& dir) {
    fs::permissions(dir.path(), static_cast<fs::perms>(0755));
    const std::string shared = dir.path() + "/shared";
    REQUIRE(::mkdir(shared.c_str(), 0700) == 0);
    REQUIRE(::chmod(shared.c_str(), 01777) == 0);
    return shared;
}

static_assert(tokmgr::is_storage_v<file_storage>, "file_storage is a Storage policy");

}  // namespace

TEST_CASE("file_storage: nothing stored reads as empty, and construction touches nothing") {
    temp_dir dir;
    file_storage storage(dir.path() + "/missing/tokens.json");
    CHECK_FALSE(fs::exists(dir.path() + "/missing"));
    std::error_code ec;
    CHECK_FALSE(storage.load(ec).has_value());
    CHECK_FALSE(ec);
    CHECK_FALSE(fs::exists(dir.path() + "/missing"));
}

TEST_CASE("file_storage: a stored set reads back, from this object and from another") {
    temp_dir dir;
    file_storage writer(dir.file());
    std::error_code ec;
    writer.store(set_of(3), ec);
    REQUIRE_MESSAGE(!ec, writer.last_error().message());
    for (auto* storage : {&writer, new file_storage(dir.file())}) {
        const auto loaded = storage->load(ec);
        REQUIRE(loaded);
        CHECK_FALSE(ec);
        CHECK(loaded->generation == 3);
        CHECK(loaded->jwt == set_of(3).jwt);
        CHECK(loaded->refresh_token == set_of(3).refresh_token);
        CHECK(loaded->received_at == set_of(3).received_at);
        if (storage != &writer) delete storage;
    }
    writer.store(set_of(4));  // the throwing overload
    CHECK(writer.load()->generation == 4);
    CHECK(names_in(dir.path(), ".tmp-").empty());
}

TEST_CASE("file_storage: the file is 0600 and missing directories are created 0700, whatever the umask") {
    temp_dir dir;
    const std::string path = dir.path() + "/state/tokmgr/tokens.json";
    file_storage storage(path);
    const mode_t old_mask = ::umask(0);
    std::error_code ec;
    storage.store(set_of(1), ec);
    auto held = storage.lock(1s, ec);
    ::umask(old_mask);
    REQUIRE_MESSAGE(!ec, storage.last_error().message());
    CHECK(held);
    CHECK(mode_of(path) == 0600);
    CHECK(mode_of(path + ".lock") == 0600);
    CHECK(mode_of(dir.path() + "/state") == 0700);
    CHECK(mode_of(dir.path() + "/state/tokmgr") == 0700);
}

TEST_CASE("file_storage: a token file that group or others can read is refused with the command that fixes it") {
    temp_dir dir;
    file_storage storage(dir.file());
    storage.store(set_of(5));
    for (const unsigned mode : {0640u, 0604u, 0660u}) {
        CAPTURE(mode);
        fs::permissions(dir.file(), static_cast<fs::perms>(mode));
        std::error_code ec;
        CHECK_FALSE(storage.load(ec).has_value());
        CHECK(ec == errc::storage_permissions);
        const auto message = storage.last_error().message();
        CHECK(message.find(dir.file()) != std::string::npos);
        CHECK(message.find("chmod 600") != std::string::npos);
        CHECK(message.find("SECRET") == std::string::npos);
        CHECK_FALSE(storage.store_if(set_of(6), 5, ec));
        CHECK(ec == errc::storage_permissions);
        CHECK_THROWS_AS(storage.load(), tokmgr::error);
        CHECK(mode_of(dir.file()) == mode);  // refused, not "fixed" behind the user's back
    }
    fs::permissions(dir.file(), fs::perms::owner_read | fs::perms::owner_write);
    CHECK(storage.load()->generation == 5);
}

TEST_CASE("file_storage: a token file owned by another user is refused") {
    temp_dir dir;
    file_storage storage(dir.file());
    storage.store(set_of(1));
    if (::chown(dir.file().c_str(), ::geteuid() + 1000, static_cast<gid_t>(-1)) != 0) {
        MESSAGE("skipped: cannot chown here (not root)");
        return;
    }
    std::error_code ec;
    CHECK_FALSE(storage.load(ec).has_value());
    CHECK(ec == errc::storage_permissions);
    CHECK(storage.last_error().detail.find("chown") != std::string::npos);
}

TEST_CASE("file_storage: a directory others can write to is refused, a symbolic link too") {
    temp_dir dir;
    fs::create_directory(dir.path() + "/shared");
    fs::permissions(dir.path() + "/shared", static_cast<fs::perms>(0777));
    file_storage storage(dir.path() + "/shared/tokens.json");
    std::error_code ec;
    storage.store(set_of(1), ec);
    CHECK(ec == errc::storage_permissions);
    CHECK(storage.last_error().detail.find("chmod go-w") != std::string::npos);
    CHECK_FALSE(fs::exists(dir.path() + "/shared/tokens.json"));

    file_storage real(dir.file("real.json"));
    real.store(set_of(1));
    fs::create_symlink(dir.file("real.json"), dir.file("link.json"));
    file_storage linked(dir.file("link.json"));
    CHECK_FALSE(linked.load(ec).has_value());
    CHECK(ec == errc::storage_failed);
    CHECK(linked.last_error().detail.find("symbolic link") != std::string::npos);
}

TEST_CASE("file_storage: load refuses a file in a directory others can write to, as store does") {
    temp_dir dir;
    const std::string shared = dir.path() + "/shared";
    file_storage storage(shared + "/tokens.json");
    storage.store(set_of(1));
    fs::permissions(shared, static_cast<fs::perms>(0777));
    std::error_code ec;
    CHECK_FALSE(storage.load(ec).has_value());  // others could have put this set there
    CHECK(ec == errc::storage_permissions);
    CHECK(storage.last_error().detail.find("chmod go-w") != std::string::npos);
    auto lease = storage.lock(0ms, ec);
    CHECK_FALSE(lease);
    CHECK(ec == errc::storage_permissions);
}

TEST_CASE("file_storage: a directory owned by another user is refused, by load, store and lock, naming its owner") {
    if (const auto why = why_no_second_user(); !why.empty()) {
        MESSAGE("skipped: " << why);
        return;
    }
    temp_dir dir;
    // Theirs, holding the file; and theirs above one of ours (the owner of a
    // directory can rename anything in it, a whole directory of ours too).
    for (const std::string& layout : {std::string("theirs"), std::string("theirs/mine")}) {
        CAPTURE(layout);
        const std::string theirs = dir.path() + "/theirs";
        const std::string path = dir.path() + "/" + layout + "/tokens.json";
        file_storage storage(path);
        storage.store(set_of(1));
        REQUIRE(::chown(theirs.c_str(), other_uid, other_gid) == 0);
        REQUIRE(::chmod(theirs.c_str(), 0755) == 0);
        std::error_code ec;
        CHECK_FALSE(storage.load(ec).has_value());
        CHECK(ec == errc::storage_permissions);
        const auto detail = storage.last_error().detail;
        CHECK(detail.find("the directory " + theirs + " ") != std::string::npos);
        CHECK(detail.find("uid " + std::to_string(other_uid)) != std::string::npos);
        CHECK(detail.find("nobody") != std::string::npos);
        CHECK(detail.find("chown") != std::string::npos);
        CHECK(detail.find("SECRET") == std::string::npos);
        storage.store(set_of(2), ec);
        CHECK(ec == errc::storage_permissions);
        CHECK_FALSE(storage.store_if(set_of(2), 1, ec));
        CHECK(ec == errc::storage_permissions);
        CHECK_FALSE(storage.lock(0ms, ec));
        CHECK(ec == errc::storage_permissions);
        REQUIRE(::chown(theirs.c_str(), ::geteuid(), ::getegid()) == 0);
        CHECK(storage.load()->generation == 1);  // refused, untouched
        fs::remove_all(theirs);
    }
}

TEST_CASE("file_storage: a FIFO at the token path or the lock path is refused at once, never waited on") {
    temp_dir dir;
    const bool hostile = why_no_second_user().empty();
    if (!hostile) MESSAGE("the FIFOs are this user's own: " << why_no_second_user());
    // Another user's FIFO in a sticky directory, which is accepted as /tmp
    // is; and one of this user's own in a private directory.
    const std::string shared = sticky_shared_dir(dir), own = dir.path() + "/own";
    REQUIRE(::mkdir(own.c_str(), 0700) == 0);
    for (const std::string& where : {shared, own}) {
        for (const std::string& fifo : {std::string("tokens.json"), std::string("tokens.json.lock")}) {
            CAPTURE(where);
            CAPTURE(fifo);
            const std::string path = where + "/tokens.json", fifo_path = where + "/" + fifo;
            auto make_fifo = [&]() -> std::string {
                return ::mkfifo(fifo_path.c_str(), 0666) == 0 ? "" : "mkfifo: " + std::string(std::strerror(errno));
            };
            REQUIRE(((hostile && where == shared) ? as_other_user(make_fifo) : make_fifo()) == "");
            const auto report = in_child([&]() -> std::string {
                file_storage storage(path);
                std::error_code ec;
                std::string failures;
                if (fifo == "tokens.json") {
                    if (storage.load(ec) || !ec) failures += "load did not fail; ";
                    if (storage.store_if(set_of(2), 1, ec) || !ec) failures += "store_if did not fail; ";
                } else if (storage.lock(10s, ec) || ec != errc::storage_failed) {
                    failures += "lock did not fail with storage_failed; ";
                }
                const auto detail = storage.last_error().detail;
                if (detail.find(fifo_path) == std::string::npos || detail.find("regular file") == std::string::npos)
                    failures += "the error does not name the FIFO as not a regular file: " + detail;
                return failures;
            });
            CHECK_MESSAGE(report.empty(), report);
            fs::remove(fifo_path);
        }
    }
}

TEST_CASE("file_storage: temporary files another user created in advance do not stop a store") {
    if (const auto why = why_no_second_user(); !why.empty()) {
        MESSAGE("skipped: " << why);
        return;
    }
    temp_dir dir;
    const std::string shared = sticky_shared_dir(dir), path = shared + "/tokens.json";
    // Every name the old "<path>.tmp-<pid>-<n>" scheme would pick next.
    const auto next = tokmgr::detail::file::temp_counter().load() + 1;
    const auto report = as_other_user([&]() -> std::string {
        for (auto n = next; n < next + 64; ++n) {
            const std::string name = path + ".tmp-" + std::to_string(::getppid()) + "-" + std::to_string(n);
            const int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
            if (fd < 0) return "cannot create " + name + ": " + std::strerror(errno);
            ::close(fd);
        }
        return {};
    });
    REQUIRE_MESSAGE(report.empty(), report);
    file_storage storage(path);
    std::error_code ec;
    for (std::uint64_t generation = 1; generation <= 8; ++generation) {
        storage.store(set_of(generation), ec);
        REQUIRE_MESSAGE(!ec, storage.last_error().message());
    }
    CHECK(stored_generation(path) == 8);
}

TEST_CASE("file_storage: a system call failing at any step of a store fails it, and a failed store was not made") {
    temp_dir dir;
    file_storage storage(dir.file());
    storage.store(set_of(1));
    const auto descriptors = open_descriptors();
    std::uint64_t generation = 1;
    bool directory_sync_failed = false;
    for (std::size_t n = 1;; ++n) {
        CAPTURE(n);
        std::error_code ec;
        bool stored = false, reached = false;
        {
            injected_fault fault(n);
            stored = storage.store_if(set_of(generation + 1), generation, ec);
            reached = fault.reached();
        }
        const auto on_disk = stored_generation(dir.file());
        if (!reached) {  // past the last system call: every step was failed once
            CHECK(stored);
            CHECK(on_disk == generation + 1);
            CHECK(n > 10);
            break;
        }
        CHECK_FALSE(stored);  // so the manager would send nothing
        CHECK(ec == errc::storage_failed);
        const auto detail = storage.last_error().detail;
        CHECK(detail.find(dir.path()) != std::string::npos);
        CHECK(detail.find("SECRET") == std::string::npos);
        if (detail.find("syncing the directory") != std::string::npos) directory_sync_failed = true;
        CHECK((on_disk == generation || on_disk == generation + 1));  // whole: the old set or the new one
        CHECK(names_in(dir.path(), ".tmp-").empty());
        CHECK(open_descriptors() == descriptors);
        generation = on_disk;
    }
    CHECK(directory_sync_failed);
}

TEST_CASE("file_storage: a system call failing at any step of lock() fails it, and nothing stays held") {
    temp_dir dir;
    const std::string path = dir.path() + "/state/tokens.json";
    file_storage storage(path), other(path);
    const auto descriptors = open_descriptors();
    for (std::size_t n = 1;; ++n) {
        CAPTURE(n);
        fs::remove_all(dir.path() + "/state");  // so that every run creates the directory and the lock file
        std::error_code ec;
        file_storage::lease lease;
        bool reached = false;
        {
            injected_fault fault(n);
            lease = storage.lock(1s, ec);
            reached = fault.reached();
        }
        if (!reached) {
            CHECK(lease);
            CHECK(n > 5);
            break;
        }
        if (lease) {
            CHECK_FALSE(ec);  // a step that is retried, such as checking the lock file again
        } else {
            CHECK(ec == errc::storage_failed);
            CHECK(storage.last_error().detail.find(dir.path()) != std::string::npos);
        }
        lease.release();
        CHECK(other.lock(0ms, ec));
        CHECK(open_descriptors() == descriptors);
    }
}

TEST_CASE("file_storage: a corrupt file is moved aside with its content, reported, and the store reads as empty") {
    temp_dir dir;
    const std::string garbage = "{\"format\":\"tokmgr-token-set\",\"version\":1,\"jwt\":\"eyJ-SECRET";  // torn
    write_file(dir.file(), garbage);
    file_storage storage(dir.file());
    std::error_code ec;
    CHECK_FALSE(storage.load(ec).has_value());
    CHECK(ec == errc::storage_corrupt);
    const auto detail = storage.last_error().detail;
    CHECK(detail.find("moved to") != std::string::npos);
    CHECK(detail.find("SECRET") == std::string::npos);
    const auto aside = names_in(dir.path(), ".corrupt-");
    REQUIRE(aside.size() == 1);
    CHECK(detail.find(aside[0]) != std::string::npos);
    CHECK(read_file(dir.file(aside[0])) == garbage);
    CHECK_FALSE(fs::exists(dir.file()));

    CHECK_FALSE(storage.load(ec).has_value());  // now: nothing stored, no error
    CHECK_FALSE(ec);
    CHECK(storage.store_if(set_of(1), 0, ec));  // the fresh login's set
    CHECK(storage.load()->generation == 1);
}

TEST_CASE("file_storage: an empty file and an oversized one are corrupt too, and moved aside whole") {
    temp_dir dir;
    file_storage storage(dir.file());
    const std::string oversized = "{\"format\":\"tokmgr-token-set\"," + std::string(tokmgr::max_document_size, ' ') + "}";
    for (const std::string& content : {std::string(), oversized}) {
        CAPTURE(content.size());
        write_file(dir.file(), content);
        std::error_code ec;
        CHECK_FALSE(storage.load(ec).has_value());
        CHECK(ec == errc::storage_corrupt);
        const auto aside = names_in(dir.path(), ".corrupt-");
        REQUIRE(aside.size() == 1);
        CHECK(read_file(dir.file(aside[0])) == content);
        fs::remove(dir.file(aside[0]));
    }
}

TEST_CASE("file_storage: a document of a later version is moved aside and reported by its version") {
    temp_dir dir;
    const std::string newer = R"({"format":"tokmgr-token-set","version":2,"tokens":["SECRET"]})";
    write_file(dir.file(), newer);
    file_storage storage(dir.file());
    std::error_code ec;
    CHECK_FALSE(storage.load(ec).has_value());
    CHECK(ec == errc::storage_corrupt);
    const auto detail = storage.last_error().detail;
    CHECK(detail.find("version 2") != std::string::npos);
    CHECK(detail.find("version 1") != std::string::npos);
    CHECK(detail.find("SECRET") == std::string::npos);
    const auto aside = names_in(dir.path(), ".corrupt-");
    REQUIRE(aside.size() == 1);
    CHECK(read_file(dir.file(aside[0])) == newer);
}

TEST_CASE("file_storage: store_if writes only over the expected generation") {
    temp_dir dir;
    file_storage storage(dir.file());
    std::error_code ec;
    CHECK(storage.store_if(set_of(1), 0, ec));  // 0: nothing stored
    CHECK_FALSE(ec);
    CHECK_FALSE(storage.store_if(set_of(2), 0, ec));  // something is stored now
    CHECK_FALSE(ec);
    CHECK_FALSE(storage.store_if(set_of(3), 2, ec));  // not what is stored
    CHECK_FALSE(ec);
    CHECK(stored_generation(dir.file()) == 1);
    auto spent = set_of(2);
    spent.refresh_token_spent = true;  // the write-ahead mark
    CHECK(storage.store_if(spent, 1, ec));
    CHECK(storage.store_if(set_of(3), 2, ec));  // the new pair
    CHECK(stored_generation(dir.file()) == 3);

    // The generation only grows.
    CHECK_FALSE(storage.store_if(set_of(3), 3, ec));
    CHECK(ec == errc::storage_failed);
    CHECK_THROWS_AS(storage.store_if(set_of(2), 3), tokmgr::error);

    // A corrupt file never matches: reported, moved aside, then empty.
    write_file(dir.file(), "not json");
    CHECK_FALSE(storage.store_if(set_of(4), 3, ec));
    CHECK(ec == errc::storage_corrupt);
    CHECK(names_in(dir.path(), ".corrupt-").size() == 1);
    CHECK(storage.store_if(set_of(4), 0, ec));
    CHECK(stored_generation(dir.file()) == 4);
}

TEST_CASE("file_storage: two objects on one path in one process exclude each other") {
    temp_dir dir;
    file_storage a(dir.file()), b(dir.file());
    std::error_code ec;
    auto held = a.lock(1s, ec);
    REQUIRE(held);
    CHECK(a.holds(held, ec));
    auto second = b.lock(0ms, ec);
    CHECK_FALSE(second);
    CHECK(ec == errc::lease_timeout);
    CHECK(b.last_error().detail.find(dir.file() + ".lock") != std::string::npos);
    CHECK_THROWS_AS(b.lock(0ms), tokmgr::error);

    file_storage::lease moved = std::move(held);
    CHECK_FALSE(held);
    CHECK_FALSE(a.holds(held, ec));
    CHECK(a.holds(moved, ec));
    CHECK_FALSE(b.lock(0ms, ec));  // the move kept the lock
    moved.release();
    CHECK_FALSE(a.holds(moved, ec));
    second = b.lock(0ms, ec);
    CHECK(second);
    CHECK_FALSE(ec);
}

TEST_CASE("file_storage: a lease whose lock file was removed is no longer held, and a new lock is on the new file") {
    temp_dir dir;
    file_storage a(dir.file()), b(dir.file());
    auto held = a.lock(1s);
    REQUIRE(::unlink((dir.file() + ".lock").c_str()) == 0);
    std::error_code ec;
    CHECK_FALSE(a.holds(held, ec));
    CHECK(ec == errc::storage_failed);
    CHECK(b.lock(0ms, ec));  // the orphaned lock excludes nobody: say so rather than pretend
}

TEST_CASE("file_storage: the lease wait is bounded by max_wait") {
    temp_dir dir;
    file_storage holder(dir.file()), waiter(dir.file());
    auto held = holder.lock(1s);
    for (const auto wait : {0ms, 30ms, 120ms}) {
        CAPTURE(wait.count());
        std::error_code ec;
        const auto start = std::chrono::steady_clock::now();
        const auto lease = waiter.lock(wait, ec);
        const auto elapsed = std::chrono::steady_clock::now() - start;
        CHECK_FALSE(lease);
        CHECK(ec == errc::lease_timeout);
        CHECK(elapsed >= wait);
        // The last sleep is cut to what is left, so only scheduling adds to
        // max_wait; the slack is for a loaded 2-core machine and sanitizers.
        CHECK(elapsed < wait + 100ms);
    }
}

TEST_CASE("file_storage: threads with their own objects take turns, and no update is lost") {
    temp_dir dir;
    file_storage(dir.file()).store(set_of(1));
    constexpr int threads = 4, rounds = 25;
    std::atomic<int> inside{0}, overlaps{0}, failures{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
        workers.emplace_back([&] {
            file_storage storage(dir.file());
            for (int i = 0; i < rounds; ++i) {
                std::error_code ec;
                auto lease = storage.lock(10s, ec);
                if (!lease) {
                    ++failures;
                    continue;
                }
                if (inside.fetch_add(1) != 0) ++overlaps;
                const auto current = storage.load(ec);
                // Read, then write generation + 1 with store_if: a second
                // holder would make one of the two compare-and-swaps fail.
                if (!current || !storage.store_if(set_of(current->generation + 1), current->generation, ec)) ++failures;
                inside.fetch_sub(1);
            }
        });
    for (auto& w : workers) w.join();
    CHECK(overlaps.load() == 0);
    CHECK(failures.load() == 0);
    CHECK(stored_generation(dir.file()) == 1 + threads * rounds);
}

TEST_CASE("file_storage: the lease excludes another process, and a holder killed -9 releases it") {
    temp_dir dir;
    file_storage parent(dir.file());
    int ready = -1;
    child holder = spawn(
        [&](int ready_fd) {
            file_storage mine(dir.file());
            std::error_code ec;
            auto lease = mine.lock(5s, ec);
            if (!lease) ::_exit(1);
            (void)!::write(ready_fd, "x", 1);
            for (;;) ::pause();  // holds until killed
        },
        ready);
    wait_ready(ready);
    std::error_code ec;
    CHECK_FALSE(parent.lock(50ms, ec));
    CHECK(ec == errc::lease_timeout);

    holder.kill_hard();
    holder.wait();
    CHECK(WIFSIGNALED(holder.status));
    const auto start = std::chrono::steady_clock::now();
    auto lease = parent.lock(0ms, ec);  // the kernel released it with the process
    CHECK(lease);
    CHECK(std::chrono::steady_clock::now() - start < 200ms);  // one attempt, no wait
}

TEST_CASE("file_storage: a process waiting for the lease gets it when the holder releases") {
    temp_dir dir;
    int ready = -1;
    child holder = spawn(
        [&](int ready_fd) {
            file_storage mine(dir.file());
            auto lease = mine.lock(5s);
            (void)!::write(ready_fd, "x", 1);
            std::this_thread::sleep_for(200ms);
        },
        ready);
    wait_ready(ready);
    file_storage parent(dir.file());
    const auto start = std::chrono::steady_clock::now();
    std::error_code ec;
    auto lease = parent.lock(5s, ec);
    const auto waited = std::chrono::steady_clock::now() - start;
    CHECK(lease);
    CHECK(waited >= 100ms);
    CHECK(waited < 2s);
    holder.wait();
    CHECK(WIFEXITED(holder.status));
}

TEST_CASE("file_storage: processes take turns through the lease, and no update is lost") {
    temp_dir dir;
    file_storage(dir.file()).store(set_of(1));
    constexpr int processes = 4, rounds = 25;
    std::vector<pid_t> pids;
    for (int p = 0; p < processes; ++p) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            file_storage storage(dir.file());
            for (int i = 0; i < rounds; ++i) {
                std::error_code ec;
                auto lease = storage.lock(20s, ec);
                const auto current = lease ? storage.load(ec) : std::nullopt;
                if (!current || !storage.store_if(set_of(current->generation + 1), current->generation, ec))
                    ::_exit(1);  // no lease, or another writer got in between: exclusion failed
            }
            ::_exit(0);
        }
        pids.push_back(pid);
    }
    for (const pid_t pid : pids) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
    CHECK(stored_generation(dir.file()) == 1 + processes * rounds);
}

TEST_CASE("file_storage: a holder stopped with SIGSTOP makes the others time out in bounded time, then resumes cleanly") {
    temp_dir dir;
    file_storage(dir.file()).store(set_of(1));
    int ready = -1;
    child holder = spawn(
        [&](int ready_fd) {
            file_storage mine(dir.file());
            auto lease = mine.lock(5s);
            const auto current = mine.load();
            (void)!::write(ready_fd, "x", 1);
            ::raise(SIGSTOP);  // stopped while holding, as a debugger or an overloaded host would
            if (!mine.store_if(set_of(current->generation + 1), current->generation)) ::_exit(1);
        },
        ready);
    wait_ready(ready);
    int stopped = 0;
    REQUIRE(::waitpid(holder.pid, &stopped, WUNTRACED) == holder.pid);  // SIGCONT must not come first
    REQUIRE(WIFSTOPPED(stopped));
    file_storage waiter(dir.file());
    std::error_code ec;
    const auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(waiter.lock(100ms, ec));
    CHECK(ec == errc::lease_timeout);
    CHECK(std::chrono::steady_clock::now() - start < 300ms);
    ::kill(holder.pid, SIGCONT);
    auto lease = waiter.lock(5s, ec);  // granted once the resumed holder finishes
    CHECK(lease);
    holder.wait();
    CHECK(WIFEXITED(holder.status));
    CHECK(WEXITSTATUS(holder.status) == 0);
    CHECK(stored_generation(dir.file()) == 2);  // its write went through: nobody wrote under it
}

TEST_CASE("file_storage: a writer killed -9 at random moments never leaves a torn file, nor piles of temporary files") {
    temp_dir dir;
    file_storage parent(dir.file());
    parent.store(set_of(1));
    std::uint64_t last = 1;
    int kills_mid_write = 0;
    std::uint64_t child_writes = 0;
    std::mt19937 random(12345);
    std::uniform_int_distribution<int> delay_us(0, 6000);
    constexpr int kills = 200;
    for (int i = 0; i < kills; ++i) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            file_storage writer(dir.file());
            std::error_code ec;
            auto current = writer.load(ec);
            std::uint64_t generation = current ? current->generation : 0;
            for (;;) writer.store(set_of(++generation), ec);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(delay_us(random)));
        ::kill(pid, SIGKILL);
        int status = 0;
        ::waitpid(pid, &status, 0);
        REQUIRE(WIFSIGNALED(status));

        // Old or new, never torn: the file parses, and the generation never goes back.
        std::error_code ec;
        const auto loaded = parent.load(ec);
        REQUIRE_MESSAGE(!ec, parent.last_error().message());
        REQUIRE(loaded);
        CHECK(loaded->generation >= last);
        child_writes += loaded->generation - last;
        last = loaded->generation;
        // The killed writer can leave at most its own one temporary file...
        const auto temps = names_in(dir.path(), ".tmp-");
        CHECK(temps.size() <= 1);
        kills_mid_write += static_cast<int>(temps.size());
        // ...which the next write removes, since its writer is dead.
        parent.store(set_of(++last), ec);
        REQUIRE_MESSAGE(!ec, parent.last_error().message());
        CHECK(names_in(dir.path(), ".tmp-").empty());
    }
    MESSAGE(kills << " kills, " << kills_mid_write << " of them between a temporary file's creation and its rename; "
                  << child_writes << " writes completed by the killed writers");
    CHECK(kills_mid_write > 0);  // the loop really did interrupt writes...
    CHECK(child_writes > 0);     // ...and the reads saw the writers' new sets, not only the old ones
    CHECK(names_in(dir.path(), ".corrupt-").empty());
}

TEST_CASE("file_storage: a read-only file system fails the write clearly and keeps the stored set") {
    with_one_set_on_tmpfs("size=1m,mode=0700", "tokens.json", [](file_storage& storage, child_checks& c,
                                                                 const std::string& root) -> std::string {
        std::error_code ec;
        storage.lock(0ms, ec).release();  // the lock file exists before the file system turns read-only
        if (::mount("tmpfs", root.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, "size=1m,mode=0700") != 0)
            return "SKIP: cannot remount the tmpfs read-only (" + std::string(std::strerror(errno)) + ")";
        storage.store(set_of(2), ec);
        c.expect(ec == errc::storage_failed, "a store on a read-only file system fails with storage_failed");
        const auto message = storage.last_error().message();
        c.expect(message.find("read-only") != std::string::npos, "the message says read-only: " + message);
        c.expect(message.find(root) != std::string::npos, "the message names the directory: " + message);
        const auto loaded = storage.load(ec);
        c.expect(!ec && loaded && loaded->generation == 1, "the stored set is still readable and unchanged");
        auto lease = storage.lock(0ms, ec);
        c.expect(static_cast<bool>(lease), "the lease works on a read-only file system once its file exists: " +
                                               storage.last_error().message());
        c.expect(!storage.store_if(set_of(2), 1, ec) && ec == errc::storage_failed, "store_if fails too");
        return {};
    });
}

TEST_CASE("file_storage: a full disk fails the write clearly, keeps the stored set, and leaves no temporary file") {
    with_one_set_on_tmpfs("size=64k,mode=0700", "state/tokens.json", [](file_storage& storage, child_checks& c,
                                                                       const std::string& root) -> std::string {
        std::error_code ec;
        {
            std::ofstream filler(root + "/filler", std::ios::binary);
            const std::string block(4096, 'x');
            for (int i = 0; i < 64 && filler; ++i) filler.write(block.data(), static_cast<std::streamsize>(block.size()));
        }
        storage.store(set_of(2), ec);
        c.expect(ec == errc::storage_failed, "a store on a full file system fails with storage_failed");
        const auto message = storage.last_error().message();
        c.expect(message.find("full") != std::string::npos, "the message says the file system is full: " + message);
        const auto loaded = storage.load(ec);
        c.expect(!ec && loaded && loaded->generation == 1, "the stored set is unchanged");
        c.expect(names_in(root + "/state", ".tmp-").empty(), "no temporary file is left behind");
        return {};
    });
}
