// Built without -march (x86-64 baseline: SSE2); see odr_probe.hpp.
#include "odr_probe.ipp"

odr_test::report odr_test::run_baseline() { return probe(); }
