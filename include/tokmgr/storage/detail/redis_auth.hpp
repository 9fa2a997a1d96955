// tokmgr/storage/detail/redis_auth.hpp — what a new Redis connection sends
// before its first command (AUTH with the options' or the provider's
// credential, SELECT), and the sentences its refusals become. One home for
// both Redis clients: hiredis's (redis.hpp) and Asio's (redis_connection.hpp).
#pragma once

#include <exception>
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

/// One command of the handshake: `send(args, refusal, failed)` sends it and
/// reads its answer; false with `failed` set when the connection failed,
/// true with `refusal` holding the error reply's text (empty: accepted).
/// AUTH with the options' credential or, each time, the provider's: a
/// refused provider credential is asked for once more (it may have rotated
/// between the fetch and the AUTH). Then SELECT. False with `failed` set
/// (storage_unreachable: nothing of the caller's was sent).
template <class Send>
bool open_session(const redis_options& options, Send&& send, error_info& failed) {
    const auto send_auth = [&](const std::string& user, const secret& password, bool from_provider, bool& refused) {
        if (password.empty()) return true;
        std::vector<std::string_view> auth{"AUTH"};
        if (!user.empty()) auth.push_back(user);
        auth.push_back(password.reveal());
        std::string refusal;
        if (!send(auth, refusal, failed)) return false;
        if (refusal.empty()) return true;
        refused = true;
        failed = auth_refused(options, refusal, password, from_provider);
        detail::secure_clear(refusal);
        return false;
    };
    bool refused = false;
    if (!options.credential_provider) {
        if (!send_auth(options.user, options.password, false, refused)) return false;
    } else if (!options.user.empty() || !options.password.empty()) {
        failed = unreachable("redis_options for " + options.where() +
                             " set both credential_provider and user/password; set one of them");
        return false;
    } else {
        for (int attempt = 0;; ++attempt) {
            redis_credential credential;
            try {
                credential = options.credential_provider();
            } catch (const std::exception& e) {
                failed = unreachable("the Redis credential provider for " + options.where() + " failed: " + e.what());
                return false;
            } catch (...) {
                failed = unreachable("the Redis credential provider for " + options.where() + " failed");
                return false;
            }
            refused = false;
            if (send_auth(credential.user, credential.password, true, refused)) break;
            if (attempt > 0 || !refused) return false;
        }
    }
    if (options.database != 0) {
        const std::string db = std::to_string(options.database);
        std::string refusal;
        if (!send({"SELECT", db}, refusal, failed)) return false;
        if (!refusal.empty()) {
            failed = unreachable("Redis at " + options.where() + " refused database " + db + ": " +
                                 safe_server_text(refusal, options.password.reveal()) +
                                 "; choose a database the server has (databases in redis.conf)");
            return false;
        }
    }
    failed = {};
    return true;
}

}  // namespace tokmgr::detail::redis
