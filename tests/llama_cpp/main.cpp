// The doctest runner of the llama.cpp backend's tests: llama.cpp's log is silenced (it reports
// every context it creates, and the concept suite creates hundreds) except for errors, and its
// CPU backends are loaded from where the build fetched them before any case runs.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include <itscale/backends/llama_cpp_source.hpp>

int main(int argc, char** argv) {
  llama_log_set(
      [](ggml_log_level level, const char* text, void*) {
        if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
      },
      nullptr);
  itscale::llama_cpp_init(ITSCALE_LLAMA_CPP_BACKEND_DIR);
  doctest::Context ctx(argc, argv);
  const int rc = ctx.run();
  llama_backend_free();
  return rc;
}
