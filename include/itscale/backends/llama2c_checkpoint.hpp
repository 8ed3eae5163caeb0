#pragma once
/// \file llama2c_checkpoint.hpp
/// Loads llama2.c "version 0" checkpoints: a header of seven int32 (dim, hidden_dim, n_layers,
/// n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means a separate classifier),
/// then float32 tensors, row-major [out][in]: token embedding [vocab][dim], rms_att [L][dim],
/// wq [L][dim][dim], wk [L][kv_dim][dim], wv [L][kv_dim][dim], wo [L][dim][dim], rms_ffn [L][dim],
/// w1 [L][hidden][dim], w2 [L][dim][hidden], w3 [L][hidden][dim], rms_final [dim],
/// freq_cis_real [seq_len][head_size/2], freq_cis_imag [seq_len][head_size/2], and wcls
/// [vocab][dim] when not shared.
///
/// Everything is validated before anything large is allocated: header values must be positive,
/// consistent (dim % n_heads == 0, n_heads % n_kv_heads == 0, even head size) and under
/// `llama2c_limits`, and the data size must equal what the header implies, exactly. So a corrupt
/// header cannot make the loader allocate more than the file holds, and no read goes past its
/// end. Every weight must be finite. Failures throw `format_error` naming the file and the problem.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/backends/support/binary_reader.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Row-major float matrix: the layout of llama2.c tensors, so they load with one read.
using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Caps on header values. The exact-size check already bounds allocation by the file size; the
/// caps keep size arithmetic far from overflow and reject absurd values with a clear message.
/// The defaults admit every published llama-family shape (dim 8192, hidden 28672, vocab 128256).
struct llama2c_limits {
  std::size_t max_dim = std::size_t{1} << 16;
  std::size_t max_hidden_dim = std::size_t{1} << 18;
  std::size_t max_layers = 1024;
  std::size_t max_heads = 1024;
  std::size_t max_vocab = std::size_t{1} << 22;
  std::size_t max_seq_len = std::size_t{1} << 20;

  /// Throws `invalid_option` if a cap is 0 or above its ceiling (sizes must not overflow 64 bits).
  void validate() const {
    const auto check = [](std::size_t v, std::size_t hi, const char* name) {
      if (v == 0 || v > hi)
        throw invalid_option(std::string("itscale: llama2c_limits.") + name + " = " + std::to_string(v) +
                             " must be in [1, " + std::to_string(hi) + "]");
    };
    // Ceilings chosen so that the implied size (< 2^57 bytes) cannot overflow 64 bits.
    check(max_dim, std::size_t{1} << 20, "max_dim");
    check(max_hidden_dim, std::size_t{1} << 20, "max_hidden_dim");
    check(max_layers, std::size_t{1} << 12, "max_layers");
    check(max_heads, std::size_t{1} << 16, "max_heads");
    check(max_vocab, std::size_t{1} << 28, "max_vocab");
    check(max_seq_len, std::size_t{1} << 28, "max_seq_len");
  }
};

/// The validated header of a checkpoint.
struct llama2c_config {
  std::size_t dim = 0;
  std::size_t hidden_dim = 0;
  std::size_t n_layers = 0;
  std::size_t n_heads = 0;
  std::size_t n_kv_heads = 0;
  std::size_t vocab_size = 0;
  std::size_t seq_len = 0;
  bool shared_classifier = true;  ///< false when the header's vocab_size was negative

  [[nodiscard]] std::size_t head_size() const noexcept { return dim / n_heads; }
  [[nodiscard]] std::size_t kv_dim() const noexcept { return dim / n_heads * n_kv_heads; }
  /// Query heads per key/value head: query head h reads kv head h / kv_group().
  [[nodiscard]] std::size_t kv_group() const noexcept { return n_heads / n_kv_heads; }
};

/// The weights of one transformer layer.
struct llama2c_layer {
  Eigen::VectorXf rms_att;  // [dim]
  row_matrix wq;            // [dim][dim]
  row_matrix wk;            // [kv_dim][dim]
  row_matrix wv;            // [kv_dim][dim]
  row_matrix wo;            // [dim][dim]
  Eigen::VectorXf rms_ffn;  // [dim]
  row_matrix w1;            // [hidden][dim]
  row_matrix w2;            // [dim][hidden]
  row_matrix w3;            // [hidden][dim]
};

