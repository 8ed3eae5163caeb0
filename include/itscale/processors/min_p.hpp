#pragma once
/// \file min_p.hpp
/// Min-p filtering (HF `MinPLogitsWarper`, Nguyen et al. 2024): masks tokens whose probability is
/// below min_p times the probability of the most likely token; the `min_tokens_to_keep` best
/// (library tie rule) are always kept.

#include <cstddef>
#include <span>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/processors/live_set.hpp"
#include "itscale/processors/probabilities.hpp"
#include "itscale/processors/processor.hpp"

ITSCALE_BEGIN_NAMESPACE

class min_p_filter {
 public:
  /// Throws `invalid_option` unless 0 <= min_p <= 1 and min_tokens_to_keep >= 1.
  explicit min_p_filter(float min_p, std::size_t min_tokens_to_keep = 1)
      : min_p_(min_p), min_keep_(min_tokens_to_keep) {
    if (!(min_p >= 0 && min_p <= 1))
      throw invalid_option("itscale: min_p must be in [0, 1], got " + detail::num(min_p));
    if (min_tokens_to_keep == 0) throw invalid_option("itscale: min_tokens_to_keep must be >= 1, got 0");
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept { (void)apply(row, ctx, live_set{}); }

  /// As `apply`, touching only the unmasked tokens `live` (listed first if unknown); returns the
  /// tokens left unmasked.
  live_set apply(std::span<float> row, const step_context& ctx, live_set live) const noexcept {
    const std::span<token_id> alive = detail::list_live(row, live, *ctx.ws);
    const std::size_t S = alive.size();
    // The min_tokens_to_keep best tokens survive whatever their probability: all of them when
    // no more than that are unmasked.
    if (S <= min_keep_) return {alive, true};
    auto probs = std::span(ctx.ws->values).first(S);
    detail::softmax_f32_at(row, alive, probs);
    float top = 0;
    for (float p : probs) top = p > top ? p : top;
    const float threshold = min_p_ * top;
    const detail::rank_cut best = detail::rank_cut_at(row, alive, min_keep_, *ctx.ws);
    bool masked_any = false;
    for (std::size_t j = 0; j < S; ++j) {
      const token_id t = alive[j];
      if (probs[j] < threshold && !best.keeps(row[static_cast<std::size_t>(t)], t)) {
        row[static_cast<std::size_t>(t)] = masked_logit;
        masked_any = true;
      }
    }
    return masked_any ? detail::prune_live(row, alive) : live_set{alive, true};
  }

 private:
  float min_p_;
  std::size_t min_keep_;
};

ITSCALE_END_NAMESPACE
