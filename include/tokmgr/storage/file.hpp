// tokmgr/storage/file.hpp — a Storage policy that keeps the token set in a
// file, shared safely by any number of managers, threads and processes of one
// host (POSIX; docs/storage.md has the whole contract).
//
// - The file holds one token-set document (storage/document.hpp).
// - Writes are crash-consistent: a temporary file in the same directory
//   (an unpredictable name, O_CREAT|O_EXCL|O_CLOEXEC, 0600), write, fsync,
//   rename over the file, fsync of the directory; a write counts as done
//   only when every step succeeded. A reader sees the old set or the new
//   one, never a torn one, even when the writer is killed -9 at any
//   instruction.
// - The lease is flock() on a separate lock file, "<path>.lock". The kernel
//   releases it when its holder dies, so no stale lock can outlive a crash.
//   Classic fcntl() locks are never used: closing *any* descriptor of the
//   file in the process drops them, which a library cannot rule out.
// - The file is created 0600 and missing directories 0700. A token file that
//   group or others can access, or that another user owns, is refused with
//   the command that fixes it, as ssh does with keys; so is a directory on
//   the way to it that another user owns or can write to. Nothing is opened
//   in a way that can block (a FIFO at the path), and only regular files
//   are used.
// - A corrupt document, or one of a later version, is moved aside to
//   "<path>.corrupt-<time>-<pid>-<n>" (never deleted), reported as
//   errc::storage_corrupt with where it went, and the store then reads as
//   empty, so the manager logs in afresh.
//
// One object serves one thread at a time (the manager serialises its storage
// calls); any number of objects may share one path, in one process or many.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "../errc.hpp"
#include "../error.hpp"
#include "../secret.hpp"
#include "../token_set.hpp"
#include "detail/storage_errors.hpp"
#include "document.hpp"

