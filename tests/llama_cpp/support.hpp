#pragma once
// Shared by the llama.cpp backend's tests: the checkpoints (the same weights as GGUF for llama.cpp
// and as llama2.c files for the Eigen backend), loaded once per process.

#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <itscale/backends/llama2c_model.hpp>
#include <itscale/backends/llama2c_tokenizer.hpp>
#include <itscale/backends/llama_cpp_source.hpp>

namespace llama_cpp_test {

namespace fs = std::filesystem;
using itscale::token_id;

inline const fs::path models_dir = fs::path(ITSCALE_DATA_DIR) / "models";

/// A model file of the repository's data; a missing one fails the case.
inline fs::path model_file(const char* name) {
  const fs::path p = models_dir / name;
  REQUIRE_MESSAGE(fs::exists(p), p.string() << " not found");
  return p;
}

/// The GGUF `name`, loaded once and shared by every source of the process.
inline itscale::llama_cpp_model_ptr gguf(const char* name) {
  static std::vector<std::pair<std::string, itscale::llama_cpp_model_ptr>> loaded;
  for (const auto& [n, m] : loaded)
    if (n == name) return m;
  loaded.emplace_back(name, itscale::load_llama_cpp_model(model_file(name)));
  return loaded.back().second;
}

inline itscale::llama_cpp_source aidreams(const itscale::llama_cpp_source_options& o = {}) {
  return itscale::llama_cpp_source(gguf("aidreams260K.gguf"), o);
}

inline itscale::llama2c_model aidreams_eigen() { return itscale::llama2c_model::load(model_file("aidreams260K.bin")); }

inline const itscale::llama2c_tokenizer& aidreams_tokenizer() {
  static const auto tok = itscale::llama2c_tokenizer::load(model_file("aidreams-tok512.bin"));
  return tok;
}

/// `text` as the Eigen backend's tokenizer encodes it, with BOS (the token ids both models share).
inline std::vector<token_id> prompt_of(const std::string& text) { return aidreams_tokenizer().encode(text, true); }

/// True when every sequence id of `s` is back in its pool and the KV cache holds no cell of any
/// of them (llama.cpp's own view: position range -1 = empty).
inline bool all_released(const itscale::llama_cpp_source& s) {
  if (s.live_handles() != 0) return false;
  llama_memory_t mem = llama_get_memory(s.context());
  for (std::size_t id = 0; id < s.capacity().max_live_sequences; ++id)
    if (llama_memory_seq_pos_max(mem, static_cast<llama_seq_id>(id)) != -1) return false;
  return true;
}

}  // namespace llama_cpp_test
