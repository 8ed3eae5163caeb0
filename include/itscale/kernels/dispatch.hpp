#pragma once
/// \file dispatch.hpp
/// How the public `itscale::kernels::X` functions reach an arch-specific SIMD kernel.
///
/// Static dispatch (default): each public kernel calls `simd::X<xsimd::default_arch>`, so the
/// consumer's `-march` decides (a baseline x86-64 build runs the SSE2 kernels). The public
/// functions live in an inline namespace named after that arch (`ITSCALE_KERNEL_ABI`), so two
/// translation units built with different `-march` flags get different symbols instead of an
/// ODR violation where the linker keeps one arbitrary copy.
///
/// Runtime dispatch (opt-in): define `ITSCALE_RUNTIME_DISPATCH` for every translation unit of
/// the program and compile one translation unit per arch with its own flags, each instantiating
/// the arch-templated kernels into a `kernel_table`; the first kernel call picks the best table
/// the CPU supports (`xsimd::available_architectures()`), or the one named by the environment
/// variable `ITSCALE_ARCH` = `sse2` | `avx2` | `avx512` (the process aborts with a message if the
/// CPU lacks it). CMake does all of this:
///
///     find_package(itscale CONFIG REQUIRED)            # or add_subdirectory(itscale)
///     add_executable(app main.cpp)
///     target_link_libraries(app PRIVATE itscale::itscale)
///     itscale_enable_runtime_dispatch(app)             # cmake/itscale_dispatch.cmake
///
/// which adds the per-arch sources (sse2; avx2 + fma; avx512f + bw + dq + vl) and defines
/// `ITSCALE_RUNTIME_DISPATCH` on the target. The per-arch translation units include only
/// arch-templated code (every helper, comparator and kernel is a template on the arch), so no
/// inline function compiled with AVX flags can be picked by the linker for a baseline caller.
/// `kernels::active_arch()` names the arch in use.

#include <cstddef>
#include <cstdint>
#include <span>

#include <xsimd/xsimd.hpp>

#include "itscale/core/types.hpp"
#include "itscale/kernels/kernel_types.hpp"
#include "itscale/kernels/simd/filters.hpp"
#include "itscale/kernels/simd/reduce.hpp"
#include "itscale/kernels/simd/sample.hpp"
#include "itscale/kernels/simd/select.hpp"
#include "itscale/kernels/simd/softmax.hpp"

#if defined(ITSCALE_RUNTIME_DISPATCH)
#define ITSCALE_KERNEL_ABI abi_runtime
#elif XSIMD_WITH_AVX512BW
#define ITSCALE_KERNEL_ABI abi_avx512bw
#elif XSIMD_WITH_AVX512F
#define ITSCALE_KERNEL_ABI abi_avx512f
#elif XSIMD_WITH_FMA3_AVX2
#define ITSCALE_KERNEL_ABI abi_fma3_avx2
#elif XSIMD_WITH_AVX2
#define ITSCALE_KERNEL_ABI abi_avx2
#elif XSIMD_WITH_FMA3_AVX
#define ITSCALE_KERNEL_ABI abi_fma3_avx
#elif XSIMD_WITH_AVX
#define ITSCALE_KERNEL_ABI abi_avx
#elif XSIMD_WITH_FMA3_SSE
#define ITSCALE_KERNEL_ABI abi_fma3_sse42
#elif XSIMD_WITH_SSE4_2
#define ITSCALE_KERNEL_ABI abi_sse42
#elif XSIMD_WITH_SSE4_1
#define ITSCALE_KERNEL_ABI abi_sse41
#elif XSIMD_WITH_SSSE3
#define ITSCALE_KERNEL_ABI abi_ssse3
#elif XSIMD_WITH_SSE3
#define ITSCALE_KERNEL_ABI abi_sse3
#elif XSIMD_WITH_SSE2
#define ITSCALE_KERNEL_ABI abi_sse2
#elif XSIMD_WITH_NEON64
#define ITSCALE_KERNEL_ABI abi_neon64
#elif XSIMD_WITH_NEON
#define ITSCALE_KERNEL_ABI abi_neon
#else
#define ITSCALE_KERNEL_ABI abi_other
#endif

