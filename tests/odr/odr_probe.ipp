// Included by odr_baseline.cpp and odr_native.cpp: the same code in both units. It lives in an
// unnamed namespace so the probe itself is per unit; only the library's entities are shared.
#include <algorithm>
#include <cmath>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <itscale/processors/sampling_chain.hpp>

#include "odr_probe.hpp"

namespace {

odr_test::report probe() {
  itscale::sampling_options opts;
  opts.do_sample = true;
  opts.temperature = 0.7f;
  opts.top_k = 5;     // top_k_filter::apply_after: kth_largest + mask_below_collect
  opts.top_p = 0.95;  // top_p_filter over the survivors
  const itscale::sampling_chain chain(opts);

  std::vector<float> row(300);
  for (std::size_t i = 0; i < row.size(); ++i) row[i] = std::sin(0.37f * static_cast<float>(i)) * 4.0f;
  itscale::workspace ws;
  ws.reserve(row.size());
  const itscale::step_context ctx{{}, 0, &ws};
  const itscale::live_set live = chain.apply_warpers(row, ctx);

  odr_test::report r;
  r.compiled_for = xsimd::default_arch::name();
  r.ran = chain.kernel_arch();
  r.kept.assign(live.ids.begin(), live.ids.end());
  std::sort(r.kept.begin(), r.kept.end());
  return r;
}

}  // namespace
