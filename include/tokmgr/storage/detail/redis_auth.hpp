// tokmgr/storage/detail/redis_auth.hpp — what a new Redis connection sends
// before its first command (AUTH with the options' or the provider's
// credential, SELECT), and the sentences its refusals become, as steps with
// no I/O that the connection's blocking and asynchronous paths both drive
// (redis_connection.hpp).
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../../error.hpp"
#include "../redis_options.hpp"
#include "shared_store.hpp"

namespace tokmgr::detail::redis {

/// A refused AUTH, as a sentence naming the server and where the password came from.
inline error_info auth_refused(const redis_options& options, std::string_view said_raw, const secret& password,
                               bool from_provider) {
    const std::string said = safe_server_text(said_raw, password.reveal());
    const std::string source =
        from_provider ? "the credential provider" : "TOKMGR_REDIS_PASSWORD or redis_options::password";
    if (said.find("without any password") != std::string::npos ||
        said.find("no password is set") != std::string::npos)
        return unreachable("Redis at " + options.where() + " has no password set, but " + source +
                           " gave one; remove it there or set requirepass on the server (Redis said: " + said + ")");
    return unreachable("Redis at " + options.where() + " refused the password; check " + source +
                       " (and the user, for an ACL user) (Redis said: " + said + ")");
}

/// The commands a new connection sends before the caller's, as steps without
/// I/O, so that a blocking and an asynchronous client drive the same
/// handshake: AUTH with the options' credential or, each time, the
/// provider's (a refused provider credential is asked for once more: it may
/// have rotated between the fetch and the AUTH), then SELECT. Failures are
/// storage_unreachable: nothing of the caller's was sent.
class session_opener {
public:
    explicit session_opener(const redis_options& options) : options_(options) {}
    session_opener(const session_opener&) = delete;
    session_opener& operator=(const session_opener&) = delete;

    /// The next command into `command` (its views live until the next
    /// call), or false: the session is open (`failed` empty) or refused.
    bool next(std::vector<std::string_view>& command, error_info& failed) {
        command.clear();
        if (stage_ == stage::credential && !take_credential()) stage_ = stage::done;
        if (stage_ == stage::credential) {
            if (password_->empty()) {
                stage_ = stage::select;
            } else {
                command.push_back("AUTH");
                if (!user_->empty()) command.push_back(*user_);
                command.push_back(password_->reveal());
                stage_ = stage::auth_sent;
                return true;
            }
        }
        if (stage_ == stage::select) {
            stage_ = stage::done;
            if (options_.database != 0) {
                database_ = std::to_string(options_.database);
                command = {"SELECT", database_};
                stage_ = stage::select_sent;
                return true;
            }
        }
        failed = failure_;
        return false;
    }

    /// The answer to the command next() gave: the error reply's text, or
    /// nothing when the server accepted it (an error reply without text is
    /// still a refusal).
    void answered(std::optional<std::string_view> refusal) {
        if (stage_ == stage::auth_sent) {
            if (!refusal) {
                stage_ = stage::select;
            } else if (options_.credential_provider && !asked_again_) {
                asked_again_ = true;
                stage_ = stage::credential;
            } else {
                failure_ = auth_refused(options_, *refusal, *password_, bool(options_.credential_provider));
                stage_ = stage::done;
            }
        } else if (stage_ == stage::select_sent) {
            stage_ = stage::done;
            if (!refusal) return;
            failure_ = unreachable("Redis at " + options_.where() + " refused database " + database_ + ": " +
                                   safe_server_text(*refusal, password_->reveal()) +
                                   "; choose a database the server has (databases in redis.conf)");
        }
    }

private:
    enum class stage { credential, auth_sent, select, select_sent, done };

    bool take_credential() {
        if (!options_.credential_provider) return true;
        if (!options_.user.empty() || !options_.password.empty()) {
            failure_ = unreachable("redis_options for " + options_.where() +
                                   " set both credential_provider and user/password; set one of them");
            return false;
        }
        try {
            credential_ = options_.credential_provider();
        } catch (const std::exception& e) {
            failure_ = unreachable("the Redis credential provider for " + options_.where() + " failed: " + e.what());
            return false;
        } catch (...) {
            failure_ = unreachable("the Redis credential provider for " + options_.where() + " failed");
            return false;
        }
        user_ = &credential_.user;
        password_ = &credential_.password;
        return true;
    }

    const redis_options& options_;
    stage stage_ = stage::credential;
    redis_credential credential_;
    const std::string* user_ = &options_.user;
    const secret* password_ = &options_.password;
    bool asked_again_ = false;
    std::string database_;
    error_info failure_;
};

/// The handshake, blocking: `send(args, refusal, failed)` sends one command
/// and reads its answer; false with `failed` set when the connection failed,
/// true with `refusal` holding the error reply's text (none: accepted).
template <class Send>
bool open_session(const redis_options& options, Send&& send, error_info& failed) {
    session_opener opener(options);
    std::vector<std::string_view> command;
    while (opener.next(command, failed)) {
        std::optional<std::string> refusal;
        if (!send(command, refusal, failed)) return false;
        opener.answered(refusal ? std::optional<std::string_view>(*refusal) : std::nullopt);
        if (refusal) detail::secure_clear(*refusal);
    }
    return !failed;
}

}  // namespace tokmgr::detail::redis
