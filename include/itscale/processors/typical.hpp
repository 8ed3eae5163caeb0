#pragma once
/// \file typical.hpp
/// Locally typical sampling (HF `TypicalLogitsWarper`, Meister et al. 2023): rank tokens by how
/// close their surprisal is to the entropy, keep the closest ones until their probability mass
/// reaches `mass` (all tokens as close as the last kept one are kept too).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <span>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/processors/live_set.hpp"
#include "itscale/processors/probabilities.hpp"
#include "itscale/processors/processor.hpp"

ITSCALE_BEGIN_NAMESPACE

class typical_filter {
 public:
  /// Throws `invalid_option` unless 0 < mass < 1 (HF's rule) and min_tokens_to_keep >= 1.
  explicit typical_filter(float mass, std::size_t min_tokens_to_keep = 1)
      : mass_(mass), min_keep_(min_tokens_to_keep) {
    if (!(mass > 0 && mass < 1))
      throw invalid_option("itscale: typical_p must be in (0, 1), got " + detail::num(mass));
    if (min_tokens_to_keep == 0) throw invalid_option("itscale: min_tokens_to_keep must be >= 1, got 0");
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept { (void)apply(row, ctx, live_set{}); }

  /// As `apply`, touching only the unmasked tokens `live` (listed first if unknown); returns the
  /// tokens left unmasked.
  live_set apply(std::span<float> row, const step_context& ctx, live_set live) const noexcept {
    const std::span<token_id> alive = detail::list_live(row, live, *ctx.ws);
    const std::size_t n = row.size(), S = alive.size();
    if (S == 0) return {alive, true};
    // |surprisal - entropy| per unmasked token (index j into `alive`), from torch's float32
    // log_softmax; masked tokens are infinitely far, so they sort after every survivor.
    auto shifted = std::span(ctx.ws->values).first(S);
    auto probs = std::span(ctx.ws->values2).first(S);
    auto order = std::span(ctx.ws->ids).first(S);
    auto& logp = shifted;
    detail::log_softmax_f32_at(row, alive, logp);
    double ent = 0;
    for (std::size_t j = 0; j < S; ++j) ent -= static_cast<double>(logp[j] * std::exp(logp[j]));
    const auto entropy = static_cast<float>(ent);
    for (std::size_t j = 0; j < S; ++j) shifted[j] = std::fabs(-logp[j] - entropy);
    // Closest first; equal distances: the lower token id first (library tie rule; `alive` is
    // increasing, so the lower j).
    std::iota(order.begin(), order.end(), token_id{0});
    std::sort(order.begin(), order.end(), [shifted](token_id a, token_id b) {
      const float va = shifted[static_cast<std::size_t>(a)], vb = shifted[static_cast<std::size_t>(b)];
      return va < vb || (va == vb && a < b);
    });
    const auto token = [alive, order](std::size_t r) { return static_cast<std::size_t>(alive[static_cast<std::size_t>(order[r])]); };
    // HF softmaxes the logits in that order (torch's float lane sum runs over sorted positions;
    // the masked tokens come last and add zeros).
    float m = -INFINITY;
    for (std::size_t r = 0; r < S; ++r) m = row[token(r)] > m ? row[token(r)] : m;
    for (std::size_t r = 0; r < S; ++r) probs[r] = std::exp(row[token(r)] - m);
    const float inv = 1.0f / detail::torch_lane_sum_at(
                                 S, [](std::size_t r) { return r; }, [probs](std::size_t r) { return probs[r]; });
    // last = number of sorted tokens whose cumulative probability is still < mass (HF's rule);
    // past the survivors the sum stops growing.
    std::size_t last = 0;
    double cum = 0;
    for (std::size_t r = 0; r < S; ++r) {
      cum += probs[r] * inv;
      if (static_cast<float>(cum) < mass_) ++last;
      else break;
    }
    if (last == S) last = n;
    last = std::min(last, n - 1);
    const float limit = last < S ? shifted[static_cast<std::size_t>(order[last])] : INFINITY;
    bool masked_any = false;
    for (std::size_t r = std::min(min_keep_, n); r < S; ++r)
      if (shifted[static_cast<std::size_t>(order[r])] > limit) {
        row[token(r)] = masked_logit;
        masked_any = true;
      }
    return masked_any ? detail::prune_live(row, alive) : live_set{alive, true};
  }

 private:
  float mass_;
  std::size_t min_keep_;
};

ITSCALE_END_NAMESPACE
