// curl_transport.hpp — a tokmgr Transport policy over libcurl's blocking easy
// interface.
//
// The proof that a blocking HTTP library plugs into tokmgr as a custom
// transport: the whole policy is one member function,
//
//     tokmgr::http_response send(const tokmgr::http_request&, std::error_code&);
//
// plus the mapping of libcurl's failures onto tokmgr::errc, which is what lets
// the manager know whether a refresh token may have reached the server
// (tokmgr::request_not_sent) and whether retrying makes sense.
//
// Behaviour:
// - One easy handle per transport, reused for every request, so the connection
//   is kept alive and TLS sessions are resumed. `send` is not reentrant; the
//   token manager calls it from one thread at a time (its single refresh).
// - TLS peer and host name verification are on unless `insecure_skip_verify`
//   is set. `ca_file` names a PEM bundle for a private CA.
// - Redirects are not followed (a 3xx is returned as a status for the manager
//   to report); only http and https are allowed.
// - The response body is capped at `max_response_bytes`.
// - Nothing is printed: libcurl's verbose mode stays off, since the request
//   body holds a password or a refresh token.
#pragma once

#include <curl/curl.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <tokmgr/errc.hpp>
#include <tokmgr/error.hpp>
#include <tokmgr/http.hpp>

namespace curl_example {

class curl_transport {
public:
    struct options {
        std::string base_url;  ///< "https://textual.example.com" or "http://127.0.0.1:8080/prefix"
        std::string ca_file;   ///< PEM bundle to verify the server with; empty: the system's
        bool insecure_skip_verify = false;  ///< turns certificate and host checks off: tests only
        std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
        std::chrono::milliseconds request_timeout{std::chrono::seconds(30)};
        std::size_t max_response_bytes = 1 << 20;
        bool keep_alive = true;         ///< false: a new connection for every request
        bool tls_session_cache = true;  ///< false: a full TLS handshake for every new connection
    };

    /// Throws tokmgr::error (errc::invalid_url) when the base URL cannot be
    /// parsed or is not http/https.
    explicit curl_transport(options opts) : options_(std::move(opts)) {
        global_init();
        parse_base_url();
        easy_.reset(curl_easy_init());
        if (!easy_) throw tokmgr::error(make_error_code(tokmgr::errc::invalid_configuration), "curl_easy_init failed");
        configure();
    }

    curl_transport(curl_transport&&) noexcept = default;
    curl_transport& operator=(curl_transport&&) noexcept = default;

    tokmgr::http_response send(const tokmgr::http_request& request, std::error_code& ec) {
        ec.clear();
        tokmgr::http_response response;
        CURL* h = easy_.get();

        const std::string url = base_ + request.target;
        curl_easy_setopt(h, CURLOPT_URL, url.c_str());

        // The method and body. POSTFIELDS does not copy: the body lives until
        // send returns, which is all libcurl needs.
        if (request.method == "POST") {
            curl_easy_setopt(h, CURLOPT_POST, 1L);
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, nullptr);
        } else {
            method_.assign(request.method);
            curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method == "GET" ? nullptr : method_.c_str());
        }
        if (request.method != "GET") {
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.data());
        }

        // Headers: content type, the caller's extras, and no "Expect:
        // 100-continue" round trip for larger bodies.
        header_list headers;
        headers.add("Content-Type: " + request.content_type);
        headers.add("Accept: application/json");
        headers.add("Expect:");
        for (const auto& hd : request.headers) headers.add(hd.name + ": " + hd.value);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());

        receive_state state{&response, options_.max_response_bytes, false};
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &state);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &state);

        const CURLcode rc = curl_easy_perform(h);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, nullptr);  // the list dies with this scope
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, nullptr);   // and so may the body

        if (rc != CURLE_OK) {
            ec = map_error(h, rc, state.too_large);
            return response;
        }
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        response.status = static_cast<int>(status);
        return response;
    }

    /// "scheme://host:port/path" without user information; for error texts.
    std::string endpoint() const { return base_; }

