// itscale_fuzz_checkpoint: the llama2.c checkpoint loader (backends/llama2c_checkpoint.hpp) on
// arbitrary bytes. It must throw format_error (invalid_option for bad limits) and never crash,
// read out of bounds or allocate beyond what the bytes can hold (libFuzzer's -malloc_limit_mb /
// -rss_limit_mb turn an absurd allocation into a finding). A checkpoint that loads must have the
// shapes its header promises; a tiny one is then run for one step by the model.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "fuzz_support.hpp"
#include "itscale/backends/llama2c_checkpoint.hpp"
#include "itscale/backends/llama2c_model.hpp"
#include "itscale/core/errors.hpp"

using fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    auto w = itscale::parse_llama2c_checkpoint(bytes, "fuzz");
    const auto& c = w.config;
    check(static_cast<std::size_t>(w.token_embedding.rows()) == c.vocab_size &&
              static_cast<std::size_t>(w.token_embedding.cols()) == c.dim,
          "token embedding is [vocab][dim]");
    check(w.layers.size() == c.n_layers, "one weight set per layer");
    check(static_cast<std::size_t>(w.classifier().rows()) == c.vocab_size, "classifier has vocab rows");
    // Tiny models only: one prefill must give a row per the LogitSource contract or a
    // backend_error (finite weights can still overflow to inf in the activations).
    if (c.dim * c.hidden_dim * c.n_layers > 4096 || c.vocab_size > 256) return 0;
    itscale::llama2c_model model(std::make_shared<const itscale::llama2c_weights>(std::move(w)));
    const std::vector<itscale::token_id> prompt{0};
    try {
      const auto h = model.prefill(prompt);
      const auto view = model.logits();
      check(view.rows == 1 && view.vocab == c.vocab_size, "prefill gives one row of vocab logits");
      model.release(h);
    } catch (const itscale::backend_error&) {
    }
  } catch (const itscale::format_error&) {
  } catch (const itscale::invalid_option&) {
  }
  return 0;
}
