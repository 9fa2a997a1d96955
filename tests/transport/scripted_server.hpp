// A small HTTP server for the transport's tests, plain or TLS, on loopback.
//
// Each request it reads (request line, headers, Content-Length body) is
// recorded and handed to the test's handler, which returns a script: bytes to
// send (as separate writes), pauses, a clean close, a reset, or a stall until
// the server stops. So a test states exactly what goes over the wire,
// including what a real server would never send.
//
// Blocking Asio on one thread per connection: simple to follow, and the
// client under test is the only asynchronous party.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <tokmgr/http.hpp>

namespace transport_test {

struct received_request {
    std::string method;
    std::string target;
    std::vector<tokmgr::http_header> headers;
    std::string body;
    std::string head;    ///< the raw request line and headers
    int connection = 0;  ///< 1 for the first accepted connection
    int index = 0;       ///< 1 for the first request on its connection
    unsigned short peer_port = 0;  ///< the client's local port
};

struct action {
    enum class kind { send, pause, close, reset, stall, wait_gate };
    kind what = kind::send;
    std::string bytes;
    std::chrono::milliseconds delay{0};
};

inline action send(std::string bytes) { return {action::kind::send, std::move(bytes), {}}; }
inline action pause(std::chrono::milliseconds delay) { return {action::kind::pause, {}, delay}; }
/// Closes after the script (a TLS close sends close_notify first).
inline action close_connection() { return {action::kind::close, {}, {}}; }
/// Closes with a TCP reset (SO_LINGER 0).
inline action reset_connection() { return {action::kind::reset, {}, {}}; }
/// Sends nothing more until the server stops.
inline action stall() { return {action::kind::stall, {}, {}}; }
/// Waits until the test calls open_gate() (or the server stops): lets a test
/// order a server action after something the client did.
inline action wait_gate() { return {action::kind::wait_gate, {}, {}}; }

using script = std::vector<action>;
using handler = std::function<script(const received_request&)>;

/// A complete response with a Content-Length.
inline std::string response(int status, const std::string& body, const std::string& extra_headers = "") {
    return "HTTP/1.1 " + std::to_string(status) + " Status\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n" + extra_headers + "\r\n" + body;
}

struct tls_files {
    std::string certificate_chain;  ///< PEM
    std::string private_key;        ///< PEM
    int max_version = 0;            ///< e.g. TLS1_1_VERSION to offer only old protocols; 0: OpenSSL's default
};

class scripted_server {
public:
    explicit scripted_server(handler on_request, std::optional<tls_files> tls = std::nullopt,
                             const asio::ip::address& address = asio::ip::address_v4::loopback())
        : on_request_(std::move(on_request)), acceptor_(io_, asio::ip::tcp::endpoint(address, 0)) {
        if (tls) {
            tls_.emplace(asio::ssl::context::tls_server);
            tls_->use_certificate_chain_file(tls->certificate_chain);
            tls_->use_private_key_file(tls->private_key, asio::ssl::context::pem);
            static const unsigned char session_context[] = "tokmgr-test";
            SSL_CTX_set_session_id_context(tls_->native_handle(), session_context, sizeof session_context - 1);
            if (tls->max_version != 0) {
                SSL_CTX_set_min_proto_version(tls_->native_handle(), 0);
                SSL_CTX_set_max_proto_version(tls_->native_handle(), tls->max_version);
                SSL_CTX_set_security_level(tls_->native_handle(), 0);
                SSL_CTX_set_cipher_list(tls_->native_handle(), "DEFAULT:@SECLEVEL=0");
            }
        }
        port_ = acceptor_.local_endpoint().port();
        accept_thread_ = std::thread([this] { accept_loop(); });
    }

    scripted_server(const scripted_server&) = delete;
    scripted_server& operator=(const scripted_server&) = delete;

    ~scripted_server() { stop(); }

    void stop() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (stopping_) return;
            stopping_ = true;
            // Wakes connection threads blocked in a read (shutdown(2) is safe
            // from another thread; the Asio objects are not touched).
            for (int fd : open_fds_)
                if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
        }
        stalled_.notify_all();
        // Unblocks accept() with one last connection.
        try {
            asio::io_context wake_io;
            asio::ip::tcp::socket wake(wake_io);
            wake.connect(acceptor_.local_endpoint());
        } catch (const std::exception&) {
        }
        if (accept_thread_.joinable()) accept_thread_.join();
        for (auto& t : connection_threads_) t.join();
    }

    unsigned short port() const { return port_; }

    /// "http://127.0.0.1:<port>" or "https://localhost:<port>" plus `path`.
    std::string url(const std::string& path = "") const {
        const bool ipv6 = acceptor_.local_endpoint().address().is_v6();
        if (tls_) return "https://" + std::string(ipv6 ? "[::1]" : "localhost") + ":" + std::to_string(port_) + path;
        return "http://" + std::string(ipv6 ? "[::1]" : "127.0.0.1") + ":" + std::to_string(port_) + path;
    }

    int connections() const { return connections_.load(); }
    void open_gate() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            gate_open_ = true;
        }
        stalled_.notify_all();
    }

    /// Connections a script closed or reset.
    int closed() const { return closed_.load(); }

    /// Waits (up to 5 s) until scripts have closed `count` connections, so a
    /// test can act after the server did, however loaded the machine is.
    bool wait_closed(int count) const {
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (closed_.load() < count) {
            if (std::chrono::steady_clock::now() > give_up) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        // Let the FIN or RST cross loopback.
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        return true;
    }
    int requests() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return static_cast<int>(received_.size());
    }
    std::vector<received_request> received() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return received_;
    }

