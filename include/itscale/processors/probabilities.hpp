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

#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/reference/reduce.hpp"

namespace itscale {
inline namespace v0 {
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

/// out = softmax(in) in float32 as torch computes it; masked entries get 0. Precondition: some
/// entry is finite; `out` may alias `in`.
inline void softmax_f32(std::span<const float> in, std::span<float> out) noexcept {
  const float m = kernels::max(in);
  for (std::size_t i = 0; i < in.size(); ++i) out[i] = std::exp(in[i] - m);
  const float inv = 1.0f / torch_lane_sum(std::span<const float>(out.data(), in.size()), [](float e) { return e; });
  for (std::size_t i = 0; i < in.size(); ++i) out[i] *= inv;
}

/// out = log_softmax(in) in float32 as torch computes it: (x - max) - log(sum).
inline void log_softmax_f32(std::span<const float> in, std::span<float> out) noexcept {
  const float m = kernels::max(in);
  const float log_sum = std::log(torch_lane_sum(in, [m](float x) { return std::exp(x - m); }));
  for (std::size_t i = 0; i < in.size(); ++i) out[i] = (in[i] - m) - log_sum;
}

/// Natural-log entropy of softmax(row) as torch's `Categorical(logits=row).entropy()`:
/// logits normalised by logsumexp, probabilities by the softmax kernel, -sum(p * logit);
/// masked entries contribute 0. `probs` is scratch of the row's size.
[[nodiscard]] inline float entropy_f32(std::span<const float> row, std::span<float> probs) noexcept {
  // The double-accumulated scalar logsumexp, as torch's cascade sum: the SIMD kernel's float
  // partial sums would move the result by an ULP. The max passes above are SIMD (exact).
  const float lse = kernels::reference::logsumexp(row);
  softmax_f32(row, probs);
  double h = 0;
  for (std::size_t i = 0; i < row.size(); ++i)
    if (row[i] != -INFINITY) h -= static_cast<double>((row[i] - lse) * probs[i]);
  return static_cast<float>(h);
}

}  // namespace detail
}  // namespace v0
}  // namespace itscale
