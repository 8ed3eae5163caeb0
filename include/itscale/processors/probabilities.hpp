#pragma once
/// \file probabilities.hpp
/// Internal: the float32 probability computations of the HF warpers, done the way torch's CPU
/// kernels do them, so thresholds land on the same side as in HF:
/// - softmax / log_softmax over the last dimension reduce exp(x - max) in float across 16 vector
///   lanes (AVX-512 `Vectorized<float>`), the tail added into the first lanes, then a halving tree;
///   softmax multiplies by the float reciprocal of that sum.
/// - `sum`/`nansum`/`logsumexp` reductions (cascade sums in torch) and `cumsum` (a double
///   accumulator in torch's CPU kernel) are accumulated in double here.
/// At V = 128 256 the lane-wise float sum differs from the exact one by ~1e-5 relative, enough to
/// reorder tokens in typical sampling; reproducing it is what makes the results HF's.

#include <cmath>
#include <cstddef>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/reduce.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

inline constexpr std::size_t torch_lanes = 16;

/// sum(f(x[i])) accumulated like torch's `vec::map_reduce_all` for float.
template <class F>
[[nodiscard]] float torch_lane_sum(std::span<const float> x, F f) noexcept {
  float acc[torch_lanes] = {};
  const std::size_t n = x.size();
  std::size_t i = 0;
  if (n >= torch_lanes) {
    for (std::size_t l = 0; l < torch_lanes; ++l) acc[l] = f(x[l]);
    for (i = torch_lanes; i + torch_lanes <= n; i += torch_lanes)
      for (std::size_t l = 0; l < torch_lanes; ++l) acc[l] += f(x[i + l]);
    for (std::size_t l = 0; i + l < n; ++l) acc[l] += f(x[i + l]);
  } else {
    for (std::size_t l = 0; l < n; ++l) acc[l] = f(x[l]);
  }
  for (std::size_t w = torch_lanes / 2; w >= 1; w /= 2)
    for (std::size_t l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

/// `torch_lane_sum` over terms that are 0 except `term(j)` at position `pos(j)`, j < count,
/// positions increasing. Bit-identical to the dense sum: position i always goes to lane i % 16
/// (the tail too, as the main loop ends on a multiple of 16), adding an exact 0 changes no
/// float, and each lane still adds its terms in position order.
template <class Pos, class Term>
[[nodiscard]] float torch_lane_sum_at(std::size_t count, Pos pos, Term term) noexcept {
  float acc[torch_lanes] = {};
  for (std::size_t j = 0; j < count; ++j) acc[pos(j) % torch_lanes] += term(j);
  for (std::size_t w = torch_lanes / 2; w >= 1; w /= 2)
    for (std::size_t l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

/// probs[j] = softmax_f32(row)[live[j]], where `live` lists (increasing) every entry of `row`
/// that is not -inf: the same floats as the dense softmax_f32 for S = live.size() exps.
/// Precondition: live is not empty.
inline void softmax_f32_at(std::span<const float> row, std::span<const token_id> live, std::span<float> probs) noexcept {
  float m = -INFINITY;
  for (token_id t : live) m = row[static_cast<std::size_t>(t)] > m ? row[static_cast<std::size_t>(t)] : m;
  for (std::size_t j = 0; j < live.size(); ++j) probs[j] = std::exp(row[static_cast<std::size_t>(live[j])] - m);
  const float inv = 1.0f / torch_lane_sum_at(
                               live.size(), [live](std::size_t j) { return static_cast<std::size_t>(live[j]); },
                               [probs](std::size_t j) { return probs[j]; });
  for (std::size_t j = 0; j < live.size(); ++j) probs[j] *= inv;
}

/// out[j] = log_softmax_f32(row)[live[j]] (see softmax_f32_at).
inline void log_softmax_f32_at(std::span<const float> row, std::span<const token_id> live, std::span<float> out) noexcept {
  float m = -INFINITY;
  for (token_id t : live) m = row[static_cast<std::size_t>(t)] > m ? row[static_cast<std::size_t>(t)] : m;
  const float log_sum = std::log(torch_lane_sum_at(
      live.size(), [live](std::size_t j) { return static_cast<std::size_t>(live[j]); },
      [row, live, m](std::size_t j) { return std::exp(row[static_cast<std::size_t>(live[j])] - m); }));
  for (std::size_t j = 0; j < live.size(); ++j) out[j] = (row[static_cast<std::size_t>(live[j])] - m) - log_sum;
}

/// out = softmax(in) in float32 as torch computes it; masked entries get 0. Precondition: some
/// entry is finite; `out` may alias `in`.
inline void softmax_f32(std::span<const float> in, std::span<float> out) noexcept {
  const float m = kernels::max(in);
  for (std::size_t i = 0; i < in.size(); ++i) out[i] = std::exp(in[i] - m);
  const float inv = 1.0f / torch_lane_sum(std::span<const float>(out.data(), in.size()), [](float e) { return e; });
  for (std::size_t i = 0; i < in.size(); ++i) out[i] *= inv;
}

/// Natural-log entropy of softmax(row) as torch's `Categorical(logits=row).entropy()` (logits
/// normalised by logsumexp, probabilities by the softmax kernel, -sum(p * logit)), over the
/// tokens `live` (see softmax_f32_at); leaves those probabilities in `probs` (live.size()).
[[nodiscard]] inline float entropy_f32_at(std::span<const float> row, std::span<const token_id> live,
                                          std::span<float> probs) noexcept {
  // reference::logsumexp's double sum, over the live entries only (the others add exact zeros).
  float m = -INFINITY;
  for (token_id t : live) m = row[static_cast<std::size_t>(t)] > m ? row[static_cast<std::size_t>(t)] : m;
  double s = 0;
  for (token_id t : live) s += std::exp(static_cast<double>(row[static_cast<std::size_t>(t)] - m));
  const float lse = m + static_cast<float>(std::log(s));
  softmax_f32_at(row, live, probs);
  double h = 0;
  for (std::size_t j = 0; j < live.size(); ++j)
    h -= static_cast<double>((row[static_cast<std::size_t>(live[j])] - lse) * probs[j]);
  return static_cast<float>(h);
}

}  // namespace detail
ITSCALE_END_NAMESPACE
