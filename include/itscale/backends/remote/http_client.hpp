#pragma once
/// \file http_client.hpp
/// The transport of the remote backends (`remote_source`, `remote_proposer`, `http_verifier`):
/// JSON over HTTP with libcurl's multi interface. A call sends a batch of requests with at most
/// `max_in_flight` open at once (the server batches what arrives together), over kept-alive
/// connections (libcurl's connection cache, one per client), and returns when every answer is in.
///
/// Failures: a 429 or 5xx answer and a refused, reset or empty connection are retried with
/// exponential backoff (`max_retries`); a timeout is not (the server is slow, not gone). What still
/// fails is a `remote_error` with the URL, the HTTP status and the server's own message, and the
/// other requests of the batch are aborted first: when a call returns or throws, no request of
/// it is running. `stop` cancels the same way (`request_cancelled`).
///
/// Needs libcurl (Debian `libcurl4-openssl-dev`) and nlohmann-json; nothing else in itscale
/// includes this header.

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/errors.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Where a remote backend connects and how it behaves on the wire.
struct http_options {
  std::string base_url = {};                           ///< "http://host:port", the API's root
  std::string api_key = {};                            ///< sent as "Authorization: Bearer ..." when set
  std::size_t max_in_flight = 16;                 ///< requests open at once, in [1, 1024]
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds timeout{120000};      ///< one attempt, from connect to the last byte
  std::size_t max_retries = 3;                    ///< of a 429, a 5xx or a failed connection
  std::chrono::milliseconds backoff{200};         ///< wait before the first retry, doubled after
  std::stop_token stop{};                         ///< cancels the calls in progress

  /// Throws `invalid_option` unless the URL is http(s), the limits are positive and in range.
  void validate() const {
    if (!(base_url.starts_with("http://") || base_url.starts_with("https://")))
      throw invalid_option("itscale: http_options.base_url = '" + base_url + "' must start with http:// or https://");
    if (max_in_flight == 0 || max_in_flight > 1024)
      throw invalid_option("itscale: http_options.max_in_flight = " + std::to_string(max_in_flight) + " must be in [1, 1024]");
    if (connect_timeout.count() <= 0 || timeout.count() <= 0)
      throw invalid_option("itscale: http_options timeouts must be > 0 ms");
    if (max_retries > 16) throw invalid_option("itscale: http_options.max_retries = " + std::to_string(max_retries) + " must be <= 16");
    if (backoff.count() < 0 || backoff.count() > 60000) throw invalid_option("itscale: http_options.backoff must be in [0, 60000] ms");
  }
};

/// One request: `POST path` with a JSON body, or `GET path` when the body is empty.
struct http_request {
  std::string path = {};
  std::string body = {};
};

/// What the transport did, for compute reports.
struct http_stats {
  std::uint64_t requests = 0;  ///< answered requests (retries not counted)
  std::uint64_t retries = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  double seconds = 0;          ///< wall time inside calls
};

namespace detail {

inline void curl_global() {
  // libcurl's global init is not thread-safe; a function-local static runs it exactly once.
  static const bool ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  if (!ok) throw backend_error("itscale: curl_global_init failed");
}

/// The server's own message in an error body: OpenAI's {"error": {"message": ...}}, llama-server's
/// and vLLM's variants, else the body's start.
inline std::string server_message(std::string_view body) {
  const auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object()) {
    if (auto e = j.find("error"); e != j.end()) {
      if (e->is_string()) return e->get<std::string>();
      if (e->is_object() && e->contains("message") && (*e)["message"].is_string()) return (*e)["message"].get<std::string>();
    }
    if (auto m = j.find("message"); m != j.end() && m->is_string()) return m->get<std::string>();
    if (auto m = j.find("detail"); m != j.end() && m->is_string()) return m->get<std::string>();
  }
  std::string s(body.substr(0, 300));
  if (body.size() > 300) s += "...";
  return s.empty() ? "(empty body)" : s;
}

}  // namespace detail

