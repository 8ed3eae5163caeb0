#pragma once
// The mixed -march ODR test (tests/CMakeLists.txt, `odr_*`): one program links a translation unit
// built for baseline x86-64 and one built with -march=native. Each runs the sampling chain (an
// inline caller of the top-k / top-p / mask kernels) on the same row and reports which kernel
// arch its code path ran. Without arch-tagged namespaces the linker keeps ONE copy of the
// chain's inline functions for both units, so one of them runs the other's kernels.

#include <string>
#include <vector>

#include <itscale/core/types.hpp>

namespace odr_test {

struct report {
  std::string compiled_for;                ///< this unit's xsimd::default_arch (its -march)
  std::string ran;                         ///< the arch the chain's code path ran (kernel_arch())
  std::vector<itscale::token_id> kept;     ///< the tokens the warpers left, in id order
};

report run_baseline();  // odr_baseline.cpp: no -march (x86-64 baseline, SSE2)
report run_native();    // odr_native.cpp: -march=native

}  // namespace odr_test