private:
    struct easy_deleter {
        void operator()(CURL* h) const noexcept { curl_easy_cleanup(h); }
    };

    class header_list {
    public:
        header_list() = default;
        header_list(const header_list&) = delete;
        header_list& operator=(const header_list&) = delete;
        ~header_list() { curl_slist_free_all(list_); }
        void add(const std::string& line) {
            curl_slist* next = curl_slist_append(list_, line.c_str());
            if (next == nullptr) throw std::bad_alloc();
            list_ = next;
        }
        curl_slist* get() const noexcept { return list_; }

    private:
        curl_slist* list_ = nullptr;
    };

    struct receive_state {
        tokmgr::http_response* response;
        std::size_t limit;
        bool too_large;
    };

    static void global_init() {
        // Once per process, before any other thread uses libcurl.
        static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
        if (rc != CURLE_OK)
            throw tokmgr::error(make_error_code(tokmgr::errc::invalid_configuration), "curl_global_init failed");
    }

    void parse_base_url() {
        auto invalid = [] {
            return tokmgr::error(make_error_code(tokmgr::errc::invalid_url),
                                 "the base URL must be http://host[:port][/path] or https://...");
        };
        std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> u(curl_url(), &curl_url_cleanup);
        if (!u || curl_url_set(u.get(), CURLUPART_URL, options_.base_url.c_str(), 0) != CURLUE_OK) throw invalid();
        auto part = [&](CURLUPart which, unsigned flags) -> std::string {
            char* text = nullptr;
            if (curl_url_get(u.get(), which, &text, flags) != CURLUE_OK || text == nullptr) return {};
            std::string s(text);
            curl_free(text);
            return s;
        };
        const std::string scheme = part(CURLUPART_SCHEME, 0);
        if (scheme != "http" && scheme != "https") throw invalid();
        const std::string host = part(CURLUPART_HOST, 0);
        if (host.empty()) throw invalid();
        const std::string port = part(CURLUPART_PORT, CURLU_DEFAULT_PORT);
        std::string path = part(CURLUPART_PATH, 0);
        while (!path.empty() && path.back() == '/') path.pop_back();  // targets start with '/'
        base_ = scheme + "://" + host + ":" + port + path;           // user:password@ is dropped
    }

    void configure() {
        CURL* h = easy_.get();
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for timeouts
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout.count()));
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.request_timeout.count()));
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, options_.insecure_skip_verify ? 0L : 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, options_.insecure_skip_verify ? 0L : 2L);
        if (!options_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options_.ca_file.c_str());
        curl_easy_setopt(h, CURLOPT_SSL_SESSIONID_CACHE, options_.tls_session_cache ? 1L : 0L);
        curl_easy_setopt(h, CURLOPT_FORBID_REUSE, options_.keep_alive ? 0L : 1L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &on_body);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &on_header);
    }

    static std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
        auto* state = static_cast<receive_state*>(user);
        const std::size_t n = size * count;
        if (state->response->body.size() + n > state->limit) {
            state->too_large = true;
            return 0;  // aborts the transfer with CURLE_WRITE_ERROR
        }
        state->response->body.append(data, n);
        return n;
    }

    static std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
        auto* state = static_cast<receive_state*>(user);
        const std::size_t n = size * count;
        std::string_view line(data, n);
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
        if (line.substr(0, 5) == "HTTP/") {
            state->response->headers.clear();  // a new status line (after 1xx): start over
            return n;
        }
        const auto colon = line.find(':');
        if (colon == std::string_view::npos) return n;
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
        state->response->headers.push_back({std::string(line.substr(0, colon)), std::string(value)});
        return n;
    }

    /// libcurl's failure as a tokmgr::errc. A code that proves the request was
    /// not sent is used only when that is certain; anything unclear is
    /// connection_failed ("maybe sent").
    static std::error_code map_error(CURL* h, CURLcode rc, bool too_large) {
        using tokmgr::errc;
        switch (rc) {
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_URL_MALFORMAT:
            return make_error_code(errc::invalid_url);
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
            return make_error_code(errc::resolve_failed);
        case CURLE_COULDNT_CONNECT:
            return make_error_code(errc::connection_refused);
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_SSL_ENGINE_NOTFOUND:
        case CURLE_SSL_ENGINE_SETFAILED:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_USE_SSL_FAILED:
            return make_error_code(errc::tls_handshake_failed);
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        case CURLE_SSL_INVALIDCERTSTATUS:
            return make_error_code(errc::certificate_verification_failed);
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CRL_BADFILE:
            return make_error_code(errc::invalid_configuration);  // the CA file cannot be read
        case CURLE_OPERATION_TIMEDOUT: {
            // Not sent only if libcurl never got as far as starting the transfer.
            curl_off_t pretransfer = 0;
            if (curl_easy_getinfo(h, CURLINFO_PRETRANSFER_TIME_T, &pretransfer) == CURLE_OK && pretransfer == 0)
                return make_error_code(errc::connect_timeout);
            return make_error_code(errc::timeout);
        }
        case CURLE_WRITE_ERROR:
            return make_error_code(too_large ? errc::response_too_large : errc::connection_failed);
        case CURLE_FILESIZE_EXCEEDED:
            return make_error_code(errc::response_too_large);
        case CURLE_WEIRD_SERVER_REPLY:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_BAD_CONTENT_ENCODING:
            return make_error_code(errc::protocol_error);
        case CURLE_FAILED_INIT:
        case CURLE_NOT_BUILT_IN:
        case CURLE_BAD_FUNCTION_ARGUMENT:
        case CURLE_UNKNOWN_OPTION:
            return make_error_code(errc::invalid_configuration);
        default:
            // CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_GOT_NOTHING,
            // CURLE_PARTIAL_FILE, out of memory, ...: the request may have
            // reached the server.
            return make_error_code(errc::connection_failed);
        }
    }

    options options_;
    std::string base_;
    std::string method_;
    std::unique_ptr<CURL, easy_deleter> easy_;
};

}  // namespace curl_example