/// A loaded checkpoint.
struct llama2c_weights {
  llama2c_config config;
  row_matrix token_embedding;  // [vocab][dim]
  std::vector<llama2c_layer> layers;
  Eigen::VectorXf rms_final;  // [dim]
  row_matrix freq_cis_real;   // [seq_len][head_size/2] (the checkpoint's RoPE tables, kept for checks)
  row_matrix freq_cis_imag;   // [seq_len][head_size/2]
  row_matrix wcls;            // [vocab][dim]; empty when the classifier is the embedding

  /// The output projection: `wcls`, or the token embedding when shared.
  [[nodiscard]] const row_matrix& classifier() const noexcept {
    return config.shared_classifier ? token_embedding : wcls;
  }
};

namespace detail {

/// Reads and validates the header; leaves the reader at the first tensor.
inline llama2c_config read_llama2c_header(binary_reader& in, const llama2c_limits& lim) {
  constexpr const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  if (in.size() < 28)
    in.fail("truncated: the header needs 28 bytes (seven int32), the data is " + std::to_string(in.size()) +
            " bytes");
  std::int32_t h[7];
  for (int i = 0; i < 7; ++i) h[i] = in.read_i32(std::string("header field ") + names[i]);
  const std::size_t caps[7] = {lim.max_dim,   lim.max_hidden_dim, lim.max_layers, lim.max_heads,
                               lim.max_heads, lim.max_vocab,      lim.max_seq_len};
  std::size_t v[7];
  for (int i = 0; i < 7; ++i) {
    // vocab_size may be negative (separate classifier); INT32_MIN has no positive counterpart.
    const std::int64_t x = i == 5 ? std::abs(std::int64_t{h[i]}) : std::int64_t{h[i]};
    if (x <= 0)
      in.fail(std::string("bad header: ") + names[i] + " = " + std::to_string(h[i]) + " must be " +
              (i == 5 ? "non-zero" : "positive"));
    if (static_cast<std::uint64_t>(x) > caps[i])
      in.fail(std::string("bad header: ") + names[i] + " = " + std::to_string(h[i]) + " exceeds the limit " +
              std::to_string(caps[i]));
    v[i] = static_cast<std::size_t>(x);
  }
  llama2c_config c{v[0], v[1], v[2], v[3], v[4], v[5], v[6], h[5] > 0};
  const auto bad = [&](const std::string& why) { in.fail("bad header: " + why); };
  if (c.dim % c.n_heads != 0)
    bad("dim = " + std::to_string(c.dim) + " is not a multiple of n_heads = " + std::to_string(c.n_heads));
  if (c.n_kv_heads > c.n_heads || c.n_heads % c.n_kv_heads != 0)
    bad("n_heads = " + std::to_string(c.n_heads) + " is not a multiple of n_kv_heads = " +
        std::to_string(c.n_kv_heads));
  if (c.head_size() % 2 != 0)
    bad("head size dim / n_heads = " + std::to_string(c.head_size()) + " is odd (RoPE rotates pairs)");
  return c;
}

/// Number of float32 values after the header that `c` implies (limits keep it far from overflow).
inline std::uint64_t llama2c_float_count(const llama2c_config& c) {
  const std::uint64_t d = c.dim, hd = c.hidden_dim, L = c.n_layers, kv = c.kv_dim(), V = c.vocab_size;
  const std::uint64_t per_layer = 2 * d + 2 * d * d + 2 * kv * d + 3 * hd * d;
  return V * d * (c.shared_classifier ? 1 : 2) + L * per_layer + d + std::uint64_t{c.seq_len} * c.head_size();
}

inline void check_finite(const binary_reader& in, std::span<const float> data, const std::string& what) {
  for (std::size_t i = 0; i < data.size(); ++i)
    if (!std::isfinite(data[i]))
      in.fail(what + " holds a non-finite value (" + num(data[i]) + ") at index " + std::to_string(i));
}

inline void read_tensor(binary_reader& in, row_matrix& m, std::size_t rows, std::size_t cols,
                        const std::string& what) {
  m.resize(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
  in.read_f32s(m.data(), std::uint64_t{rows} * cols, what);
  check_finite(in, {m.data(), rows * cols}, what);
}

inline void read_tensor(binary_reader& in, Eigen::VectorXf& v, std::size_t n, const std::string& what) {
  v.resize(static_cast<Eigen::Index>(n));
  in.read_f32s(v.data(), n, what);
  check_finite(in, {v.data(), n}, what);
}

inline llama2c_weights read_llama2c(binary_reader& in, const llama2c_limits& lim) {
  lim.validate();
  llama2c_weights w;
  w.config = read_llama2c_header(in, lim);
  const llama2c_config& c = w.config;
  const std::uint64_t expected = 28 + 4 * llama2c_float_count(c);
  if (in.size() != expected)
    in.fail("size mismatch: the header (dim " + std::to_string(c.dim) + ", hidden_dim " +
            std::to_string(c.hidden_dim) + ", n_layers " + std::to_string(c.n_layers) + ", n_heads " +
            std::to_string(c.n_heads) + ", n_kv_heads " + std::to_string(c.n_kv_heads) + ", vocab_size " +
            std::to_string(c.vocab_size) + (c.shared_classifier ? "" : " (separate classifier)") + ", seq_len " +
            std::to_string(c.seq_len) + ") implies " + std::to_string(expected) + " bytes, the data is " +
            std::to_string(in.size()) + " bytes");

  const std::size_t d = c.dim, hd = c.hidden_dim, kv = c.kv_dim(), L = c.n_layers;
  read_tensor(in, w.token_embedding, c.vocab_size, d, "tensor token_embedding");
  w.layers.resize(L);
  // The file groups tensors by kind, layer after layer.
  const auto each_layer = [&](const char* name, auto&& read_one) {
    for (std::size_t l = 0; l < L; ++l) read_one(w.layers[l], std::string("tensor ") + name + " of layer " + std::to_string(l));
  };
  each_layer("rms_att", [&](llama2c_layer& y, const std::string& n) { read_tensor(in, y.rms_att, d, n); });
  each_layer("wq", [&](llama2c_layer& y, const std::string& n) { read_tensor(in, y.wq, d, d, n); });
  each_layer("wk", [&](llama2c_layer& y, const std::string& n) { read_tensor(in, y.wk, kv, d, n); });
  each_layer("wv", [&](llama2c_layer& y, const std::string& n) { read_tensor(in, y.wv, kv, d, n); });
  each_layer("wo", [&](llama2c_layer& y, const std::string& n) { read_tensor(in, y.wo, d, d, n); });
  each_layer("rms_ffn", [&](llama2c_layer& y, const std::string& n) { read_tensor(in, y.rms_ffn, d, n); });
  each_layer("w1", [&](llama2c_layer& y, const std::string& n) { read_tensor(in, y.w1, hd, d, n); });
  each_layer("w2", [&](llama2c_layer& y, const std::string& n) { read_tensor(in, y.w2, d, hd, n); });
  each_layer("w3", [&](llama2c_layer& y, const std::string& n) { read_tensor(in, y.w3, hd, d, n); });
  read_tensor(in, w.rms_final, d, "tensor rms_final");
  read_tensor(in, w.freq_cis_real, c.seq_len, c.head_size() / 2, "tensor freq_cis_real");
  read_tensor(in, w.freq_cis_imag, c.seq_len, c.head_size() / 2, "tensor freq_cis_imag");
  if (!c.shared_classifier) read_tensor(in, w.wcls, c.vocab_size, d, "tensor wcls");
  if (in.remaining() != 0) in.fail("internal size mismatch after the last tensor");  // unreachable by the size check
  return w;
}

}  // namespace detail

/// Loads a llama2.c checkpoint file. Throws `format_error` (naming the file and the problem) for a
/// missing, unreadable, truncated, oversized or inconsistent file, or non-finite weights;
/// `invalid_option` for bad `limits`.
[[nodiscard]] inline llama2c_weights load_llama2c_checkpoint(const std::filesystem::path& path,
                                                             const llama2c_limits& limits = {}) {
  auto in = detail::binary_reader::open(path);
  return detail::read_llama2c(in, limits);
}

/// Parses a checkpoint held in memory (fuzzers, embedded data); `name` appears in error messages.
[[nodiscard]] inline llama2c_weights parse_llama2c_checkpoint(std::span<const std::byte> bytes,
                                                              std::string_view name = "<memory>",
                                                              const llama2c_limits& limits = {}) {
  detail::binary_reader in(bytes, std::string(name));
  return detail::read_llama2c(in, limits);
}

ITSCALE_END_NAMESPACE
