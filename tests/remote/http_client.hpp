// A minimal blocking HTTP/1.1 client over a plain POSIX socket, for the remote-backend test
// harness (health polling of llama-server, the harness's own tests). Not the library's client:
// one request per connection ("Connection: close"), 127.0.0.1 only, Content-Length or chunked
// responses. C++20, POSIX, libc only.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace remote_test {

struct http_reply {
  int status = 0;       // 0: no reply (connection refused, closed without reply, timeout)
  std::string headers;  // status line and headers, as received
  std::string body;     // de-chunked
};

namespace detail {

class fd_guard {
 public:
  explicit fd_guard(int fd) noexcept : fd_(fd) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const noexcept { return fd_; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

inline sockaddr_in loopback(int port) noexcept {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// Sends all of data (MSG_NOSIGNAL: a peer that closed gives EPIPE, not SIGPIPE).
inline bool send_all(int fd, std::string_view data) noexcept {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Waits until fd is readable or the deadline passes; false on timeout.
inline bool wait_readable(int fd, std::chrono::steady_clock::time_point deadline) noexcept {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count() > 1000 ? 1000 : left.count()));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

inline std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Value of header `name` (lower case) in a header block, if present.
inline std::optional<std::string> header_value(std::string_view headers, std::string_view name) {
  const std::string low = lower(headers);
  std::size_t pos = 0;
  while ((pos = low.find("\r\n", pos)) != std::string::npos) {
    pos += 2;
    if (low.compare(pos, name.size(), name) == 0 && pos + name.size() < low.size() && low[pos + name.size()] == ':') {
      std::size_t b = pos + name.size() + 1;
      std::size_t e = low.find("\r\n", b);
      if (e == std::string::npos) e = low.size();
      while (b < e && (headers[b] == ' ' || headers[b] == '\t')) ++b;
      return std::string(headers.substr(b, e - b));
    }
  }
  return std::nullopt;
}

// Decodes a chunked body; nullopt when it is malformed or incomplete.
inline std::optional<std::string> dechunk(std::string_view in) {
  std::string out;
  std::size_t pos = 0;
  for (;;) {
    const std::size_t eol = in.find("\r\n", pos);
    if (eol == std::string_view::npos) return std::nullopt;
    const std::string size_text(in.substr(pos, eol - pos));
    char* end = nullptr;
    const unsigned long long size = std::strtoull(size_text.c_str(), &end, 16);
    if (end == size_text.c_str()) return std::nullopt;
    pos = eol + 2;
    if (size == 0) return out;
    if (in.size() - pos < size + 2) return std::nullopt;
    out.append(in.substr(pos, static_cast<std::size_t>(size)));
    pos += static_cast<std::size_t>(size) + 2;
  }
}

}  // namespace detail

// One request to 127.0.0.1:port. Never throws for network trouble: status 0 then.
inline http_reply http_request(int port, std::string_view method, std::string_view path, std::string_view body = {},
                               std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
  http_reply reply;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  detail::fd_guard fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return reply;
  const sockaddr_in addr = detail::loopback(port);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) return reply;

  std::string req;
  req.append(method).append(" ").append(path).append(" HTTP/1.1\r\nHost: 127.0.0.1:").append(std::to_string(port));
  req.append("\r\nConnection: close\r\n");
  if (!body.empty() || method == "POST" || method == "PUT") {
    req.append("Content-Type: application/json\r\nContent-Length: ").append(std::to_string(body.size())).append("\r\n");
  }
  req.append("\r\n").append(body);
  if (!detail::send_all(fd.get(), req)) return reply;

  std::string raw;
  char buf[16384];
  for (;;) {
    if (!detail::wait_readable(fd.get(), deadline)) return reply;  // timeout: status 0
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
    // Stop as soon as a Content-Length body is complete (a keep-alive server may not close).
    const std::size_t he = raw.find("\r\n\r\n");
    if (he != std::string::npos) {
      const auto cl = detail::header_value(std::string_view(raw).substr(0, he + 2), "content-length");
      if (cl && raw.size() - (he + 4) >= std::strtoull(cl->c_str(), nullptr, 10)) break;
    }
  }
  const std::size_t he = raw.find("\r\n\r\n");
  if (he == std::string::npos || raw.compare(0, 5, "HTTP/") != 0) return reply;
  const std::size_t sp = raw.find(' ');
  if (sp == std::string::npos || sp > he) return reply;
  reply.headers = raw.substr(0, he + 2);
  std::string payload = raw.substr(he + 4);
  if (const auto te = detail::header_value(reply.headers, "transfer-encoding"); te && detail::lower(*te) == "chunked") {
    auto plain = detail::dechunk(payload);
    if (!plain) return reply;
    payload = std::move(*plain);
  } else if (const auto cl = detail::header_value(reply.headers, "content-length")) {
    const auto n = std::strtoull(cl->c_str(), nullptr, 10);
    if (payload.size() < n) return reply;  // truncated
    payload.resize(static_cast<std::size_t>(n));
  }
  reply.body = std::move(payload);
  reply.status = std::atoi(raw.c_str() + sp + 1);
  return reply;
}

}  // namespace remote_test
