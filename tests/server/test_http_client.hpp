// A deliberately small HTTP/1.1 client for driving the reference server in
// tests: raw bytes in, one parsed response out, every wait bounded. It can
// misbehave on purpose (send half a request, stall, never read) in ways a
// real client library would not allow.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace tokmgr_test {

struct test_response {
    int status = 0;
    std::string head;  ///< status line and headers
    std::string body;

    bool has_header_line(std::string_view line) const { return head.find(line) != std::string::npos; }
};

class test_client {
public:
    using tcp = asio::ip::tcp;

    /// Connects to 127.0.0.1:port; with `tls`, also handshakes (verifying as
    /// `tls` says) and sets SNI/host name checks to 127.0.0.1.
    /// `source`, when given, is the loopback address to connect from (any of
    /// 127.0.0.0/8 on Linux), so one test can act as several client addresses.
    explicit test_client(unsigned short port, asio::ssl::context* tls = nullptr,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5), const char* source = nullptr)
        : socket_(io_), timeout_(timeout) {
        if (source) {
            socket_.open(tcp::v4());
            socket_.bind(tcp::endpoint(asio::ip::make_address(source), 0));
        }
        socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
        if (tls) {
            tls_.emplace(std::move(socket_), *tls);
            tls_->set_verify_callback(asio::ssl::host_name_verification("127.0.0.1"));
            std::error_code ec;
            bool done = false;
            tls_->async_handshake(asio::ssl::stream_base::client, [&](std::error_code e) {
                ec = e;
                done = true;
            });
            wait(done);
            if (!done || ec) throw std::system_error(ec ? ec : make_error_code(asio::error::timed_out), "handshake");
        }
    }

    void send(std::string_view bytes) {
        std::error_code ec;
        bool done = false;
        auto handler = [&](std::error_code e, std::size_t) {
            ec = e;
            done = true;
        };
        if (tls_) asio::async_write(*tls_, asio::buffer(bytes), handler);
        else asio::async_write(socket_, asio::buffer(bytes), handler);
        wait(done);
        if (!done || ec) throw std::system_error(ec ? ec : make_error_code(asio::error::timed_out), "send");
    }

    /// One response, or nothing when the connection closed or timed out first.
    std::optional<test_response> read_response() {
        for (;;) {
            const auto end = buffer_.find("\r\n\r\n");
            if (end != std::string::npos) {
                test_response r;
                r.head = buffer_.substr(0, end + 2);
                if (r.head.size() < 12) return std::nullopt;
                r.status = std::stoi(r.head.substr(9, 3));
                std::size_t length = 0;
                const auto cl = lower(r.head).find("\r\ncontent-length:");
                if (cl != std::string::npos) length = std::stoul(r.head.substr(cl + 17));
                while (buffer_.size() < end + 4 + length)
                    if (!read_more()) return std::nullopt;
                r.body = buffer_.substr(end + 4, length);
                buffer_.erase(0, end + 4 + length);
                return r;
            }
            if (!read_more()) return std::nullopt;
        }
    }

    std::optional<test_response> request(std::string_view method, std::string_view target, std::string_view body = {},
                                         std::string_view extra_headers = {}) {
        std::string wire = std::string(method) + " " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
        if (!body.empty() || method == "POST") {
            wire += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
        }
        wire += extra_headers;
        wire += "\r\n";
        wire += body;
        send(wire);
        return read_response();
    }

    /// True when the server closed the connection within the timeout.
    bool closed_by_peer() {
        for (;;) {
            if (!read_more()) return last_error_ != asio::error::timed_out && last_error_ != asio::error::operation_aborted;
        }
    }

    std::error_code last_error() const { return last_error_; }

private:
    static std::string lower(std::string s) {
        for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return s;
    }

    void wait(bool& done) {
        io_.restart();
        io_.run_for(timeout_);
        if (!done) {
            std::error_code ignored;
            if (tls_) tls_->lowest_layer().cancel(ignored);
            else socket_.cancel(ignored);
            io_.restart();
            io_.run();
            last_error_ = asio::error::timed_out;
            done = false;
        }
    }

    bool read_more() {
        char chunk[4096];
        std::size_t n = 0;
        bool done = false;
        auto handler = [&](std::error_code e, std::size_t got) {
            last_error_ = e;
            n = got;
            done = true;
        };
        if (tls_) tls_->async_read_some(asio::buffer(chunk), handler);
        else socket_.async_read_some(asio::buffer(chunk), handler);
        wait(done);
        if (!done) {
            last_error_ = asio::error::timed_out;
            return false;
        }
        if (last_error_) return false;
        buffer_.append(chunk, n);
        return true;
    }

    asio::io_context io_;
    tcp::socket socket_;
    std::optional<asio::ssl::stream<tcp::socket>> tls_;
    std::chrono::milliseconds timeout_;
    std::string buffer_;
    std::error_code last_error_;
};

}  // namespace tokmgr_test
