#pragma once
/// \file handle_guard.hpp
/// Internal: owns the live handles of a search so that every exit path — return or exception from
/// the source, a processor or a callback — releases each of them exactly once.
///
/// Release by value is O(1): handles of at most 8 bytes (ints, enums, pointers: every realistic
/// handle) are found through an open-addressing index over their bytes, because a batch of
/// B prompts × K beams releases O(B·K) handles per step out of O(B·K) live ones.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/logit_source.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

template <LogitSource S>
class handle_guard {
 public:
  using handle = handle_t<S>;

  explicit handle_guard(S& s) : s_(s) {}
  handle_guard(const handle_guard&) = delete;
  handle_guard& operator=(const handle_guard&) = delete;
  ~handle_guard() { release_all(); }

  /// Makes room for `n` more handles, so that the next `n` adopts cannot throw. Call it before
  /// asking the source for new handles.
  void reserve(std::size_t n) {
    live_.reserve(live_.size() + n);
    if constexpr (indexed) {
      const std::size_t want = 2 * (live_.size() + n) + 2;
      if (slots_.size() < want) rebuild(want);
    }
  }

  /// Takes ownership of `h` (after `reserve`: cannot throw).
  void adopt(handle h) noexcept {
    live_.push_back(h);
    if constexpr (indexed) insert(h, live_.size() - 1);
  }

  /// Forgets `h` (it must be owned) without releasing it: its new owner releases it.
  void disown(handle h) noexcept {
    const std::size_t i = find(h);
    if (i == npos) return;
    const std::size_t last = live_.size() - 1;
    if constexpr (indexed) {
      erase(h);
      if (i != last) {
        erase(live_[last]);
        insert(live_[last], i);
      }
    }
    live_[i] = live_[last];
    live_.pop_back();
  }

  /// Releases `h` now (it must be owned) and forgets it.
  void release(handle h) noexcept {
    if (find(h) == npos) return;
    disown(h);
    s_.release(h);
  }

  void release_all() noexcept {
    for (handle h : live_) s_.release(h);
    live_.clear();
    if constexpr (indexed)
      for (auto& sl : slots_) sl.used = false;
  }

  [[nodiscard]] std::size_t size() const noexcept { return live_.size(); }

 private:
  static constexpr bool indexed = sizeof(handle) <= sizeof(std::uint64_t);
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  struct slot {
    std::uint64_t key = 0;
    std::size_t index = 0;
    bool used = false;
  };

  static std::uint64_t key_of(const handle& h) noexcept {
    std::uint64_t k = 0;
    std::memcpy(&k, &h, sizeof(handle) <= sizeof k ? sizeof(handle) : sizeof k);
    return k;
  }
  std::size_t home(std::uint64_t k) const noexcept {
    return static_cast<std::size_t>((k * 0x9E3779B97F4A7C15ull) >> 17) & (slots_.size() - 1);
  }

  std::size_t find(const handle& h) const noexcept {
    if constexpr (indexed) {
      if (slots_.empty()) return npos;
      const std::uint64_t k = key_of(h);
      for (std::size_t p = home(k);; p = (p + 1) & (slots_.size() - 1)) {
        if (!slots_[p].used) return npos;
        if (slots_[p].key == k) return slots_[p].index;
      }
    } else {
      for (std::size_t i = 0; i < live_.size(); ++i)
        if (live_[i] == h) return i;
      return npos;
    }
  }

  void insert(const handle& h, std::size_t index) noexcept {
    const std::uint64_t k = key_of(h);
    std::size_t p = home(k);
    while (slots_[p].used) p = (p + 1) & (slots_.size() - 1);
    slots_[p] = {k, index, true};
  }

  // Linear-probing deletion with backward shift: no tombstones, so lookups stay short.
  void erase(const handle& h) noexcept {
    const std::uint64_t k = key_of(h);
    const std::size_t mask = slots_.size() - 1;
    std::size_t p = home(k);
    while (slots_[p].used && slots_[p].key != k) p = (p + 1) & mask;
    if (!slots_[p].used) return;
    for (std::size_t q = (p + 1) & mask; slots_[q].used; q = (q + 1) & mask) {
      const std::size_t want = home(slots_[q].key);
      // Move q back into the hole at p unless its home lies cyclically in (p, q].
      if (((q - want) & mask) >= ((q - p) & mask)) {
        slots_[p] = slots_[q];
        p = q;
      }
    }
    slots_[p].used = false;
  }

  void rebuild(std::size_t at_least) {
    std::size_t n = 16;
    while (n < at_least) n *= 2;
    std::vector<slot> fresh(n);
    slots_.swap(fresh);
    for (std::size_t i = 0; i < live_.size(); ++i) insert(live_[i], i);
  }

  S& s_;
  std::vector<handle> live_;
  std::vector<slot> slots_;  // power-of-two size, at most half full
};

}  // namespace detail
ITSCALE_END_NAMESPACE