/// A batch-oriented HTTP client (see the file comment). Not thread-safe; one per thread.
class http_client {
 public:
  explicit http_client(http_options o) : opts_(std::move(o)) {
    opts_.validate();
    while (opts_.base_url.ends_with('/')) opts_.base_url.pop_back();
    detail::curl_global();
    multi_.reset(curl_multi_init());
    if (!multi_) throw backend_error("itscale: curl_multi_init failed");
    curl_multi_setopt(multi_.get(), CURLMOPT_MAXCONNECTS, static_cast<long>(opts_.max_in_flight));
    headers_ = curl_slist_append(nullptr, "Content-Type: application/json");
    if (!opts_.api_key.empty()) headers_ = curl_slist_append(headers_, ("Authorization: Bearer " + opts_.api_key).c_str());
    if (!headers_) throw backend_error("itscale: curl_slist_append failed");
  }
  http_client(const http_client&) = delete;
  http_client& operator=(const http_client&) = delete;
  ~http_client() {
    for (auto& t : transfers_) curl_easy_cleanup(t.easy);
    curl_slist_free_all(headers_);
  }

  /// Sends every request (at most `max_in_flight` at once) and returns the bodies, in order.
  /// Throws `remote_error` / `request_cancelled` after aborting the rest (see the file comment).
  std::vector<std::string> send(std::span<const http_request> reqs) {
    const detail::scoped_seconds timing(stats_.seconds);
    std::vector<std::string> out(reqs.size());
    run(reqs, out);
    return out;
  }

  /// One request; its body parsed as JSON (a `remote_error` if it is not JSON).
  nlohmann::json call(const http_request& r) {
    auto body = send(std::span<const http_request>(&r, 1));
    return parse(r, body[0]);
  }

