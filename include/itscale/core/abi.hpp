#pragma once
/// \file abi.hpp
/// The namespaces every itscale header opens, and why most of them carry the target arch.
///
/// A header-only library's inline functions and templates are compiled into every translation
/// unit (TU) that uses them, with that TU's flags, and the linker keeps ONE copy of each symbol.
/// When one program links TUs built with different `-march` flags (a baseline build plus an
/// AVX-512 file, a plugin, a hand-dispatched hot loop), a baseline caller can end up running the
/// copy compiled for AVX-512 — wrong arch, or SIGILL on a CPU without it. So every itscale entity
/// with code that can reach a SIMD kernel or is compiled for the target (kernels, processors,
/// decoders, searches, backends on Eigen, the RNG, their helpers) lives in an inline namespace
/// named after the TU's arch:
///
///     ITSCALE_BEGIN_NAMESPACE   // namespace itscale { inline namespace v0 { inline namespace ITSCALE_ABI_TAG {
///     ...
///     ITSCALE_END_NAMESPACE
///
/// `ITSCALE_ABI_TAG` is `abi_<arch>` for the arch xsimd's `default_arch` sees from the flags
/// (`abi_sse2`, `abi_fma3_avx2`, `abi_avx512bw`, ...; `-march=x86-64-v3` and `-mavx2 -mfma` give
/// the same tag; flags xsimd does not see, such as `-mtune` or `-mbmi2`, do not separate), and
/// `abi_runtime_<arch>` under `ITSCALE_RUNTIME_DISPATCH`, where the kernel table chosen at run
/// time decides the kernels and the tag still keeps differently compiled callers apart (and the
/// per-arch kernel units of `itscale_enable_runtime_dispatch` apart from the rest of the program).
/// User code names them as before (`itscale::sampling_chain`, `itscale::kernels::top_k`).
///
/// Consequence: tagged types are distinct types in TUs built for different arches
/// (`itscale::sampling_options` is `itscale::v0::abi_fma3_avx2::sampling_options` under
/// `-mavx2 -mfma`). A function of yours that takes one, defined in a baseline TU and called from
/// an AVX2 TU, fails to link ("undefined reference to ...abi_fma3_avx2...") instead of silently
/// running code built for another arch: build both TUs with the same flags, or pass the untagged
/// vocabulary below across that boundary. (Return types are not part of a function's symbol, so
/// returning a tagged type across such a boundary links; it is still two types — do not rely on it.)
///
/// Untagged, the same in every TU (`ITSCALE_BEGIN_UNTAGGED_NAMESPACE`): the vocabulary that code
/// compiled separately must agree on, none of it able to reach a kernel — `token_id`,
/// `masked_logit`, `logits_view`, the `LogitSource` concept and `handle_t` (a backend built in its
/// own TU plugs into searches built with any flags), the exception types (a `catch` in one TU sees
/// what another throws), `version_string`, and `kernel_abi` (`row_candidate` and the runtime
/// dispatch tables, shared by the per-arch kernel units). Untagged code uses only untagged
/// entities (so it can never reach a kernel), and its sub-namespaces must not share a name with a
/// tagged one (`itscale::detail` or `itscale::kernels` in both would be ambiguous), hence
/// `kernel_abi`. The test `odr_namespace_lint` holds every header to these rules.
///
/// Not covered: third-party templates instantiated only with non-itscale types (Eigen's matrix
/// products inside the llama2.c backend, `std::sort` over floats) are outside our namespaces;
/// Eigen documents the same hazard for itself. Anything instantiated with an itscale type or
/// from inside a tagged function (a comparator, a lambda) is distinct per tag.

#include <xsimd/config/xsimd_config.hpp>

// The arch part of the tag: xsimd's arch list, best first (as `xsimd::default_arch` picks).
#if XSIMD_WITH_AVX512BW
#define ITSCALE_DETAIL_ABI_ARCH avx512bw
#elif XSIMD_WITH_AVX512DQ
#define ITSCALE_DETAIL_ABI_ARCH avx512dq
#elif XSIMD_WITH_AVX512CD
#define ITSCALE_DETAIL_ABI_ARCH avx512cd
#elif XSIMD_WITH_AVX512F
#define ITSCALE_DETAIL_ABI_ARCH avx512f
#elif XSIMD_WITH_FMA3_AVX2
#define ITSCALE_DETAIL_ABI_ARCH fma3_avx2
#elif XSIMD_WITH_AVX2
#define ITSCALE_DETAIL_ABI_ARCH avx2
#elif XSIMD_WITH_FMA3_AVX
#define ITSCALE_DETAIL_ABI_ARCH fma3_avx
#elif XSIMD_WITH_AVX
#define ITSCALE_DETAIL_ABI_ARCH avx
#elif XSIMD_WITH_FMA4
#define ITSCALE_DETAIL_ABI_ARCH fma4
#elif XSIMD_WITH_FMA3_SSE
#define ITSCALE_DETAIL_ABI_ARCH fma3_sse42
#elif XSIMD_WITH_SSE4_2
#define ITSCALE_DETAIL_ABI_ARCH sse42
#elif XSIMD_WITH_SSE4_1
#define ITSCALE_DETAIL_ABI_ARCH sse41
#elif XSIMD_WITH_SSSE3
#define ITSCALE_DETAIL_ABI_ARCH ssse3
#elif XSIMD_WITH_SSE3
#define ITSCALE_DETAIL_ABI_ARCH sse3
#elif XSIMD_WITH_SSE2
#define ITSCALE_DETAIL_ABI_ARCH sse2
#elif XSIMD_WITH_NEON64
#define ITSCALE_DETAIL_ABI_ARCH neon64
#elif XSIMD_WITH_NEON
#define ITSCALE_DETAIL_ABI_ARCH neon
#else
#define ITSCALE_DETAIL_ABI_ARCH other
#endif

#define ITSCALE_DETAIL_CAT_(a, b) a##b
#define ITSCALE_DETAIL_CAT(a, b) ITSCALE_DETAIL_CAT_(a, b)

/// The inline namespace of this TU's tagged itscale entities (see above).
#if defined(ITSCALE_RUNTIME_DISPATCH)
#define ITSCALE_ABI_TAG ITSCALE_DETAIL_CAT(abi_runtime_, ITSCALE_DETAIL_ABI_ARCH)
#else
#define ITSCALE_ABI_TAG ITSCALE_DETAIL_CAT(abi_, ITSCALE_DETAIL_ABI_ARCH)
#endif

/// The kernels' older name for the tag (they were the only tagged entities before).
#define ITSCALE_KERNEL_ABI ITSCALE_ABI_TAG

/// Opens / closes `itscale::v0::ITSCALE_ABI_TAG`, the home of everything with code.
#define ITSCALE_BEGIN_NAMESPACE \
  namespace itscale {           \
  inline namespace v0 {         \
  inline namespace ITSCALE_ABI_TAG {
#define ITSCALE_END_NAMESPACE \
  }                           \
  }                           \
  }

/// Opens / closes `itscale::v0` without the tag: only for the vocabulary listed above.
#define ITSCALE_BEGIN_UNTAGGED_NAMESPACE \
  namespace itscale {                    \
  inline namespace v0 {
#define ITSCALE_END_UNTAGGED_NAMESPACE \
  }                                    \
  }
