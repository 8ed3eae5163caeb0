#pragma once
/// \file lru_order.hpp
/// Internal: least-recently-used order over small integer ids (tree nodes holding a live handle),
/// an intrusive doubly linked list in two arrays: touch, remove and walk from the oldest are O(1)
/// per step and never allocate once the arrays have grown to the largest id.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "itscale/core/abi.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

class lru_order {
 public:
  static constexpr std::uint32_t none = 0xFFFFFFFFu;

  /// Makes ids below `n` usable.
  void grow(std::size_t n) {
    if (n > prev_.size()) {
      prev_.resize(n, none);
      next_.resize(n, none);
      in_.resize(n, 0);
    }
  }

  /// Makes `id` the most recently used (inserting it if absent). Precondition: `id` < grown size.
  void touch(std::uint32_t id) noexcept {
    if (in_[id] != 0) {
      if (tail_ == id) return;
      unlink(id);
    }
    in_[id] = 1;
    prev_[id] = tail_;
    next_[id] = none;
    if (tail_ != none) next_[tail_] = id;
    tail_ = id;
    if (head_ == none) head_ = id;
    ++size_;
  }

  /// Removes `id` (no-op if absent).
  void remove(std::uint32_t id) noexcept {
    if (id < in_.size() && in_[id] != 0) unlink(id);
  }

  [[nodiscard]] bool contains(std::uint32_t id) const noexcept { return id < in_.size() && in_[id] != 0; }
  /// The least recently used id, or `none`.
  [[nodiscard]] std::uint32_t oldest() const noexcept { return head_; }
  /// The id used just after `id`, or `none`.
  [[nodiscard]] std::uint32_t newer(std::uint32_t id) const noexcept { return next_[id]; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

  void clear() noexcept {
    for (std::uint32_t i = head_; i != none;) {
      const std::uint32_t n = next_[i];
      in_[i] = 0;
      i = n;
    }
    head_ = tail_ = none;
    size_ = 0;
  }

 private:
  void unlink(std::uint32_t id) noexcept {
    const std::uint32_t p = prev_[id], n = next_[id];
    if (p != none)
      next_[p] = n;
    else
      head_ = n;
    if (n != none)
      prev_[n] = p;
    else
      tail_ = p;
    in_[id] = 0;
    --size_;
  }

  std::vector<std::uint32_t> prev_, next_;
  std::vector<std::uint8_t> in_;
  std::uint32_t head_ = none, tail_ = none;
  std::size_t size_ = 0;
};

}  // namespace detail
ITSCALE_END_NAMESPACE
