// Shared by the itscale fuzz targets: turning fuzz bytes into the inputs that break numeric code
// (NaN, +-inf, denormals, +-0, huge and tiny values, whole masked rows) and a check that stops
// the run. A failed check is a finding: it prints what broke and aborts, so libFuzzer saves the
// input as a crash.

#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

namespace fuzz {

/// Aborts (a libFuzzer crash) when `ok` is false; `what` names the broken invariant.
inline void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "itscale fuzz: invariant violated: %s\n", what);
  std::abort();
}

/// One float: raw bits (every pattern, NaN payloads and denormals included) or a value from a
/// palette of the ones that break numeric kernels, or a small number near a shared base (so ties
/// and near-ties are common).
inline float any_float(FuzzedDataProvider& in) {
  constexpr float inf = std::numeric_limits<float>::infinity();
  static const float palette[] = {std::numeric_limits<float>::quiet_NaN(),
                                  inf,
                                  -inf,
                                  0.0f,
                                  -0.0f,
                                  std::numeric_limits<float>::denorm_min(),
                                  -std::numeric_limits<float>::denorm_min(),
                                  std::numeric_limits<float>::min(),
                                  std::numeric_limits<float>::max(),
                                  -std::numeric_limits<float>::max(),
                                  1e-30f,
                                  88.7f,
                                  -88.7f,
                                  -103.9f,
                                  1e20f,
                                  -1e20f};
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: return static_cast<float>(in.ConsumeIntegralInRange<int>(-8, 8)) * 0.5f;
    case 1: return palette[in.ConsumeIntegralInRange<std::size_t>(0, std::size(palette) - 1)];
    case 2: return std::bit_cast<float>(in.ConsumeIntegral<std::uint32_t>());
    default: return static_cast<float>(in.ConsumeIntegralInRange<int>(-2000, 2000)) * 0.01f;
  }
}

/// A row of `n` floats: arbitrary entries, or a "background" value with a few arbitrary ones
/// (a masked row with survivors, a constant row), so that both dense and sparse shapes occur.
inline std::vector<float> any_row(FuzzedDataProvider& in, std::size_t n) {
  std::vector<float> row(n);
  const int shape = in.ConsumeIntegralInRange<int>(0, 3);
  if (shape == 0) {
    for (float& x : row) x = any_float(in);
    return row;
  }
  const float background = shape == 1 ? -std::numeric_limits<float>::infinity() : any_float(in);
  for (float& x : row) x = background;
  const std::size_t specials = in.ConsumeIntegralInRange<std::size_t>(0, 16);
  for (std::size_t j = 0; j < specials && n > 0; ++j) row[in.ConsumeIntegralInRange<std::size_t>(0, n - 1)] = any_float(in);
  return row;
}

/// True when `a` and `b` are the same float (both NaN counts as the same).
inline bool same(float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); }

}  // namespace fuzz
