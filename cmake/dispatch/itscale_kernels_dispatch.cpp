// Added by itscale_enable_runtime_dispatch(): picks the kernel table for this process on the
// first kernel call. Compiled with the target's own (baseline) flags.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <itscale/kernels/dispatch.hpp>

namespace itscale {
inline namespace v0 {
namespace kernel_abi {  // untagged (core/abi.hpp): shared with the per-arch units

extern const kernel_table kernel_table_sse2;
extern const kernel_table kernel_table_avx2;
extern const kernel_table kernel_table_avx512;

namespace {

struct arch_choice {
  const char* name;
  const kernel_table* table;
  bool available;
};

[[noreturn]] void dispatch_fail(const char* what, const char* value) noexcept {
  std::fprintf(stderr, "itscale: ITSCALE_ARCH=%s: %s\n", value, what);
  std::abort();
}

const kernel_table* choose_kernels() noexcept {
  const auto cpu = xsimd::available_architectures();
  // The avx2 / avx512 units are built for x86-64-v3 / -v4 (see itscale_dispatch.cmake), which add
  // BMI1/2 and POPCNT (checked here), LZCNT, MOVBE and F16C (every CPU with AVX2 and BMI2 has them;
  // not every compiler can query them). xsimd 8.1 does not report AVX-512 VL; ask the compiler.
  __builtin_cpu_init();  // the first kernel call may come from a static constructor
  const bool v3 = cpu.avx2 && cpu.fma3_avx2 && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                  __builtin_cpu_supports("popcnt");
  const bool v4 = v3 && cpu.avx512f && cpu.avx512bw && cpu.avx512dq && cpu.avx512cd && __builtin_cpu_supports("avx512vl");
  const arch_choice choices[] = {
      {"avx512", &kernel_table_avx512, v4},
      {"avx2", &kernel_table_avx2, v3},
      {"sse2", &kernel_table_sse2, cpu.sse2 != 0},
  };
  if (const char* forced = std::getenv("ITSCALE_ARCH"); forced != nullptr && *forced != '\0') {
    for (const arch_choice& c : choices)
      if (std::strcmp(forced, c.name) == 0) {
        if (!c.available) dispatch_fail("this CPU does not support that instruction set", forced);
        return c.table;
      }
    dispatch_fail("unknown arch (expected sse2, avx2 or avx512)", forced);
  }
  for (const arch_choice& c : choices)
    if (c.available) return c.table;
  return &kernel_table_sse2;  // x86-64 always has SSE2
}

}  // namespace

const kernel_table& active_kernels() noexcept {
  static const kernel_table* const table = choose_kernels();
  return *table;
}

}  // namespace kernel_abi
}  // namespace v0
}  // namespace itscale
