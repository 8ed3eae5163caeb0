#pragma once
/// \file dispatch.hpp
/// How the public `itscale::kernels::X` functions reach an arch-specific SIMD kernel.
///
/// Static dispatch (default): each public kernel calls `simd::X<xsimd::default_arch>`, so the
/// consumer's `-march` decides (a baseline x86-64 build runs the SSE2 kernels). The kernels, like
/// every itscale entity with code, live in an inline namespace named after that arch
/// (`ITSCALE_ABI_TAG`, core/abi.hpp), so two translation units built with different `-march`
/// flags get different symbols — for the kernels and for every inline caller of them — instead
/// of an ODR violation where the linker keeps one arbitrary copy.
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
/// `ITSCALE_RUNTIME_DISPATCH` on the target. The tag is then `abi_runtime_<arch of the unit's
/// flags>`: the per-arch units' code is tagged with their own arch (and every kernel, helper and
/// comparator they instantiate is also a template on it), so no inline function compiled with
/// AVX flags can be picked by the linker for a baseline caller. What they share with the rest of
/// the program is untagged and data only: the `kernel_abi::kernel_table` type, one table object
/// per arch and `kernel_abi::active_kernels()`. `kernels::active_arch()` names the arch in use.

#include <cstddef>
#include <cstdint>
#include <span>

#include <xsimd/xsimd.hpp>

#include "itscale/core/abi.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/kernel_types.hpp"
#include "itscale/kernels/simd/filters.hpp"
#include "itscale/kernels/simd/reduce.hpp"
#include "itscale/kernels/simd/sample.hpp"
#include "itscale/kernels/simd/select.hpp"
#include "itscale/kernels/simd/softmax.hpp"

// Untagged (core/abi.hpp): units built for different arches exchange these.
ITSCALE_BEGIN_UNTAGGED_NAMESPACE
namespace kernel_abi {

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

#if defined(ITSCALE_RUNTIME_DISPATCH)
/// The table chosen for this process (defined by the dispatch translation unit that
/// `itscale_enable_runtime_dispatch` adds).
[[nodiscard]] const kernel_table& active_kernels() noexcept;
#endif

}  // namespace kernel_abi
ITSCALE_END_UNTAGGED_NAMESPACE

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace detail {

/// The table of arch `Arch`. Instantiate only in a translation unit compiled for `Arch`.
template <class Arch>
[[nodiscard]] constexpr kernel_abi::kernel_table make_kernel_table() noexcept {
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
#define ITSCALE_KERNEL(name) ::itscale::v0::kernel_abi::active_kernels().name
#else
#define ITSCALE_KERNEL(name) ::itscale::kernels::simd::name<::xsimd::default_arch>
#endif

}  // namespace detail

/// The name of the xsimd arch the public kernels run (e.g. "avx512bw", "fma3+avx2", "sse2").
[[nodiscard]] inline const char* active_arch() noexcept {
#if defined(ITSCALE_RUNTIME_DISPATCH)
  return kernel_abi::active_kernels().arch;
#else
  return ::xsimd::default_arch::name();
#endif
}

}  // namespace kernels
ITSCALE_END_NAMESPACE
