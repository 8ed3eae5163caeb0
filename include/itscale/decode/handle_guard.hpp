#pragma once
/// \file handle_guard.hpp
/// Internal: owns the live handles of a search so that every exit path — return or exception from
/// the source, a processor or a callback — releases each of them exactly once.

#include <cstddef>
#include <vector>

#include "itscale/core/logit_source.hpp"

namespace itscale {
inline namespace v0 {
namespace detail {

template <LogitSource S>
class handle_guard {
 public:
  using handle = handle_t<S>;

  explicit handle_guard(S& s) : s_(s) {}
  handle_guard(const handle_guard&) = delete;
  handle_guard& operator=(const handle_guard&) = delete;
  ~handle_guard() { release_all(); }

  /// Takes ownership of `h`. Reserve first (see `reserve`) so that this cannot throw after the
  /// source created `h`.
  void adopt(handle h) noexcept { live_.push_back(h); }

  /// Makes room for `n` more handles.
  void reserve(std::size_t n) { live_.reserve(live_.size() + n); }

  /// Releases `h` now (it must be owned) and forgets it.
  void release(handle h) noexcept {
    for (std::size_t i = 0; i < live_.size(); ++i)
      if (live_[i] == h) {
        s_.release(h);
        live_[i] = live_.back();
        live_.pop_back();
        return;
      }
  }

  void release_all() noexcept {
    for (handle h : live_) s_.release(h);
    live_.clear();
  }

  [[nodiscard]] std::size_t size() const noexcept { return live_.size(); }

 private:
  S& s_;
  std::vector<handle> live_;
};

}  // namespace detail
}  // namespace v0
}  // namespace itscale
