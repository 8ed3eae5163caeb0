// A llama-server child process for the remote-backend tests (C++20, POSIX; libcurl polls /health).
//
//   remote_test::llama_server srv(exe, "tests/data/models/arith-1750.gguf",
//                                 {"--parallel", "4", "-c", "512", "--threads", "1"});
//   srv.url();   // "http://127.0.0.1:PORT", /health already answered 200
//   srv.kill();  // SIGKILL now (a "server killed mid-search" test); the destructor stops it otherwise
//
// The server listens on 127.0.0.1 at a free port (found by binding port 0; started again on another
// port when the server could not bind it). Its stdout and stderr go to server.log in a fresh
// temporary directory (removed by the destructor unless options::keep_log). The constructor waits
// until GET /health answers 200, and throws std::runtime_error, with the tail of the log, when the
// server exits first or the timeout passes. (llama-server logs from a thread: when it exits early
// its last lines, or all of them, can be missing from the log.)
//
// The child gets PR_SET_PDEATHSIG(SIGKILL) (options::kill_with_parent): it dies with the *thread*
// that started it, so construct llama_server on a thread that outlives it (the test's main thread).
#pragma once

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

namespace remote_test {

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

// The HTTP status of GET http://127.0.0.1:port/health, 0 when nothing answered within `timeout`
// (refused, closed, timed out). No proxy: the server is local whatever the environment says.
inline long health_status(int port, std::chrono::milliseconds timeout) {
  CURL* c = curl_easy_init();
  if (c == nullptr) return 0;
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/health";
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROXY, "");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  using sink = std::size_t (*)(char*, std::size_t, std::size_t, void*);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, static_cast<sink>([](char*, std::size_t size, std::size_t n, void*) { return size * n; }));
  long status = 0;
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(c);
  return status;
}

}  // namespace detail

// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
inline int find_free_port() {
  detail::fd_guard fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw std::runtime_error("find_free_port: socket() failed");
  sockaddr_in addr = detail::loopback(0);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error("find_free_port: bind() failed");
  }
  socklen_t len = sizeof addr;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("find_free_port: getsockname() failed");
  }
  return static_cast<int>(ntohs(addr.sin_port));
}

// True when 127.0.0.1:port cannot be bound now (another socket holds it).
inline bool port_in_use(int port) {
  detail::fd_guard fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return false;
  const sockaddr_in addr = detail::loopback(port);
  return ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 && errno == EADDRINUSE;
}

class llama_server {
 public:
  struct options {
    std::chrono::milliseconds startup_timeout{60000};  // until /health answers 200
    std::chrono::milliseconds stop_grace{5000};        // SIGTERM, then SIGKILL after this
    bool kill_with_parent = true;                      // PR_SET_PDEATHSIG(SIGKILL) in the child
    bool keep_log = false;                             // keep the temp dir and server.log
    int bind_attempts = 5;                             // ports tried when another process took one
  };

  llama_server(std::string exe, std::string model, std::vector<std::string> extra_args = {})
      : llama_server(std::move(exe), std::move(model), std::move(extra_args), options{}) {}

  llama_server(std::string exe, std::string model, std::vector<std::string> extra_args, options opts)
      : exe_(std::move(exe)), model_(std::move(model)), args_(std::move(extra_args)), opts_(opts) {
    make_temp_dir();
    try {
      start();
    } catch (...) {
      cleanup_files();
      throw;
    }
  }

  llama_server(const llama_server&) = delete;
  llama_server& operator=(const llama_server&) = delete;

  ~llama_server() {
    stop();
    cleanup_files();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const noexcept { return port_; }
  pid_t pid() const noexcept { return pid_; }
  const std::string& log_path() const noexcept { return log_path_; }

  // True while the child has not exited (reaps it if it has).
  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      pid_ = -1;
      return false;
    }
    return true;
  }

  // SIGKILL now and reap: the server vanishes mid-request.
  void kill() noexcept {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    reap_blocking();
  }

  // SIGTERM, SIGKILL after options::stop_grace, reap. Idempotent.
  void stop() noexcept {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + opts_.stop_grace;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || (r < 0 && errno != EINTR)) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid_, SIGKILL);
    reap_blocking();
  }

  // The last max_chars characters of the server's log.
  std::string log_tail(std::size_t max_chars = 4000) const {
    std::ifstream in(log_path_, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.size() > max_chars ? text.substr(text.size() - max_chars) : text;
  }

 private:
  void make_temp_dir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/itscale-llama-server-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("llama_server: mkdtemp failed for " + templ);
    dir_ = buf.data();
    log_path_ = dir_ + "/server.log";
  }

  void cleanup_files() noexcept {
    if (opts_.keep_log || dir_.empty()) return;
    ::unlink(log_path_.c_str());
    ::rmdir(dir_.c_str());
  }

  void reap_blocking() noexcept {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  void start() {
    if (::access(exe_.c_str(), X_OK) != 0) throw std::runtime_error("llama_server: not executable: " + exe_);
    std::string last_error;
    for (int attempt = 0; attempt < opts_.bind_attempts; ++attempt) {
      port_ = find_free_port();
      spawn();
      const int outcome = wait_healthy();
      if (outcome == 0) return;
      stop();
      const std::string tail = log_tail();
      last_error = "llama_server: " + std::string(outcome == 1 ? "server exited during startup" : "no 200 from /health in time") +
                   " (" + exe_ + " on port " + std::to_string(port_) + ", log " + log_path_ + "):\n" +
                   (tail.empty() ? std::string("(empty log: llama-server's asynchronous logger can lose its last lines when it exits early)") : tail);
      // Another process took the port between find_free_port() and the server's bind: try another.
      // (The log's "couldn't bind" line may be lost, see above, so also probe the port itself.)
      if (outcome == 1 && (tail.find("couldn't bind") != std::string::npos || port_in_use(port_))) continue;
      break;
    }
    throw std::runtime_error(last_error);
  }

  void spawn() {
    std::vector<std::string> argv_s{exe_, "-m", model_, "--host", "127.0.0.1", "--port", std::to_string(port_)};
    argv_s.insert(argv_s.end(), args_.begin(), args_.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);

    const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) throw std::runtime_error("llama_server: cannot open " + log_path_);
    detail::fd_guard log_guard(log_fd);
    const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) throw std::runtime_error("llama_server: cannot open /dev/null");
    detail::fd_guard null_guard(null_fd);
    const pid_t parent = ::getpid();
    const bool pdeathsig = opts_.kill_with_parent;

    const pid_t child = ::fork();
    if (child < 0) throw std::runtime_error("llama_server: fork failed");
    if (child == 0) {
      // Only async-signal-safe calls from here on.
      if (pdeathsig) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(127);
      }
      if (::dup2(null_fd, 0) < 0 || ::dup2(log_fd, 1) < 0 || ::dup2(log_fd, 2) < 0) ::_exit(127);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = child;
  }

  // 0: healthy; 1: the child exited; 2: timeout.
  int wait_healthy() {
    const auto deadline = std::chrono::steady_clock::now() + opts_.startup_timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!running()) return 1;
      const long status = detail::health_status(port_, std::chrono::milliseconds(2000));
      if (status == 200) return running() ? 0 : 1;
      std::this_thread::sleep_for(std::chrono::milliseconds(status == 0 ? 25 : 50));
    }
    return 2;
  }

  std::string exe_;
  std::string model_;
  std::vector<std::string> args_;
  options opts_;
  std::string dir_;
  std::string log_path_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace remote_test
