#pragma once
/// \file temperature.hpp
/// Temperature scaling: logits / t (HF `TemperatureLogitsWarper`; division, not multiplication by
/// 1/t, so results match HF to the bit).

#include <cmath>
#include <span>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/processors/live_set.hpp"
#include "itscale/processors/processor.hpp"

ITSCALE_BEGIN_NAMESPACE

class temperature {
 public:
  /// Throws `invalid_option` unless `t` is finite and > 0.
  explicit temperature(float t) : t_(t) {
    if (!(t > 0) || !std::isfinite(t))
      throw invalid_option("itscale: temperature must be finite and > 0, got " + detail::num(t));
  }

  void apply(std::span<float> row, const step_context&) const noexcept {
    for (float& x : row) x /= t_;
  }

  /// As `apply`: masks nothing, so the unmasked set is unchanged (only those entries are divided
  /// when it is known; -inf / t stays -inf).
  live_set apply(std::span<float> row, const step_context& ctx, live_set live) const noexcept {
    if (!live.known) {
      apply(row, ctx);
      return live;
    }
    for (token_id t : live.ids) row[static_cast<std::size_t>(t)] /= t_;
    return live;
  }

  [[nodiscard]] float value() const noexcept { return t_; }

 private:
  float t_;
};

ITSCALE_END_NAMESPACE
