// A throwaway self-signed certificate for 127.0.0.1 and localhost, made with
// OpenSSL at test time, so TLS tests need no files in the repository and no
// openssl command. The certificate is its own CA: clients trust it by
// loading the same file as their CA file.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>

namespace tokmgr_test {

struct certificate_files {
    std::filesystem::path directory;
    std::string cert_file;  ///< PEM certificate, also the CA file for clients
    std::string key_file;   ///< PEM private key

    certificate_files(const certificate_files&) = delete;
    certificate_files& operator=(const certificate_files&) = delete;
    certificate_files() = default;
    ~certificate_files() {
        std::error_code ignored;
        if (!directory.empty()) std::filesystem::remove_all(directory, ignored);
    }
};

inline void add_extension(X509* cert, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    if (!ext) throw std::runtime_error("test certificate: bad extension");
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
}

inline void write_pem(const std::filesystem::path& path, bool key, EVP_PKEY* pkey, X509* cert) {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "w"), &std::fclose);
    if (!f) throw std::runtime_error("test certificate: cannot write " + path.string());
    const int ok = key ? PEM_write_PrivateKey(f.get(), pkey, nullptr, nullptr, 0, nullptr, nullptr)
                       : PEM_write_X509(f.get(), cert);
    if (ok != 1) throw std::runtime_error("test certificate: PEM write failed");
}

/// Writes a fresh P-256 key and a one-day self-signed certificate to a new
/// temporary directory, removed when the result is destroyed.
inline std::unique_ptr<certificate_files> make_test_certificate(const char* common_name = "127.0.0.1") {
    std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)> pkey(EVP_EC_gen("P-256"), &EVP_PKEY_free);
    std::unique_ptr<X509, void (*)(X509*)> cert(X509_new(), &X509_free);
    if (!pkey || !cert) throw std::runtime_error("test certificate: key generation failed");
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), static_cast<long>(std::random_device{}() & 0x7fffffff));
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
    X509_set_pubkey(cert.get(), pkey.get());
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name), -1,
                               -1, 0);
    X509_set_issuer_name(cert.get(), name);
    add_extension(cert.get(), NID_basic_constraints, "critical,CA:TRUE");
    add_extension(cert.get(), NID_key_usage, "critical,digitalSignature,keyCertSign");
    add_extension(cert.get(), NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost");
    if (X509_sign(cert.get(), pkey.get(), EVP_sha256()) == 0) throw std::runtime_error("test certificate: signing failed");

    auto files = std::make_unique<certificate_files>();
    files->directory = std::filesystem::temp_directory_path() /
                       ("tokmgr-test-cert-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(files->directory);
    files->cert_file = (files->directory / "cert.pem").string();
    files->key_file = (files->directory / "key.pem").string();
    write_pem(files->cert_file, false, pkey.get(), cert.get());
    write_pem(files->key_file, true, pkey.get(), cert.get());
    return files;
}

}  // namespace tokmgr_test
