#pragma once
/// \file dirichlet.hpp
/// Gamma and Dirichlet draws on the counter-based generator (core/rng.hpp): each draw is a pure
/// function of (seed, stream, step), so root noise does not depend on anything but its key.
///
/// Gamma(alpha) by Marsaglia & Tsang (2000) on Philox uniforms (normals by Box–Muller); for
/// alpha < 1, Gamma(alpha) = Gamma(alpha + 1) · U^(1/alpha), kept in log space because small
/// alphas (AlphaZero uses 0.03) underflow U^(1/alpha) to 0.

#include <cmath>
#include <cstdint>
#include <numbers>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/core/rng.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

/// A uniform in (0, 1) from 32 random bits (never 0, so its log is finite).
[[nodiscard]] constexpr double open_uniform(std::uint32_t bits) noexcept {
  return (static_cast<double>(bits) + 0.5) * 0x1.0p-32;
}

/// log of a Gamma(alpha, 1) draw (alpha > 0) from `rng` at `step`: Marsaglia–Tsang rejection,
/// attempt i reading Philox block (step, i).
[[nodiscard]] inline double log_gamma_draw(const counter_rng& rng, std::uint32_t step, double alpha) noexcept {
  const double a = alpha < 1 ? alpha + 1 : alpha;
  const double d = a - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  double log_g = 0;
  for (std::uint32_t attempt = 0;; ++attempt) {
    const auto r = rng.bits(step, attempt);
    const double x =
        std::sqrt(-2.0 * std::log(open_uniform(r[0]))) * std::cos(2.0 * std::numbers::pi * open_uniform(r[1]));
    const double t = 1.0 + c * x;
    if (t <= 0) continue;
    const double v = t * t * t;
    if (std::log(open_uniform(r[2])) < 0.5 * x * x + d - d * v + d * std::log(v)) {
      log_g = std::log(d * v);
      break;
    }
  }
  if (alpha < 1) log_g += std::log(open_uniform(rng.bits(step, 0xFFFFFFFFu)[3])) / alpha;
  return log_g;
}

/// Fills `out` with a Dirichlet(alpha, ..., alpha) draw: component i is Gamma draw `step0 + i`,
/// normalised, so a component keeps its draw when more components are added later.
inline void dirichlet_draw(const counter_rng& rng, std::uint32_t step0, double alpha, std::span<double> out) noexcept {
  if (out.empty()) return;
  double m = -INFINITY;
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = log_gamma_draw(rng, step0 + static_cast<std::uint32_t>(i), alpha);
    m = out[i] > m ? out[i] : m;
  }
  double s = 0;
  for (double& x : out) s += (x = std::exp(x - m));
  for (double& x : out) x /= s;
}

}  // namespace detail
ITSCALE_END_NAMESPACE
