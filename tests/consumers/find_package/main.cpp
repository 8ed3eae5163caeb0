// Smallest real use: the umbrella header compiles and links in a foreign project.
#include <itscale/search.hpp>

#include <cstdio>

int main() {
  std::printf("itscale %s\n", itscale::version_string);
  return 0;
}
