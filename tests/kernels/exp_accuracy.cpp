// Accuracy of the kernels' float exp and softmax for the arch this file is compiled for (CMake
// builds it once per arch with that arch's flags; it instantiates the arch-templated kernels with
// xsimd::default_arch). Prints the largest error of the kernels' exp (kernels/simd/exp.hpp; the
// softmax hot path `exp_nonpositive` is checked to give the same bits) in ULP against the correctly
// rounded float exp (double exp rounded once to float), checks its special values and range ends,
// and prints softmax's largest relative error against a float64 softmax; exits 1 past the
// documented bounds (2 ULP, 3e-6) or on a wrong special value, 77 when the CPU cannot run this arch.
//   exp_accuracy          every 97th float of [-87, 0] (~11 M values), the ctest run
//   exp_accuracy --full   every float of [-87, 0] (~1.1 G values)

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "itscale/core/rng.hpp"
#include "itscale/kernels/simd/exp.hpp"
#include "itscale/kernels/simd/softmax.hpp"

namespace {

using arch = xsimd::default_arch;
using batch = xsimd::batch<float, arch>;
namespace kd = itscale::kernels::simd::detail;

bool cpu_can_run() {
  const auto cpu = xsimd::available_architectures();
  if (std::strcmp(arch::name(), "avx512bw") == 0) return cpu.avx512bw && cpu.avx512dq;
  if (std::strcmp(arch::name(), "fma3+avx2") == 0) return cpu.avx2 && cpu.fma3_avx2;
  return true;
}

std::int64_t ulp_key(float v) {
  const auto u = std::bit_cast<std::int32_t>(v);
  return u < 0 ? static_cast<std::int64_t>(INT32_MIN) - u : static_cast<std::int64_t>(u);
}

}  // namespace

int main(int argc, char** argv) {
  if (!cpu_can_run()) {
    std::printf("SKIPPED: this CPU cannot run %s\n", arch::name());
    return 77;
  }
  const bool full = argc > 1 && std::strcmp(argv[1], "--full") == 0;
  const std::uint32_t stride = full ? 1 : 97;
  // Floats of [-87, 0] are the bit patterns from -0 (0x80000000) up to -87 (0xC2AE0000).
  const std::uint32_t lo = 0x80000000u, hi = std::bit_cast<std::uint32_t>(-87.0f);
  constexpr std::size_t L = batch::size;
  alignas(64) float in[L], out[L];
  alignas(64) float out_np[L];
  std::int64_t worst = 0;
  float worst_x = 0;
  std::uint64_t count = 0, np_differs = 0;
  for (std::uint64_t b = lo; b <= hi;) {
    std::size_t n = 0;
    for (; n < L && b <= hi; ++n, b += stride) in[n] = std::bit_cast<float>(static_cast<std::uint32_t>(b));
    for (std::size_t l = n; l < L; ++l) in[l] = 0.0f;
    kd::exp<arch>(batch::load_aligned(in)).store_aligned(out);
    kd::exp_nonpositive<arch>(batch::load_aligned(in)).store_aligned(out_np);
    for (std::size_t l = 0; l < n; ++l) {
      np_differs += std::bit_cast<std::uint32_t>(out[l]) != std::bit_cast<std::uint32_t>(out_np[l]);
      const auto want = static_cast<float>(std::exp(static_cast<double>(in[l])));
      std::int64_t d = ulp_key(out[l]) - ulp_key(want);
      d = d < 0 ? -d : d;
      if (d > worst) {
        worst = d;
        worst_x = in[l];
      }
    }
    count += n;
  }
  std::printf("%s: exp max error %lld ULP (at x = %.9g) over %llu floats of [-87, 0]%s\n", arch::name(),
              static_cast<long long>(worst), static_cast<double>(worst_x), static_cast<unsigned long long>(count),
              full ? " (all)" : " (every 97th)");

  // The documented behaviour outside [-87, 0]: flush to +0 below exp_lo (subnormal results), +inf
  // above exp_hi, NaN in NaN out; within 2 ULP on [exp_lo, -87] and on a sweep of (0, exp_hi].
  std::uint64_t wrong = np_differs;
  auto scalar = [](float x) {
    alignas(64) float t[L];
    kd::exp<arch>(batch(x)).store_aligned(t);
    return t[0];
  };
  auto ulps = [](float got, float x) {
    const std::int64_t d = ulp_key(got) - ulp_key(static_cast<float>(std::exp(static_cast<double>(x))));
    return d < 0 ? -d : d;
  };
  const float inf = INFINITY;
  wrong += !(scalar(-inf) == 0.0f && !std::signbit(scalar(-inf)));
  wrong += scalar(inf) != inf;
  wrong += !std::isnan(scalar(NAN));
  wrong += !std::isnan(scalar(-NAN));
  wrong += scalar(-1e30f) != 0.0f || scalar(std::nextafter(kd::exp_lo, -inf)) != 0.0f;
  wrong += scalar(1e30f) != inf || scalar(std::nextafter(kd::exp_hi, inf)) != inf;
  wrong += scalar(0.0f) != 1.0f || scalar(-0.0f) != 1.0f;
  for (float x = kd::exp_lo; x <= -87.0f; x = std::nextafter(x, 0.0f)) wrong += ulps(scalar(x), x) > 2;
  for (float x = kd::exp_hi; x > 88.0f; x = std::nextafter(x, 0.0f)) wrong += ulps(scalar(x), x) > 2;
  for (float x = 1e-30f; x < kd::exp_hi; x = x * 1.0001f + 1e-30f) wrong += ulps(scalar(x), x) > 2;
  std::printf("%s: exp special values, range ends and (0, %.9g]: %llu wrong%s\n", arch::name(),
              static_cast<double>(kd::exp_hi), static_cast<unsigned long long>(wrong),
              np_differs != 0 ? " (exp_nonpositive differs from exp)" : "");

  // softmax against float64 on normal-ish logits (sigma ~ 3) at V = 128 256; entries within 20 of
  // the max (the mass that matters) and all entries with p >= 1e-30.
  const std::size_t V = 128256;
  std::vector<float> row(V), p(V);
  const itscale::counter_rng rng(99, 1);
  for (std::size_t i = 0; i < V; ++i) {
    double s = 0;
    for (std::uint32_t j = 0; j < 4; ++j) s += rng.uniform(static_cast<std::uint32_t>(i), j);
    row[i] = static_cast<float>((s - 2.0) * 5.2);
  }
  itscale::kernels::simd::softmax<arch>(row, p);
  double m = -INFINITY, sum = 0;
  for (float x : row) m = std::fmax(m, static_cast<double>(x));
  for (float x : row) sum += std::exp(static_cast<double>(x) - m);
  double near = 0, all = 0;
  for (std::size_t i = 0; i < V; ++i) {
    const double want = std::exp(static_cast<double>(row[i]) - m) / sum;
    if (want < 1e-30) continue;
    const double rel = std::fabs(static_cast<double>(p[i]) - want) / want;
    all = std::fmax(all, rel);
    if (m - static_cast<double>(row[i]) <= 20) near = std::fmax(near, rel);
  }
  std::printf("%s: softmax max relative error vs float64 at V = %zu: %.3g (entries within 20 of the max), "
              "%.3g (every p >= 1e-30)\n", arch::name(), V, near, all);
  return worst <= 2 && wrong == 0 && near < 3e-6 ? 0 : 1;
}
