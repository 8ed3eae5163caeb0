#pragma once
/// \file top_k.hpp
/// Top-k filtering (HF `TopKLogitsWarper`): masks every token whose logit is below the k-th
/// largest, so ties at the k-th value are all kept (more than k tokens may survive).

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>

#include "itscale/core/errors.hpp"
#include "itscale/kernels/filters.hpp"
#include "itscale/kernels/top_k.hpp"
#include "itscale/processors/processor.hpp"

namespace itscale {
inline namespace v0 {

class top_k_filter {
 public:
  /// Keeps at least max(k, min_tokens_to_keep) tokens. Throws `invalid_option` for k = 0 or
  /// min_tokens_to_keep = 0.
  explicit top_k_filter(std::size_t k, std::size_t min_tokens_to_keep = 1)
      : k_(std::max(k, min_tokens_to_keep)) {
    if (k == 0) throw invalid_option("itscale: top_k must be >= 1 (0 means off in sampling_options), got 0");
    if (min_tokens_to_keep == 0) throw invalid_option("itscale: min_tokens_to_keep must be >= 1, got 0");
  }

  void apply(std::span<float> row, const step_context& /*ctx*/) const noexcept {
    const std::size_t k = std::min(k_, row.size());
    if (k == row.size()) return;
    // SIMD selection (threshold filter / radix select) and masking: exact, so HF's result.
    kernels::mask_below(row, kernels::kth_largest(row, k));
  }

  [[nodiscard]] std::size_t k() const noexcept { return k_; }

 private:
  std::size_t k_;
};

}  // namespace v0
}  // namespace itscale
