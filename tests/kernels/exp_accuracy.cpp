// Accuracy of the kernels' float exp and softmax for the arch this file is compiled for (CMake
// builds it once per arch with that arch's flags; it instantiates the arch-templated kernels with
// xsimd::default_arch). Prints the largest error of xsimd::exp in ULP against the correctly rounded
// float exp (double exp rounded once to float) and softmax's largest relative error against a
// float64 softmax; exits 1 past the documented bounds (2 ULP, 3e-6), 77 when the CPU cannot run this arch.
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
#include "itscale/kernels/simd/softmax.hpp"

namespace {

using arch = xsimd::default_arch;
using batch = xsimd::batch<float, arch>;

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
  std::int64_t worst = 0;
  float worst_x = 0;
  std::uint64_t count = 0;
  for (std::uint64_t b = lo; b <= hi;) {
    std::size_t n = 0;
    for (; n < L && b <= hi; ++n, b += stride) in[n] = std::bit_cast<float>(static_cast<std::uint32_t>(b));
    for (std::size_t l = n; l < L; ++l) in[l] = 0.0f;
    xsimd::exp(batch::load_aligned(in)).store_aligned(out);
    for (std::size_t l = 0; l < n; ++l) {
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
  return worst <= 2 && near < 3e-6 ? 0 : 1;
}
