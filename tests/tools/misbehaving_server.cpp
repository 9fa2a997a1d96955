// A server that answers every request wrongly in one chosen way, so the CLI
// tests can provoke the client's protocol errors (exit status 5). Plain POSIX
// sockets: no Asio, quick to build. Prints its port on stdout, then answers
// connections until killed (or after 60 s, so a forgotten one goes away).
//
//   misbehaving_server not-json|truncated|huge|server-error
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    std::string answer;
    if (mode == "not-json") {
        answer = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    } else if (mode == "truncated") {
        answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"jwt\":";
    } else if (mode == "huge") {
        answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{\"jwt\":\"";
    } else if (mode == "server-error") {
        answer = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                 "Connection: close\r\n\r\n{}";
    } else {
        std::fprintf(stderr, "usage: misbehaving_server not-json|truncated|huge|server-error\n");
        return 2;
    }

    const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listener, 16) != 0 || ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
        std::perror("misbehaving_server");
        return 1;
    }
    std::printf("%d\n", ntohs(address.sin_port));
    std::fflush(stdout);

    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < give_up) {
        pollfd waiting{listener, POLLIN, 0};
        if (::poll(&waiting, 1, 500) <= 0) continue;
        const int client = ::accept(listener, nullptr, nullptr);
        if (client < 0) continue;
        // Read the request's head (the body, if any, does not matter), answer, close.
        char buffer[8192];
        std::string request;
        while (request.find("\r\n\r\n") == std::string::npos) {
            pollfd readable{client, POLLIN, 0};
            if (::poll(&readable, 1, 2000) <= 0) break;
            const auto n = ::recv(client, buffer, sizeof buffer, 0);
            if (n <= 0) break;
            request.append(buffer, static_cast<std::size_t>(n));
        }
        ::send(client, answer.data(), answer.size(), MSG_NOSIGNAL);
        ::shutdown(client, SHUT_WR);
        while (true) {  // drain until the client closes, so it sees our bytes, not a reset
            pollfd readable{client, POLLIN, 0};
            if (::poll(&readable, 1, 1000) <= 0 || ::recv(client, buffer, sizeof buffer, 0) <= 0) break;
        }
        ::close(client);
    }
    return 0;
}
