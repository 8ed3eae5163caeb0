#pragma once
// An in-process HTTP/1.1 server for the remote backends' tests: 127.0.0.1 on a free port, one
// thread per connection, keep-alive, and a handler that decides each answer (status, body, a delay
// before answering, or closing the connection without one). It records the requests it saw, their
// headers, and the most connections that were open at once.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace remote_test {

struct mock_request {
  std::string method, path, headers, body;
};

struct mock_reply {
  int status = 200;
  std::string body = {};
  int delay_ms = 0;           // wait before answering (a slow server)
  bool hang_up = false;       // close the connection without an answer (a dying server)
};

class mock_server {
 public:
  using handler = std::function<mock_reply(const mock_request&)>;

  explicit mock_server(handler h) : handler_(std::move(h)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("mock_server: socket failed");
    const int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;  // the kernel picks a free port
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 64) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("mock_server: bind/listen failed");
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  mock_server(const mock_server&) = delete;
  mock_server& operator=(const mock_server&) = delete;
  ~mock_server() {
    stop_ = true;
    acceptor_.join();
    std::vector<std::thread> ts;
    {
      const std::lock_guard<std::mutex> l(m_);
      ts.swap(conns_);
    }
    for (auto& t : ts) t.join();
    ::close(fd_);
  }

  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] std::vector<mock_request> requests() const {
    const std::lock_guard<std::mutex> l(m_);
    return seen_;
  }
  [[nodiscard]] int most_open() const noexcept { return most_open_; }
  /// Requests being answered at once (between arrival and reply), at most / now.
  [[nodiscard]] int most_busy() const noexcept { return most_busy_; }
  [[nodiscard]] int busy_now() const noexcept { return busy_; }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      const std::lock_guard<std::mutex> l(m_);
      conns_.emplace_back([this, c] { serve(c); });
    }
  }

  // Reads until `want` is in buf (or the peer closes / the server stops).
  bool read_until(int c, std::string& buf, std::size_t want_total) {
    char tmp[4096];
    while (buf.size() < want_total) {
      pollfd p{c, POLLIN, 0};
      if (stop_) return false;
      if (::poll(&p, 1, 20) <= 0) continue;
      const auto n = ::recv(c, tmp, sizeof tmp, 0);
      if (n <= 0) return false;
      buf.append(tmp, static_cast<std::size_t>(n));
    }
    return true;
  }

  bool read_request(int c, std::string& buf, mock_request& r) {
    std::size_t end;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos)
      if (!read_until(c, buf, buf.size() + 1)) return false;
    const std::string head = buf.substr(0, end);
    buf.erase(0, end + 4);
    const auto sp1 = head.find(' '), sp2 = head.find(' ', sp1 + 1);
    r.method = head.substr(0, sp1);
    r.path = head.substr(sp1 + 1, sp2 - sp1 - 1);
    r.headers = head;
    std::size_t length = 0;
    std::string lower = head;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    if (const auto cl = lower.find("content-length:"); cl != std::string::npos) length = std::stoul(lower.substr(cl + 15));
    if (!read_until(c, buf, length)) return false;
    r.body = buf.substr(0, length);
    buf.erase(0, length);
    return true;
  }

  void serve(int c) {
    const int now = ++open_;
    for (int m = most_open_; now > m && !most_open_.compare_exchange_weak(m, now);) {}
    std::string buf;
    mock_request r;
    while (!stop_ && read_request(c, buf, r)) {
      {
        const std::lock_guard<std::mutex> l(m_);
        seen_.push_back(r);
      }
      const int b = ++busy_;
      for (int m = most_busy_; b > m && !most_busy_.compare_exchange_weak(m, b);) {}
      const mock_reply a = handler_(r);
      // Waits in small steps, and gives up when the client hangs up (a cancelled request).
      for (int waited = 0; waited < a.delay_ms && !stop_ && !peer_closed(c); waited += 10)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      const std::string out = "HTTP/1.1 " + std::to_string(a.status) + " X\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(a.body.size()) + "\r\n\r\n" + a.body;
      const bool sent = !a.hang_up && !stop_ && !peer_closed(c) && ::send(c, out.data(), out.size(), MSG_NOSIGNAL) >= 0;
      --busy_;
      if (!sent) break;
    }
    ::close(c);
    --open_;
  }

  static bool peer_closed(int c) {
    pollfd p{c, POLLIN, 0};
    char ch;
    return ::poll(&p, 1, 0) > 0 && ::recv(c, &ch, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
  }

  handler handler_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> open_{0}, most_open_{0}, busy_{0}, most_busy_{0};
  std::thread acceptor_;
  mutable std::mutex m_;
  std::vector<std::thread> conns_;
  std::vector<mock_request> seen_;
};

}  // namespace remote_test
