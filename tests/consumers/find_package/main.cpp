// Smallest real use: the umbrella header compiles and links in a foreign project, and a
// runtime-dispatched kernel runs (this consumer is built with itscale_enable_runtime_dispatch).
#include <itscale/search.hpp>

#include <cstdio>

int main() {
  const float row[5] = {0.5f, 2.0f, -1.0f, 2.0f, 0.0f};
  if (itscale::kernels::argmax(row) != 1) return 1;
  std::printf("itscale %s\n", itscale::version_string);
  return 0;
}