private:
    void accept_loop() {
        while (true) {
            asio::ip::tcp::socket socket(io_);
            std::error_code ec;
            acceptor_.accept(socket, ec);
            std::lock_guard<std::mutex> lock(mutex_);
            if (stopping_ || ec) return;
            const int number = ++connections_;
            open_fds_.push_back(socket.native_handle());
            connection_threads_.emplace_back(
                [this, number, s = std::move(socket)]() mutable { serve(std::move(s), number); });
        }
    }

    template <class Stream>
    bool read_request(Stream& stream, std::string& buffer, received_request& request) {
        std::error_code ec;
        const std::size_t head_end = asio::read_until(stream, asio::dynamic_buffer(buffer), "\r\n\r\n", ec);
        if (ec) return false;
        request.head = buffer.substr(0, head_end);
        std::size_t line_end = request.head.find("\r\n");
        const std::string request_line = request.head.substr(0, line_end);
        const std::size_t sp1 = request_line.find(' ');
        const std::size_t sp2 = request_line.find(' ', sp1 + 1);
        request.method = request_line.substr(0, sp1);
        request.target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
        std::size_t length = 0;
        std::size_t pos = line_end + 2;
        while (pos < head_end - 2) {
            const std::size_t end = request.head.find("\r\n", pos);
            const std::string line = request.head.substr(pos, end - pos);
            const std::size_t colon = line.find(':');
            tokmgr::http_header h{line.substr(0, colon), line.substr(colon + 2)};
            if (tokmgr::detail::iequals(h.name, "Content-Length")) length = std::stoul(h.value);
            request.headers.push_back(std::move(h));
            pos = end + 2;
        }
        buffer.erase(0, head_end);
        if (buffer.size() < length) {
            const std::size_t missing = length - buffer.size();
            std::string rest(missing, '\0');
            asio::read(stream, asio::buffer(rest), ec);
            if (ec) return false;
            buffer += rest;
        }
        request.body = buffer.substr(0, length);
        buffer.erase(0, length);
        return true;
    }

    // Returns false when the connection is to end.
    template <class Stream>
    bool run_script(Stream& stream, asio::ip::tcp::socket& socket, const script& steps, SSL* ssl) {
        for (const action& step : steps) {
            std::error_code ec;
            switch (step.what) {
            case action::kind::send:
                asio::write(stream, asio::buffer(step.bytes), ec);
                if (ec) return false;
                break;
            case action::kind::pause:
                std::this_thread::sleep_for(step.delay);
                break;
            case action::kind::close:
                forget(socket);
                if (ssl != nullptr) SSL_shutdown(ssl);  // sends close_notify, does not wait for the peer's
                socket.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
                socket.close(ec);
                ++closed_;
                return false;
            case action::kind::reset:
                forget(socket);
                socket.set_option(asio::socket_base::linger(true, 0), ec);
                socket.close(ec);
                ++closed_;
                return false;
            case action::kind::stall: {
                std::unique_lock<std::mutex> lock(mutex_);
                stalled_.wait(lock, [this] { return stopping_; });
                return false;
            }
            case action::kind::wait_gate: {
                std::unique_lock<std::mutex> lock(mutex_);
                stalled_.wait(lock, [this] { return stopping_ || gate_open_; });
                if (stopping_) return false;
                break;
            }
            }
        }
        return true;
    }

    template <class Stream>
    void serve_stream(Stream& stream, asio::ip::tcp::socket& socket, int number, SSL* ssl) {
        std::string buffer;
        for (int index = 1;; ++index) {
            received_request request;
            request.connection = number;
            request.index = index;
            std::error_code ignored;
            request.peer_port = socket.remote_endpoint(ignored).port();
            if (!read_request(stream, buffer, request)) return;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                received_.push_back(request);
            }
            if (!run_script(stream, socket, on_request_(request), ssl)) return;
        }
    }

    // Before a socket closes, so that stop() never shuts down a descriptor
    // number the system has since given to another socket.
    void forget(asio::ip::tcp::socket& socket) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& fd : open_fds_)
            if (fd == socket.native_handle()) fd = -1;
    }

    void serve(asio::ip::tcp::socket socket, int number) {
        if (!tls_) {
            serve_stream(socket, socket, number, nullptr);
        } else {
            asio::ssl::stream<asio::ip::tcp::socket&> stream(socket, *tls_);
            std::error_code ec;
            stream.handshake(asio::ssl::stream_base::server, ec);
            if (!ec) serve_stream(stream, socket, number, stream.native_handle());
        }
        if (socket.is_open()) forget(socket);
    }

    handler on_request_;
    asio::io_context io_;
    std::optional<asio::ssl::context> tls_;
    asio::ip::tcp::acceptor acceptor_;
    unsigned short port_ = 0;
    std::thread accept_thread_;
    std::vector<std::thread> connection_threads_;
    mutable std::mutex mutex_;
    std::condition_variable stalled_;
    bool stopping_ = false;
    bool gate_open_ = false;
    std::vector<int> open_fds_;
    std::atomic<int> connections_{0};
    std::atomic<int> closed_{0};
    std::vector<received_request> received_;
};

}  // namespace transport_test