namespace tokmgr {

namespace detail::file {

/// Closes a descriptor on every path out of a function.
class fd_guard {
public:
    explicit fd_guard(int fd = -1) noexcept : fd_(fd) {}
    fd_guard(const fd_guard&) = delete;
    fd_guard& operator=(const fd_guard&) = delete;
    ~fd_guard() { reset(); }
    int get() const noexcept { return fd_; }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_;
};

inline std::string errno_text(int error) { return std::generic_category().message(error); }

inline std::string octal_mode(mode_t mode) {
    char buffer[8];
    std::snprintf(buffer, sizeof buffer, "%04o", static_cast<unsigned>(mode & 07777));
    return buffer;
}

/// Shell-quotes a path for the commands the messages suggest.
inline std::string quoted(const std::string& path) {
    std::string out = "'";
    for (char c : path) {
        if (c == '\'') out += "'\\''";
        else out += c;
    }
    return out + "'";
}

inline std::string parent_of(const std::string& path) {
    const auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

inline std::string base_of(const std::string& path) {
    const auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

/// The system calls file_storage makes, behind a seam for the tests: fault
/// injection by count, as CONTRIBUTING asks. After `fail_call(n, error)`,
/// the n-th call this thread makes through `sys` fails with `error` (a
/// close still closes, as Linux's does); `fail_call(0, 0)` disarms it.
/// Thread-local, so a test's fault never lands in another thread's store.
struct syscall_faults {
    std::size_t calls = 0;    ///< made through `sys` since the last fail_call
    std::size_t fail_at = 0;  ///< 0: none fails
    int error = 0;
};

inline syscall_faults& faults() noexcept {
    static thread_local syscall_faults state;
    return state;
}

inline void fail_call(std::size_t n, int error) noexcept { faults() = syscall_faults{0, n, error}; }

namespace sys {

inline bool injected() noexcept {
    auto& f = faults();
    if (++f.calls != f.fail_at) return false;
    errno = f.error;
    return true;
}

inline int open(const char* path, int flags, mode_t mode = 0) noexcept {
    return injected() ? -1 : ::open(path, flags, mode);
}
inline int fstat(int fd, struct stat* info) noexcept { return injected() ? -1 : ::fstat(fd, info); }
inline int stat(const char* path, struct stat* info) noexcept { return injected() ? -1 : ::stat(path, info); }
inline int mkdir(const char* path, mode_t mode) noexcept { return injected() ? -1 : ::mkdir(path, mode); }
inline int fchmod(int fd, mode_t mode) noexcept { return injected() ? -1 : ::fchmod(fd, mode); }
inline int fcntl(int fd, int command, int argument) noexcept {
    return injected() ? -1 : ::fcntl(fd, command, argument);
}
inline ssize_t read(int fd, void* buffer, std::size_t size) noexcept {
    return injected() ? -1 : ::read(fd, buffer, size);
}
inline ssize_t write(int fd, const void* data, std::size_t size) noexcept {
    return injected() ? -1 : ::write(fd, data, size);
}
inline int fsync(int fd) noexcept { return injected() ? -1 : ::fsync(fd); }
inline int close(int fd) noexcept {
    if (!injected()) return ::close(fd);
    const int error = errno;
    ::close(fd);
    errno = error;
    return -1;
}
inline int rename(const char* from, const char* to) noexcept { return injected() ? -1 : ::rename(from, to); }
inline int flock(int fd, int operation) noexcept { return injected() ? -1 : ::flock(fd, operation); }
inline ssize_t getrandom(void* buffer, std::size_t size, unsigned flags) noexcept {
    return injected() ? -1 : ::getrandom(buffer, size, flags);
}
/// realpath(3), as a string; false with errno set when it fails.
inline bool realpath(const std::string& path, std::string& resolved) {
    if (injected()) return false;
    char* result = ::realpath(path.c_str(), nullptr);
    if (result == nullptr) return false;
    resolved = result;
    std::free(result);
    return true;
}

}  // namespace sys

inline bool write_all(int fd, std::string_view data, int& error) noexcept {
    while (!data.empty()) {
        const ssize_t n = sys::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            error = errno;
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

/// Distinguishes the moved-aside files of the threads of one process.
inline std::atomic<std::uint64_t>& temp_counter() noexcept {
    static std::atomic<std::uint64_t> counter{0};
    return counter;
}

/// ".tmp-<pid>-<random>" after the file's name: the pid lets a later writer
/// tell a dead writer's leftover from a live writer's file in progress; the
/// random part is what another user cannot guess and create first.
inline constexpr std::string_view temp_marker = ".tmp-";

/// 64 bits from the kernel's generator, as 16 hex digits. GRND_NONBLOCK:
/// before the generator is seeded (early boot) this fails rather than
/// waiting an unbounded time; the store then fails and says why.
inline bool random_suffix(std::string& out, int& error) {
    unsigned char bytes[8];
    std::size_t got = 0;
    while (got < sizeof bytes) {
        const ssize_t n = sys::getrandom(bytes + got, sizeof bytes - got, GRND_NONBLOCK);
        if (n < 0) {
            if (errno == EINTR) continue;
            error = errno;
            return false;
        }
        got += static_cast<std::size_t>(n);
    }
    static constexpr char digits[] = "0123456789abcdef";
    char text[2 * sizeof bytes];
    for (std::size_t i = 0; i < sizeof bytes; ++i) {
        text[2 * i] = digits[bytes[i] >> 4];
        text[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    out.assign(text, sizeof text);
    return true;
}

/// "uid 65534 (nobody)", or "uid 65534" when the user database has no name.
inline std::string owner_text(uid_t uid) {
    std::string text = "uid " + std::to_string(uid);
    std::vector<char> buffer(16384);
    struct passwd entry {};
    struct passwd* found = nullptr;
    if (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr)
        text += std::string(" (") + found->pw_name + ")";
    return text;
}

/// What a non-regular file is, for the message that refuses it.
inline const char* file_kind(mode_t mode) noexcept {
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
    return "an unusual file";
}

}  // namespace detail::file

class file_storage : public detail::storage_errors<file_storage> {
public:
    /// The lease: while an object lives (and is not moved from), this holder
    /// owns the flock on "<path>.lock". Destroying it releases the lock.
    /// A process that fork()s while holding one shares it with the child
    /// until both have closed it (flock belongs to the open file).
    class lease {
    public:
        lease() noexcept = default;
        lease(lease&& other) noexcept
            : fd_(std::exchange(other.fd_, -1)), device_(other.device_), inode_(other.inode_) {}
        lease& operator=(lease&& other) noexcept {
            if (this != &other) {
                release();
                fd_ = std::exchange(other.fd_, -1);
                device_ = other.device_;
                inode_ = other.inode_;
            }
            return *this;
        }
        lease(const lease&) = delete;
        lease& operator=(const lease&) = delete;
        ~lease() { release(); }

        explicit operator bool() const noexcept { return fd_ >= 0; }

        /// Releases early; the destructor then does nothing.
        void release() noexcept {
            if (fd_ >= 0) ::close(std::exchange(fd_, -1));  // closing the only descriptor drops the flock
        }

    private:
        friend class file_storage;
        lease(int fd, dev_t device, ino_t inode) noexcept : fd_(fd), device_(device), inode_(inode) {}
        int fd_ = -1;
        dev_t device_{};
        ino_t inode_{};
    };

    /// Touches nothing on disk: directories and files are created by the
    /// first store or lock.
    explicit file_storage(std::string path)
        : path_(std::move(path)),
          lock_path_(path_ + ".lock"),
          directory_(detail::file::parent_of(path_)),
          temp_prefix_(detail::file::base_of(path_) + std::string(detail::file::temp_marker)) {}

    const std::string& path() const noexcept { return path_; }
    const std::string& lock_path() const noexcept { return lock_path_; }

    /// The stored set; nullopt with no error when nothing is stored yet.
    /// errc::storage_permissions: the file is accessible to others (refused,
    /// untouched). errc::storage_corrupt: the file was moved aside; the next
    /// load reads as empty.
    std::optional<token_set> load(std::error_code& ec) {
        clear_error(ec);
        return read_current(ec);
    }

    /// Unconditional write (the Storage policy's `store`).
    void store(const token_set& set, std::error_code& ec) {
        clear_error(ec);
        write_replace(set, ec);
    }

    /// Takes the lease, waiting at most `max_wait` (plus one poll step of a
    /// few milliseconds at most). errc::lease_timeout when another holder
    /// kept it longer.
    ///
    /// flock() has no timed wait, and interrupting a blocking flock with a
    /// signal is not something a library may do (signal dispositions belong
    /// to the program), so the wait polls LOCK_NB. The sleeps start at
    /// 0.5 ms, because a lease is usually held for a couple of fsyncs, and
    /// double up to 16 ms, because a lease held across a network refresh
    /// would otherwise cost a wake-up per millisecond for nothing; a waiter
    /// notices a release within 16 ms at worst. Waiters are not queued: who
    /// polls first after the release wins.
    lease lock(std::chrono::milliseconds max_wait, std::error_code& ec) {
        using clock = std::chrono::steady_clock;
        clear_error(ec);
        const auto deadline = clock::now() + max_wait;
        if (!ensure_directory(ec)) return {};
        auto step = std::chrono::microseconds(500);
        for (;;) {
            // O_NONBLOCK: a FIFO put at the lock path would block open()
            // until a writer came, whatever max_wait says.
            detail::file::fd_guard fd(detail::file::sys::open(
                lock_path_.c_str(), O_RDONLY | O_CREAT | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | O_NOFOLLOW, 0600));
            if (fd.get() < 0) {
                fail(ec, errc::storage_failed,
                     "cannot open the lock file " + lock_path_ + ": " + detail::file::errno_text(errno) +
                         "; check that it is a regular file of this user's and its directory is writable by this user");
                return {};
            }
            struct stat held {};
            if (!own_regular_file(fd.get(), lock_path_, held, ec)) return {};
            for (;;) {
                if (detail::file::sys::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) break;
                if (errno == EINTR) continue;
                if (errno != EWOULDBLOCK) {
                    fail(ec, errc::storage_failed,
                         "flock on " + lock_path_ + " failed: " + detail::file::errno_text(errno) +
                             "; the file system may not support flock (network file systems often do not)");
                    return {};
                }
                const auto now = clock::now();
                if (now >= deadline) {
                    fail(ec, errc::lease_timeout,
                         "the lease on " + lock_path_ + " was held by another process or thread for longer than " +
                             std::to_string(max_wait.count()) + " ms; retry later, or wait longer");
                    return {};
                }
                const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - now);
                std::this_thread::sleep_for(step < left ? step : left);
                if (step < std::chrono::milliseconds(16)) step *= 2;
            }
            // The lock is held, but on the file we opened; if someone removed
            // or replaced the lock file meanwhile, a newcomer would lock the
            // new one and we would both "hold" the lease. Retry on the file
            // that is there now.
            struct stat current {};
            if (detail::file::sys::stat(lock_path_.c_str(), &current) != 0) {
                if (errno == ENOENT) continue;
                fail(ec, errc::storage_failed,
                     "cannot inspect the lock file " + lock_path_ + ": " + detail::file::errno_text(errno));
                return {};
            }
            if (current.st_dev == held.st_dev && current.st_ino == held.st_ino)
                return lease(fd.release(), held.st_dev, held.st_ino);
        }
    }

    /// Whether `held` is a live lease on this storage's lock file: false for
    /// an empty (moved-from, released) lease; false with errc::storage_failed
    /// when the lock file was removed or replaced behind tokmgr's back (the
    /// lease then excludes nobody).
    bool holds(const lease& held, std::error_code& ec) {
        clear_error(ec);
        if (!held) return false;
        struct stat current {};
        if (::stat(lock_path_.c_str(), &current) != 0 || current.st_dev != held.device_ ||
            current.st_ino != held.inode_) {
            fail(ec, errc::storage_failed,
                 "the lock file " + lock_path_ +
                     " was removed or replaced while the lease was held; do not delete it while tokmgr runs");
            return false;
        }
        return true;
    }

    /// Compare-and-swap on the generation: writes `set` only when the stored
    /// generation equals `expected_generation` (0: nothing stored). Returns
    /// false and no error when it differs. Atomic against the other writers
    /// only while the caller holds lock(), as the manager does.
    ///
    /// A corrupt stored document never matches: it is moved aside, the call
    /// returns false with errc::storage_corrupt, and the next load reads as
    /// empty (so the caller re-reads and decides again). The new generation
    /// must be above the expected one (errc::storage_failed otherwise): the
    /// generation only grows.
    bool store_if(const token_set& set, std::uint64_t expected_generation, std::error_code& ec) {
        clear_error(ec);
        if (set.generation <= expected_generation) {
            fail(ec, errc::storage_failed,
                 "store_if on " + path_ + ": the new generation " + std::to_string(set.generation) +
                     " is not above the expected " + std::to_string(expected_generation) +
                     "; every write must increase it");
            return false;
        }
        const auto current = read_current(ec);
        if (ec) return false;
        const std::uint64_t stored = current ? current->generation : 0;
        if (stored != expected_generation) return false;
        write_replace(set, ec);
        return !ec;
    }

    // The throwing overloads and last_error() come from detail::storage_errors.
    using detail::storage_errors<file_storage>::load;
    using detail::storage_errors<file_storage>::store;
    using detail::storage_errors<file_storage>::lock;
    using detail::storage_errors<file_storage>::holds;
    using detail::storage_errors<file_storage>::store_if;

private:
    /// Creates the missing directories of the path, each 0700, then checks
    /// them all (directories_safe).
    bool ensure_directory(std::error_code& ec) {
        struct stat info {};
        if (detail::file::sys::stat(directory_.c_str(), &info) != 0) {
            if (errno != ENOENT) {
                fail(ec, errc::storage_failed,
                     "cannot inspect the directory " + directory_ + ": " + detail::file::errno_text(errno));
                return false;
            }
            for (std::size_t slash = directory_.find('/', 1);; slash = directory_.find('/', slash + 1)) {
                const std::string prefix = slash == std::string::npos ? directory_ : directory_.substr(0, slash);
                if (detail::file::sys::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
                    fail(ec, errc::storage_failed,
                         "cannot create the directory " + prefix + " for " + path_ + ": " +
                             detail::file::errno_text(errno) + "; create it (mode 0700) or choose another path");
                    return false;
                }
                if (slash == std::string::npos) break;
            }
        }
        return directories_safe(ec);
    }

    /// Whether the directory holding the file exists: false with no error
    /// when it does not (nothing can be stored there yet).
    bool directory_exists(std::error_code& ec) {
        struct stat info {};
        if (detail::file::sys::stat(directory_.c_str(), &info) == 0) return true;
        if (errno != ENOENT)
            fail(ec, errc::storage_failed,
                 "cannot inspect the directory " + directory_ + ": " + detail::file::errno_text(errno));
        return false;
    }

    /// Whoever owns a directory on the way to the file, or can write to it,
    /// can rename the token file (or a directory above it) away and back:
    /// a process reading in between re-reads an older set and sends a
    /// refresh token that was already spent, and the server revokes the
    /// family. So the directory holding the file and every one above it
    /// (symbolic links resolved) must belong to this user or root, and must
    /// not be writable by group or others unless sticky (like /tmp: others
    /// cannot rename or remove our files there).
    bool directories_safe(std::error_code& ec) {
        std::string real;
        if (!detail::file::sys::realpath(directory_, real)) {
            const int error = errno;
            fail(ec, errc::storage_failed,
                 "cannot resolve the directory " + directory_ + " of " + path_ + ": " +
                     detail::file::errno_text(error));
            return false;
        }
        const uid_t me = ::geteuid();
        for (std::string dir = std::move(real);; dir = detail::file::parent_of(dir)) {
            const std::string directory = "the directory " + dir + " (on the way to " + path_ + ")";
            struct stat info {};
            if (detail::file::sys::stat(dir.c_str(), &info) != 0) {
                fail(ec, errc::storage_failed, "cannot inspect " + directory + ": " + detail::file::errno_text(errno));
                return false;
            }
            if (!S_ISDIR(info.st_mode)) {
                fail(ec, errc::storage_failed,
                     dir + " is not a directory; choose a path inside a directory for " + path_);
                return false;
            }
            if (info.st_uid != me && info.st_uid != 0) {
                fail(ec, errc::storage_permissions,
                     directory + " is owned by " + detail::file::owner_text(info.st_uid) +
                         ", not by this user (uid " + std::to_string(me) +
                         ") or root, so its owner could move the token file away and back; keep the token file "
                         "in directories of this user's own, or have root run: chown " +
                         std::to_string(me) + " " + detail::file::quoted(dir));
                return false;
            }
            if ((info.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (info.st_mode & S_ISVTX) == 0) {
                fail(ec, errc::storage_permissions,
                     directory + " is writable by group or others (mode " +
                         detail::file::octal_mode(info.st_mode) +
                         "), so they could replace the token file; run: chmod go-w " + detail::file::quoted(dir));
                return false;
            }
            if (dir == "/") return true;
        }
    }

    /// Checks an open token or lock file: a regular file (not a FIFO or a
    /// device another user put there), owned by this user, private to it.
    /// Then clears O_NONBLOCK, which was only there so that open() could not
    /// block on a FIFO, and which some file systems honour for regular files.
    bool own_regular_file(int fd, const std::string& what, struct stat& info, std::error_code& ec) {
        if (detail::file::sys::fstat(fd, &info) != 0) {
            fail(ec, errc::storage_failed, "cannot inspect " + what + ": " + detail::file::errno_text(errno));
            return false;
        }
        if (!S_ISREG(info.st_mode)) {
            fail(ec, errc::storage_failed,
                 what + " is " + detail::file::file_kind(info.st_mode) + " owned by " +
                     detail::file::owner_text(info.st_uid) +
                     ", not a regular file; tokmgr uses nothing else; remove it, or choose another path");
            return false;
        }
        if (info.st_uid != ::geteuid()) {
            fail(ec, errc::storage_permissions,
                 what + " is owned by " + detail::file::owner_text(info.st_uid) + ", not by this user (uid " +
                     std::to_string(::geteuid()) + "); tokmgr uses only token files its user owns; run: chown " +
                     std::to_string(::geteuid()) + " " + detail::file::quoted(what));
            return false;
        }
        if ((info.st_mode & 077) != 0) {
            fail(ec, errc::storage_permissions,
                 what + " is accessible by group or others (mode " + detail::file::octal_mode(info.st_mode) +
                     "); tokmgr refuses a token file others can read; run: chmod 600 " + detail::file::quoted(what));
            return false;
        }
        // F_SETFL 0: of the flags F_SETFL changes, tokmgr sets none but O_NONBLOCK.
        if (detail::file::sys::fcntl(fd, F_SETFL, 0) != 0) {
            fail(ec, errc::storage_failed, "cannot use " + what + ": " + detail::file::errno_text(errno));
            return false;
        }
        return true;
    }

    /// Reads and decodes the file; moves a corrupt one aside.
    std::optional<token_set> read_current(std::error_code& ec) {
        if (!directory_exists(ec) || !directories_safe(ec)) return std::nullopt;
        // O_NONBLOCK: a FIFO put at the path would block open() for ever.
        detail::file::fd_guard fd(
            detail::file::sys::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | O_NOFOLLOW));
        if (fd.get() < 0) {
            const int error = errno;
            if (error == ENOENT) return std::nullopt;  // nothing stored yet (or the directory does not exist)
            if (error == ELOOP)
                fail(ec, errc::storage_failed,
                     path_ + " is a symbolic link; tokmgr replaces the file on every write, so give it the real path");
            else
                fail(ec, errc::storage_failed, "cannot open " + path_ + ": " + detail::file::errno_text(error));
            return std::nullopt;
        }
        struct stat info {};
        if (!own_regular_file(fd.get(), path_, info, ec)) return std::nullopt;

        std::string text;
        // One allocation, never grown: no reallocation leaves a copy of the
        // tokens in freed memory. tokmgr never writes a file in place (the
        // inode read here does not change), so its size is known; +1 lets
        // decode see "too large" when the file is over the cap.
        const auto on_disk = static_cast<std::size_t>(info.st_size > 0 ? info.st_size : 0);
        text.resize((on_disk < max_document_size ? on_disk : max_document_size) + 1);
        std::size_t size = 0;
        while (size < text.size()) {
            const ssize_t n = detail::file::sys::read(fd.get(), &text[size], text.size() - size);
            if (n < 0) {
                if (errno == EINTR) continue;
                const int error = errno;
                detail::secure_clear(text);
                fail(ec, errc::storage_failed, "cannot read " + path_ + ": " + detail::file::errno_text(error));
                return std::nullopt;
            }
            if (n == 0) break;
            size += static_cast<std::size_t>(n);
        }
        error_info unreadable;
        auto set = decode_token_set(std::string_view(text.data(), size), unreadable);
        detail::secure_clear(text);
        if (set) return set;
        move_aside(info, unreadable.detail, ec);
        return std::nullopt;
    }

    /// Renames a corrupt file out of the way, keeping its content. Moves it
    /// only if the path still names the file that was read (a writer may
    /// have replaced it with a good one in between).
    void move_aside(const struct stat& read, const std::string& why, std::error_code& ec) {
        const auto now = std::time(nullptr);
        std::tm utc{};
        ::gmtime_r(&now, &utc);
        char stamp[32];
        std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &utc);
        const std::string aside = path_ + ".corrupt-" + stamp + "-" + std::to_string(::getpid()) + "-" +
                                  std::to_string(detail::file::temp_counter().fetch_add(1) + 1);
        struct stat current {};
        if (::stat(path_.c_str(), &current) == 0 && (current.st_dev != read.st_dev || current.st_ino != read.st_ino)) {
            // Replaced meanwhile: the bad file is already gone from the path.
            fail(ec, errc::storage_corrupt,
                 path_ + " was not a readable token-set document (" + why +
                     ") and has since been replaced; read it again");
            return;
        }
        if (::rename(path_.c_str(), aside.c_str()) != 0) {
            fail(ec, errc::storage_corrupt,
                 path_ + " is not a readable token-set document (" + why + ") and could not be moved aside (" +
                     detail::file::errno_text(errno) + "); move or remove it yourself to log in afresh");
            return;
        }
        fsync_directory();
        fail(ec, errc::storage_corrupt,
             path_ + " is not a readable token-set document (" + why + "); it was moved to " + aside +
                 " and the store now reads as empty, so the next login writes a new one");
    }

    // O_NONBLOCK, as wherever a FIFO could stand: O_DIRECTORY refuses one
    // already, but nothing need depend on the order of the kernel's checks.
    bool fsync_directory(int& error) noexcept {
        detail::file::fd_guard dir(
            detail::file::sys::open(directory_.c_str(), O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC));
        if (dir.get() >= 0 && detail::file::sys::fsync(dir.get()) == 0) return true;
        error = errno;
        return false;
    }
    bool fsync_directory() noexcept {
        int ignored = 0;
        return fsync_directory(ignored);
    }

    /// What to do about a failed write step, from its errno.
    static const char* write_advice(int error) noexcept {
        switch (error) {
        case ENOSPC:
        case EDQUOT: return "; the file system is full: free some space";
        case EROFS: return "; the file system is read-only: choose a path on a writable one";
        case EACCES:
        case EPERM: return "; check that the directory is writable by this user";
        default: return "; check the file system holding it";
        }
    }

    /// How many unpredictable names a write tries before concluding that
    /// something creates files in the directory on purpose.
    static constexpr int temp_name_attempts = 8;

    /// temp file + fsync + rename + fsync of the directory. The write counts
    /// only when all of them succeeded: the write-ahead mark must be durable
    /// before the refresh token it marks spent is sent.
    void write_replace(const token_set& set, std::error_code& ec) {
        error_info refused;
        const secret text = encode_token_set(set, refused);
        if (refused) {
            fail(ec, errc::storage_failed, "cannot store to " + path_ + ": " + refused.detail);
            return;
        }
        if (!ensure_directory(ec)) return;

        // A random name, not a counter: another user who can create files in
        // a sticky directory would otherwise create the next names first and
        // make every write fail. O_EXCL never opens what exists, so no FIFO
        // or link can be met here.
        std::string temp;
        detail::file::fd_guard fd;
        int error = 0;
        for (int attempt = 0; attempt < temp_name_attempts && fd.get() < 0; ++attempt) {
            std::string suffix;
            if (!detail::file::random_suffix(suffix, error)) {
                fail(ec, errc::storage_failed,
                     "cannot store the token set in " + path_ + ": the system gave no random bytes for its " +
                         "temporary file's name (" + detail::file::errno_text(error) +
                         "); retry once the system's random generator is ready; the previous file is unchanged");
                return;
            }
            temp = path_ + std::string(detail::file::temp_marker) + std::to_string(::getpid()) + "-" + suffix;
            fd.reset(detail::file::sys::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
            if (fd.get() < 0) error = errno;
            if (fd.get() < 0 && error != EEXIST) break;
        }
        if (fd.get() < 0) {
            fail(ec, errc::storage_failed,
                 "cannot create a file in " + directory_ + " to store the token set: " +
                     detail::file::errno_text(error) +
                     (error == EEXIST ? "; " + std::to_string(temp_name_attempts) +
                                            " random names in a row were taken, so something creates files there "
                                            "on purpose; keep the token file in a directory only this user can write to"
                                      : std::string(write_advice(error))) +
                     "; the previous file is unchanged");
            return;
        }
        auto give_up = [&](const char* step, int failed_error) {
            ::unlink(temp.c_str());
            fail(ec, errc::storage_failed,
                 std::string("cannot store the token set in ") + path_ + " (" + step + " " + temp +
                     "): " + detail::file::errno_text(failed_error) + write_advice(failed_error) +
                     "; the previous file is unchanged");
        };
        // fchmod: the umask may have taken bits away, and 0600 is the contract.
        if (detail::file::sys::fchmod(fd.get(), 0600) != 0) return give_up("chmod", errno);
        if (!detail::file::write_all(fd.get(), text.reveal(), error)) return give_up("writing", error);
        if (detail::file::sys::fsync(fd.get()) != 0) return give_up("syncing", errno);
        if (detail::file::sys::close(fd.release()) != 0) return give_up("closing", errno);
        if (detail::file::sys::rename(temp.c_str(), path_.c_str()) != 0) return give_up("renaming", errno);
        // Until the directory is synced the rename may not survive a crash,
        // so a write whose directory sync failed has not happened as far as
        // the caller knows: no refresh token is sent on its strength.
        if (!fsync_directory(error)) {
            fail(ec, errc::storage_failed,
                 "cannot store the token set in " + path_ + ": syncing the directory " + directory_ +
                     " failed after the rename (" + detail::file::errno_text(error) +
                     "), so the new file may not survive a crash; the write counts as failed" +
                     write_advice(error));
            return;
        }
        remove_dead_writers_temp_files();
    }

    /// A writer killed between creating its temporary file and renaming it
    /// leaves the file behind. Each successful write removes those whose
    /// writer's pid no longer exists, so leftovers never accumulate; a live
    /// writer's file (pid alive, or in another pid namespace and so unknown
    /// to kill()) is left alone.
    void remove_dead_writers_temp_files() noexcept {
        const std::string_view prefix = temp_prefix_;
        DIR* dir = ::opendir(directory_.c_str());
        if (!dir) return;
        while (const dirent* entry = ::readdir(dir)) {
            const std::string_view name = entry->d_name;
            if (name.substr(0, prefix.size()) != prefix) continue;
            const std::string_view rest = name.substr(prefix.size());
            long long pid = 0;
            const auto [end, result] = std::from_chars(rest.data(), rest.data() + rest.size(), pid);
            if (result != std::errc() || end == rest.data() + rest.size() || *end != '-' || pid <= 0) continue;
            if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
            ::unlinkat(::dirfd(dir), entry->d_name, 0);
        }
        ::closedir(dir);
    }

    std::string path_;
    std::string lock_path_;
    // The directory and the temporary-file prefix are computed once, in the
    // constructor: remove_dead_writers_temp_files runs after the rename, where
    // an allocation failure could not be reported as anything but a failure.
    std::string directory_;
    std::string temp_prefix_;
};

}  // namespace tokmgr
