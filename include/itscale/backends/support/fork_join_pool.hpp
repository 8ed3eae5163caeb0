#pragma once
/// \file fork_join_pool.hpp
/// A minimal fork-join pool for the models' batched work: `run(n, f)` calls `f(task, worker)` for
/// every task in [0, n) on the caller's thread and `threads - 1` persistent workers, and returns
/// when all tasks are done. Tasks are claimed from a shared counter, so which worker runs a task
/// varies; callers keep results deterministic by giving every task its own output and by making
/// the task partition independent of the thread count. `run` allocates nothing (the job is a
/// function pointer and a context pointer); the first exception a task throws is rethrown by `run`
/// after every worker has stopped touching the job (the remaining tasks are skipped).

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

class fork_join_pool {
 public:
  /// `threads` >= 1 threads in all, the caller's included (precondition checked: `invalid_option`).
  explicit fork_join_pool(std::size_t threads) : threads_(threads) {
    if (threads == 0) throw invalid_option("itscale: fork_join_pool needs at least one thread");
    workers_.reserve(threads - 1);
    try {
      for (std::size_t w = 1; w < threads; ++w) workers_.emplace_back([this, w] { work(w); });
    } catch (...) {
      stop();
      throw;
    }
  }
  fork_join_pool(const fork_join_pool&) = delete;
  fork_join_pool& operator=(const fork_join_pool&) = delete;
  ~fork_join_pool() { stop(); }

  [[nodiscard]] std::size_t threads() const noexcept { return threads_; }

  /// Calls `f(task, worker)` for task in [0, n), worker in [0, threads()) (0 = the caller).
  /// Not reentrant: one `run` at a time per pool.
  template <class F>
  void run(std::size_t n, F& f) {
    if (n == 0) return;
    if (threads_ == 1 || n == 1) {
      for (std::size_t i = 0; i < n; ++i) f(i, std::size_t{0});
      return;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = [](void* ctx, std::size_t task, std::size_t worker) { (*static_cast<F*>(ctx))(task, worker); };
      ctx_ = &f;
      n_ = n;
      next_.store(0, std::memory_order_relaxed);
      failed_.store(false, std::memory_order_relaxed);
      error_ = nullptr;
      busy_ = workers_.size();
      ++generation_;
    }
    start_.notify_all();
    drain(0);
    std::unique_lock<std::mutex> lk(m_);
    done_.wait(lk, [this] { return busy_ == 0; });
    fn_ = nullptr;
    ctx_ = nullptr;
    if (error_) {
      std::exception_ptr e = std::move(error_);
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  /// Claims and runs tasks of the current job until none is left (or one has failed).
  void drain(std::size_t worker) noexcept {
    for (;;) {
      if (failed_.load(std::memory_order_relaxed)) return;
      const std::size_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= n_) return;
      try {
        fn_(ctx_, i, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lk(m_);
        if (!error_) error_ = std::current_exception();
        failed_.store(true, std::memory_order_relaxed);
      }
    }
  }

  void work(std::size_t worker) noexcept {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m_);
        start_.wait(lk, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
      }
      drain(worker);  // fn_, ctx_, n_ were published under the mutex before generation_ changed
      {
        std::lock_guard<std::mutex> lk(m_);
        if (--busy_ == 0) done_.notify_one();
      }
    }
  }

  void stop() noexcept {
    {
      std::lock_guard<std::mutex> lk(m_);
      quit_ = true;
    }
    start_.notify_all();
    for (auto& t : workers_)
      if (t.joinable()) t.join();
    workers_.clear();
  }

  std::size_t threads_;
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable start_, done_;
  std::uint64_t generation_ = 0;
  bool quit_ = false;
  std::size_t busy_ = 0;
  void (*fn_)(void*, std::size_t, std::size_t) = nullptr;
  void* ctx_ = nullptr;
  std::size_t n_ = 0;
  std::atomic<std::size_t> next_{0};
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
};

}  // namespace detail
ITSCALE_END_NAMESPACE
