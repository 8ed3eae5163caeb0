// Links odr_baseline.cpp (x86-64 baseline) and odr_native.cpp (-march=native) into one program
// and checks that each unit's sampling chain ran the kernels of the arch that unit was compiled
// for (static dispatch), or the one table chosen at run time (ITSCALE_RUNTIME_DISPATCH).
// Exit 0 = pass, 1 = fail.
#include <cstdio>
#include <cstring>
#include <string>

#include <itscale/kernels/dispatch.hpp>

#include "odr_probe.hpp"

namespace {

bool check_unit(const char* name, const odr_test::report& r, const std::string& expected) {
  const bool ok = r.ran == expected;
  std::printf("  %-8s unit: compiled for %-10s ran the %-10s kernels  %s\n", name, r.compiled_for.c_str(),
              r.ran.c_str(), ok ? "ok" : ("FAIL: expected " + expected).c_str());
  return ok;
}

}  // namespace

int main() {
  const odr_test::report base = odr_test::run_baseline();
  const odr_test::report native = odr_test::run_native();
  bool ok = true;
#if defined(ITSCALE_RUNTIME_DISPATCH)
  // One table for the whole process, whatever each unit was compiled for.
  const std::string table = itscale::kernels::active_arch();
  std::printf("itscale ODR test, runtime dispatch (table %s)\n", table.c_str());
  ok &= check_unit("baseline", base, table);
  ok &= check_unit("native", native, table);
#else
  std::printf("itscale ODR test, static dispatch\n");
#if defined(__x86_64__) || defined(_M_X64)
  if (base.compiled_for != "sse2") {
    std::printf("  FAIL: the baseline unit was compiled for %s, not sse2 (check the test's flags)\n",
                base.compiled_for.c_str());
    ok = false;
  }
#endif
  if (native.compiled_for == base.compiled_for)
    std::printf("  note: -march=native is the baseline here (%s): nothing to separate, checking consistency only\n",
                base.compiled_for.c_str());
  ok &= check_unit("baseline", base, base.compiled_for);
  ok &= check_unit("native", native, native.compiled_for);
#endif
  if (base.kept != native.kept || base.kept.empty()) {
    std::printf("  FAIL: the units' chains kept different tokens (%zu vs %zu)\n", base.kept.size(), native.kept.size());
    ok = false;
  } else {
    std::printf("  both units kept the same %zu tokens\n", base.kept.size());
  }
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