  /// Parses an answer to `r` as JSON; a `remote_error` naming the request if it is not.
  [[nodiscard]] nlohmann::json parse(const http_request& r, const std::string& body) const {
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded())
      throw remote_error("itscale: " + what(r) + ": the server's answer is not JSON: " + detail::server_message(body), 200);
    return j;
  }

  /// "POST http://host/path", for messages.
  [[nodiscard]] std::string what(const http_request& r) const {
    return std::string(r.body.empty() ? "GET " : "POST ") + opts_.base_url + r.path;
  }

  [[nodiscard]] const http_options& options() const noexcept { return opts_; }
  [[nodiscard]] const http_stats& stats() const noexcept { return stats_; }
  /// Requests running now (0 outside a call: a call never leaves one behind).
  [[nodiscard]] std::size_t running() const noexcept { return active_; }

 private:
  struct multi_deleter {
    void operator()(CURLM* m) const noexcept { curl_multi_cleanup(m); }
  };
  // One reusable easy handle (and its buffers) per request slot in flight.
  struct transfer {
    CURL* easy = nullptr;
    std::size_t req = 0;
    std::size_t attempt = 0;
    bool busy = false;
    std::string response;
    char error[CURL_ERROR_SIZE] = {};
  };
  struct pending {
    std::size_t req;
    std::size_t attempt;
    std::chrono::steady_clock::time_point not_before;
  };

  static std::size_t on_data(char* p, std::size_t size, std::size_t n, void* user) {
    static_cast<std::string*>(user)->append(p, size * n);
    return size * n;
  }

  transfer& free_transfer() {
    for (auto& t : transfers_)
      if (!t.busy) return t;
    transfer& t = transfers_.emplace_back();
    t.easy = curl_easy_init();
    if (!t.easy) {
      transfers_.pop_back();
      throw backend_error("itscale: curl_easy_init failed");
    }
    return t;
  }

  void start(const http_request& r, pending p) {
    transfer& t = free_transfer();
    CURL* e = t.easy;
    curl_easy_reset(e);  // keeps the connection cache, drops the previous request's options
    t.req = p.req;
    t.attempt = p.attempt;
    t.response.clear();
    t.error[0] = '\0';
    const std::string url = opts_.base_url + r.path;
    curl_easy_setopt(e, CURLOPT_URL, url.c_str());
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers_);
    if (!r.body.empty()) {
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, r.body.data());
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &http_client::on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &t.response);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t.error);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM from the resolver in a host's threads
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(opts_.connect_timeout.count()));
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(opts_.timeout.count()));
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PRIVATE, static_cast<void*>(&t));
    if (curl_multi_add_handle(multi_.get(), e) != CURLM_OK) throw backend_error("itscale: curl_multi_add_handle failed");
    t.busy = true;
    ++active_;
    stats_.bytes_sent += r.body.size();
  }

  void finish(transfer& t) noexcept {
    curl_multi_remove_handle(multi_.get(), t.easy);  // aborts the transfer if it is still running
    t.busy = false;
    --active_;
  }

  // Aborts whatever is still running (on every exit from `run`, normal or not).
  struct abort_all {
    http_client& c;
    ~abort_all() {
      for (auto& t : c.transfers_)
        if (t.busy) c.finish(t);
    }
  };

  static bool retryable(CURLcode rc, long status) {
    if (rc == CURLE_OK) return status == 429 || (status >= 500 && status <= 599);
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR;
  }

  void run(std::span<const http_request> reqs, std::vector<std::string>& out) {
    const abort_all guard{*this};
    std::deque<pending> queue;
    const auto now0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < reqs.size(); ++i) queue.push_back({i, 0, now0});
    std::size_t done = 0;
    while (done < reqs.size()) {
      if (opts_.stop.stop_requested())
        throw request_cancelled("itscale: " + what(reqs[0]) + " and the rest of its batch: cancelled by the caller's stop_token");
      launch(reqs, queue);
      int still = 0;
      if (curl_multi_perform(multi_.get(), &still) != CURLM_OK) throw backend_error("itscale: curl_multi_perform failed");
      done += collect(reqs, out, queue);
      if (done < reqs.size()) curl_multi_poll(multi_.get(), nullptr, 0, 20, nullptr);
    }
  }

  void launch(std::span<const http_request> reqs, std::deque<pending>& queue) {
    const auto now = std::chrono::steady_clock::now();
    for (auto it = queue.begin(); it != queue.end() && active_ < opts_.max_in_flight;) {
      if (it->not_before > now) {
        ++it;
        continue;
      }
      start(reqs[it->req], *it);
      it = queue.erase(it);
    }
  }

  // Reads finished transfers: stores answers, requeues retries, throws on a final failure.
  std::size_t collect(std::span<const http_request> reqs, std::vector<std::string>& out, std::deque<pending>& queue) {
    std::size_t n = 0;
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(multi_.get(), &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      void* priv = nullptr;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
      transfer& t = *static_cast<transfer*>(priv);
      const CURLcode rc = m->data.result;
      long status = 0;
      curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &status);
      finish(t);
      const http_request& r = reqs[t.req];
      if (rc == CURLE_OK && status >= 200 && status < 300) {
        stats_.bytes_received += t.response.size();
        ++stats_.requests;
        out[t.req] = std::move(t.response);
        ++n;
        continue;
      }
      if (retryable(rc, status) && t.attempt < opts_.max_retries) {
        ++stats_.retries;
        const auto wait = opts_.backoff * (1LL << t.attempt);
        queue.push_back({t.req, t.attempt + 1, std::chrono::steady_clock::now() + wait});
        continue;
      }
      throw failure(r, rc, status, t);
    }
    return n;
  }

  [[nodiscard]] remote_error failure(const http_request& r, CURLcode rc, long status, const transfer& t) const {
    const std::string tries = t.attempt > 0 ? " (after " + std::to_string(t.attempt) + " retries)" : "";
    if (rc != CURLE_OK) {
      const std::string why = t.error[0] ? t.error : curl_easy_strerror(rc);
      const std::string hint = rc == CURLE_OPERATION_TIMEDOUT ? " (http_options.timeout = " + std::to_string(opts_.timeout.count()) + " ms)" : "";
      return remote_error("itscale: " + what(r) + ": " + why + hint + tries, 0);
    }
    return remote_error("itscale: " + what(r) + ": HTTP " + std::to_string(status) + ": " + detail::server_message(t.response) + tries,
                        status);
  }

  http_options opts_;
  std::unique_ptr<CURLM, multi_deleter> multi_;
  curl_slist* headers_ = nullptr;
  std::deque<transfer> transfers_;  // a deque: transfers are pointed to (CURLOPT_PRIVATE, WRITEDATA)
  std::size_t active_ = 0;
  http_stats stats_;
};

ITSCALE_END_NAMESPACE
