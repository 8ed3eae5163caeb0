// Built with -march=native; see odr_probe.hpp.
#include "odr_probe.ipp"

odr_test::report odr_test::run_native() { return probe(); }
