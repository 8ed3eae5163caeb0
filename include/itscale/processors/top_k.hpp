#pragma once
/// \file top_k.hpp
/// Top-k filtering (HF `TopKLogitsWarper`): masks every token whose logit is below the k-th
/// largest, so ties at the k-th value are all kept (more than k tokens may survive).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/kernels/filters.hpp"
#include "itscale/kernels/top_k.hpp"
#include "itscale/processors/live_set.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/processors/temperature.hpp"

ITSCALE_BEGIN_NAMESPACE

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

  /// As `apply`; returns the tokens left unmasked. With `live` known only those are ranked.
  live_set apply(std::span<float> row, const step_context& ctx, live_set live) const noexcept {
    const std::size_t k = std::min(k_, row.size());
    if (live.known) {
      if (live.ids.size() <= k) return live;  // the masked entries fill the ranking below
      const float kth = detail::kth_largest_at(row, live.ids, k, *ctx.ws);
      for (token_id t : live.ids)
        if (row[static_cast<std::size_t>(t)] < kth) row[static_cast<std::size_t>(t)] = masked_logit;
      return detail::prune_live(row, live.ids);
    }
    const float kth = k == row.size() ? masked_logit : kernels::kth_largest(row, k);
    // One pass masks and lists the survivors for the filters after this one.
    return {std::span(ctx.ws->live).first(kernels::mask_below_collect(row, kth, ctx.ws->live)), true};
  }

  /// HF's `temperature` then this filter, in one: the same row, but only the survivors are
  /// divided. Division by t > 0 never reverses an order, so the k-th largest of row / t is the
  /// k-th largest of row, divided by t; the tokens whose quotient rounds up onto it sit within a
  /// few ulps below, so a slightly lower cut lists every candidate and the exact test keeps the
  /// right ones.
  live_set apply_after(const temperature& temp, std::span<float> row, const step_context& ctx) const noexcept {
    const float t = temp.value();
    const std::size_t k = std::min(k_, row.size());
    const float kth = kernels::kth_largest(row, k);
    const float kth_scaled = kth / t;
    if (kth_scaled == INFINITY) {  // quotients far below kth overflow onto it too: divide them all
      temp.apply(row, ctx);
      return apply(row, ctx, live_set{});
    }
    // Below this no quotient reaches kth / t: a relative margin far above the rounding of one
    // division, and an absolute one for quotients that underflow to zero.
    const float lower = kth - (std::fabs(kth) * 0x1p-16f + 0x1p-100f * (t > 1 ? t : 1.0f));
    const std::span<token_id> cand =
        std::span(ctx.ws->live).first(kernels::mask_below_collect(row, lower, ctx.ws->live));
    std::size_t n = 0;
    for (token_id id : cand) {
      float& x = row[static_cast<std::size_t>(id)];
      x /= t;
      if (x >= kth_scaled) cand[n++] = id;
      else x = masked_logit;
    }
    return {cand.first(n), true};
  }

  [[nodiscard]] std::size_t k() const noexcept { return k_; }

 private:
  std::size_t k_;
};

ITSCALE_END_NAMESPACE
