// tokmgr/server/detail/crypto.hpp — the two OpenSSL primitives the reference
// server needs: HMAC-SHA256 for HS256 JWT signatures and a CSPRNG for keys,
// refresh tokens and JWT ids.
#pragma once

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <stdexcept>
#include <string>
#include <string_view>

#include "../../detail/base64url.hpp"

namespace tokmgr::server::detail {

/// The 32-byte HMAC-SHA256 of `data` under `key`.
inline std::string hmac_sha256(std::string_view key, std::string_view data) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    // HMAC() rejects a null key pointer even for a zero-length key.
    static const unsigned char empty_key = 0;
    const void* key_data = key.empty() ? static_cast<const void*>(&empty_key) : key.data();
    if (HMAC(EVP_sha256(), key_data, static_cast<int>(key.size()),
             reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &length) == nullptr)
        throw std::runtime_error("tokmgr server: OpenSSL HMAC-SHA256 failed");
    return std::string(reinterpret_cast<const char*>(mac), length);
}

/// `n` bytes from OpenSSL's CSPRNG; throws if it is not seeded, since a
/// predictable refresh token or signing key would be worse than no server.
inline std::string random_bytes(std::size_t n) {
    std::string out(n, '\0');
    if (n != 0 && RAND_bytes(reinterpret_cast<unsigned char*>(&out[0]), static_cast<int>(n)) != 1)
        throw std::runtime_error("tokmgr server: OpenSSL RAND_bytes failed: the random generator is not seeded");
    return out;
}

/// `n` random bytes as base64url text: an opaque, URL- and JSON-safe token.
inline std::string random_token(std::size_t n) { return tokmgr::detail::base64url_encode(random_bytes(n)); }

}  // namespace tokmgr::server::detail