namespace itscale {
inline namespace v0 {
namespace kernels {
namespace detail {

/// One arch's instantiation of every dispatched kernel.
struct kernel_table {
  const char* arch;
  float (*max)(std::span<const float>) noexcept;
  std::size_t (*argmax)(std::span<const float>) noexcept;
  float (*logsumexp)(std::span<const float>) noexcept;
  void (*logsumexp_rows)(std::span<const float>, std::size_t, std::span<float>) noexcept;
  std::size_t (*find_invalid)(std::span<const float>) noexcept;
  std::size_t (*count_unmasked)(std::span<const float>) noexcept;
  void (*softmax)(std::span<const float>, std::span<float>) noexcept;
  void (*log_softmax)(std::span<const float>, std::span<float>) noexcept;
  void (*top_k)(std::span<const float>, std::span<token_id>, std::span<float>, std::span<std::uint64_t>) noexcept;
  float (*kth_largest)(std::span<const float>, std::size_t) noexcept;
  std::size_t (*top_k_rows)(std::span<const std::span<const float>>, std::span<const float>, std::span<const float>,
                            std::span<row_candidate>) noexcept;
  std::size_t (*beam_select)(std::span<const std::span<const float>>, std::span<const float>,
                             std::span<row_candidate>) noexcept;
  std::size_t (*sample_inverse_cdf)(std::span<const float>, double) noexcept;
  std::size_t (*mask_below)(std::span<float>, float) noexcept;
  std::size_t (*mask_below_collect)(std::span<float>, float, std::span<token_id>) noexcept;
  std::size_t (*collect_unmasked)(std::span<const float>, std::span<token_id>) noexcept;
  float (*min_p_threshold)(std::span<const float>, float) noexcept;
  std::size_t (*top_p_mask)(std::span<float>, double, std::span<std::uint64_t>) noexcept;
};

/// The table of arch `Arch`. Instantiate only in a translation unit compiled for `Arch`.
template <class Arch>
[[nodiscard]] constexpr kernel_table make_kernel_table() noexcept {
  return {Arch::name(),
          &simd::max<Arch>,
          &simd::argmax<Arch>,
          &simd::logsumexp<Arch>,
          &simd::logsumexp_rows<Arch>,
          &simd::find_invalid<Arch>,
          &simd::count_unmasked<Arch>,
          &simd::softmax<Arch>,
          &simd::log_softmax<Arch>,
          &simd::top_k<Arch>,
          &simd::kth_largest<Arch>,
          &simd::top_k_rows<Arch>,
          &simd::beam_select<Arch>,
          &simd::sample_inverse_cdf<Arch>,
          &simd::mask_below<Arch>,
          &simd::mask_below_collect<Arch>,
          &simd::collect_unmasked<Arch>,
          &simd::min_p_threshold<Arch>,
          &simd::top_p_mask<Arch>};
}

#if defined(ITSCALE_RUNTIME_DISPATCH)
/// The table chosen for this process (defined by the dispatch translation unit that
/// `itscale_enable_runtime_dispatch` adds).
[[nodiscard]] const kernel_table& active_kernels() noexcept;
#define ITSCALE_KERNEL(name) ::itscale::kernels::detail::active_kernels().name
#else
#define ITSCALE_KERNEL(name) ::itscale::kernels::simd::name<::xsimd::default_arch>
#endif

}  // namespace detail

inline namespace ITSCALE_KERNEL_ABI {
/// The name of the xsimd arch the public kernels run (e.g. "avx512bw", "fma3+avx2", "sse2").
[[nodiscard]] inline const char* active_arch() noexcept {
#if defined(ITSCALE_RUNTIME_DISPATCH)
  return detail::active_kernels().arch;
#else
  return ::xsimd::default_arch::name();
#endif
}
}  // namespace ITSCALE_KERNEL_ABI

}  // namespace kernels
}  // namespace v0
}  // namespace itscale
