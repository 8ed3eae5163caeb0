#pragma once
/// \file slot_pool.hpp
/// Internal: a free-list of per-sequence slots for sources whose state is a small value per
/// handle. Handles are slot indices; released slots are reused.

#include <cstdint>
#include <string>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

template <class State>
class slot_pool {
 public:
  using handle = std::uint32_t;

  /// Stores `s` and returns its handle.
  handle acquire(State s) {
    if (!free_.empty()) {
      const handle h = free_.back();
      free_.pop_back();
      slots_[h] = std::move(s);
      live_[h] = 1;
      ++live_count_;
      return h;
    }
    slots_.push_back(std::move(s));
    live_.push_back(1);
    ++live_count_;
    return static_cast<handle>(slots_.size() - 1);
  }

  /// The state of a live handle; throws `invalid_input` for a released or unknown one (a bug in
  /// the caller that would otherwise read a reused slot).
  [[nodiscard]] const State& at(handle h) const {
    if (h >= slots_.size() || !live_[h])
      throw invalid_input("itscale: handle " + std::to_string(h) + " is not live (released or never created)");
    return slots_[h];
  }

  void release(handle h) noexcept {
    if (h < slots_.size() && live_[h]) {
      live_[h] = 0;
      --live_count_;
      slots_[h] = State{};  // drop memory held by the state (a prefix vector, say)
      try {
        free_.push_back(h);
      } catch (...) {
        // Out of memory while recycling: the slot is leaked for reuse but stays released.
      }
    }
  }

  /// Number of live handles (the tests use it to prove nothing leaks).
  [[nodiscard]] std::size_t live() const noexcept { return live_count_; }

  /// Reserves room so that `n` more acquisitions cannot throw (all-or-nothing extends).
  void reserve_more(std::size_t n) {
    slots_.reserve(slots_.size() + n);
    live_.reserve(live_.size() + n);
  }

 private:
  std::vector<State> slots_;
  std::vector<unsigned char> live_;
  std::vector<handle> free_;
  std::size_t live_count_ = 0;
};

}  // namespace detail
ITSCALE_END_NAMESPACE
