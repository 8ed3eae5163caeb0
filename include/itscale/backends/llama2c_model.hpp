#pragma once
/// \file llama2c_model.hpp
/// The llama2.c transformer on Eigen as a `LogitSource`: RMSNorm (eps 1e-5), RoPE on interleaved
/// pairs (2i, 2i+1) with theta 10000, grouped-query attention (query head h reads kv head
/// h / (n_heads / n_kv_heads)), SwiGLU MLP, tied or separate classifier.
///
/// Batched: `prefill` evaluates the whole prompt in one pass, `extend` evaluates its n new
/// tokens together, and `extend_span` (teacher forcing, `ScoringLogitSource`) evaluates a span
/// appended to a fork of its parent in one pass, as a prompt that continues the parent. The n (or
/// prompt-length) hidden states are the rows of one matrix, so every weight is one matrix product
/// across the batch. Attention reads each row's own sequence in the paged KV cache (see
/// paged_kv_cache.hpp: forks share blocks, copy-on-write): rows of different sequences one at a
/// time, and a run of consecutive positions of one sequence (a prompt, a span) with one product
/// per KV block for all its rows, causally masked.
///
/// Rows are not bit-identical across batch compositions: the matrix kernels Eigen picks depend on
/// the batch size and round differently (up to ~2e-5 on the shipped checkpoints, whose logits
/// reach about 20; the float64 reference is matched to 5e-5 either way). The differences grow a
/// little with the sequence: over 85 tokens of stories260K, a 64-token `extend_span` and 64
/// single-token extends differ by up to ~6e-5, each within ~5e-5 of a fresh prefill. A one-token
/// `extend_span` is bit-identical to `extend`.
///
/// Threading (`llama2c_model_options::threads`): every weight product is split into fixed blocks
/// of `matmul_block_cols` output features, and attention into one task per batch row outside runs
/// and one per query head for a run; the tasks run on a fork-join pool. The partition never
/// depends on the thread count and each task writes only its own outputs, so the logits are
/// bit-identical for any number of threads.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/types.hpp"
#include "itscale/backends/support/fork_join_pool.hpp"
#include "itscale/backends/llama2c_checkpoint.hpp"
#include "itscale/backends/support/paged_kv_cache.hpp"
#include "itscale/core/detail/validate_tokens.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Options of `llama2c_model`.
struct llama2c_model_options {
  /// Positions per KV-cache block: the unit of sharing and of copy-on-write.
  std::size_t kv_block_tokens = 16;
  /// Threads evaluating a batch (the caller's included): 1 = no worker thread. The logits do not
  /// depend on it (see the file comment).
  std::size_t threads = 1;

  /// Throws `invalid_option` unless `kv_block_tokens` is in [1, 4096] and `threads` in [1, 256].
  void validate() const {
    if (kv_block_tokens == 0 || kv_block_tokens > 4096)
      throw invalid_option("itscale: llama2c_model_options.kv_block_tokens = " + std::to_string(kv_block_tokens) +
                           " must be in [1, 4096]");
    if (threads == 0 || threads > 256)
      throw invalid_option("itscale: llama2c_model_options.threads = " + std::to_string(threads) +
                           " must be in [1, 256]");
  }
};

/// A llama2.c checkpoint as a `LogitSource`. Handles are KV-cache sequence ids. Several models may
/// share one set of weights (each has its own cache). Not thread-safe (its own worker threads, if
/// any, only run inside `prefill` and `extend`).
class llama2c_model {
 public:
  using handle = std::uint32_t;

  /// Output features per task of a threaded weight product (fixed, so that results do not depend
  /// on the thread count).
  static constexpr std::size_t matmul_block_cols = 32;

  /// Precondition checked: `weights` is not null; options valid (`invalid_option`).
  explicit llama2c_model(std::shared_ptr<const llama2c_weights> weights, const llama2c_model_options& opts = {})
      : w_(check_weights(std::move(weights))),
        cache_(w_->config.n_layers, w_->config.kv_dim(), validated(opts).kv_block_tokens, w_->config.seq_len),
        threads_(opts.threads) {
    build_rope();
    // Attention scores: one buffer of seq_len floats per thread, allocated once. Eigen's aligned
    // allocation matters: its vectorised loops peel unaligned heads in scalar code, so a buffer's
    // address would otherwise change the rounding (and results would depend on which thread ran).
    scores_.assign(threads_, Eigen::VectorXf(static_cast<Eigen::Index>(w_->config.seq_len)));
    run_scores_.resize(threads_);
    if (threads_ > 1) pool_ = std::make_unique<detail::fork_join_pool>(threads_);
  }

  /// Threads evaluating a batch (`llama2c_model_options::threads`).
  [[nodiscard]] std::size_t threads() const noexcept { return threads_; }

  /// Loads a checkpoint file (`format_error` on a bad file, see llama2c_checkpoint.hpp).
  [[nodiscard]] static llama2c_model load(const std::filesystem::path& checkpoint,
                                          const llama2c_model_options& opts = {}) {
    return llama2c_model(std::make_shared<const llama2c_weights>(load_llama2c_checkpoint(checkpoint)), opts);
  }

  [[nodiscard]] std::size_t vocab_size() const noexcept { return w_->config.vocab_size; }
  [[nodiscard]] const llama2c_config& config() const noexcept { return w_->config; }
  [[nodiscard]] const std::shared_ptr<const llama2c_weights>& weights() const noexcept { return w_; }

  /// The RoPE tables this model uses ([seq_len][head_size/2], computed in double then rounded).
  [[nodiscard]] const row_matrix& rope_cos() const noexcept { return cos_; }
  [[nodiscard]] const row_matrix& rope_sin() const noexcept { return sin_; }

  /// A new sequence holding `prompt` (non-empty, ids in the vocabulary, at most seq_len tokens;
  /// else `invalid_input`); `logits()` then shows its next-token row.
  handle prefill(std::span<const token_id> prompt) {
    if (prompt.empty()) throw invalid_input("itscale: prefill needs a non-empty prompt");
    detail::check_tokens(prompt, vocab_size(), "prompt");
    rows_ = 0;
    const handle s = cache_.create();
    try {
      cache_.grow(s, prompt.size());
      batch_.clear();
      for (std::size_t i = 0; i < prompt.size(); ++i) batch_.push_back({s, i, prompt[i], 0});
      forward(/*all_rows=*/false);
    } catch (...) {
      cache_.release(s);
      throw;
    }
    rows_ = 1;
    return s;
  }

  /// Child i = parents[i] + tokens[i], all evaluated in one batch (see the file comment).
  /// `invalid_input` for mismatched spans, a token outside the vocabulary, a dead parent, or a
  /// child longer than seq_len. All-or-nothing: on any exception no child exists.
  void extend(std::span<const handle> parents, std::span<const token_id> tokens, std::span<handle> children) {
    detail::check_extend_shape(parents.size(), tokens.size(), children.size());
    detail::check_tokens(tokens, vocab_size(), "tokens");
    for (std::size_t i = 0; i < parents.size(); ++i) {
      if (!cache_.is_live(parents[i]))
        throw invalid_input("itscale: extend: parents[" + std::to_string(i) + "] = " + std::to_string(parents[i]) +
                            " is not a live handle");
      if (cache_.length(parents[i]) >= cache_.max_tokens())
        throw invalid_input("itscale: extend: parents[" + std::to_string(i) + "] already holds seq_len = " +
                            std::to_string(cache_.max_tokens()) + " tokens, the model's context");
    }
    rows_ = 0;
    const std::size_t n = parents.size();
    std::vector<handle> made;
    made.reserve(n);
    try {
      batch_.clear();
      for (std::size_t i = 0; i < n; ++i) {
        made.push_back(cache_.fork(parents[i]));
        const std::size_t pos = cache_.grow(made.back(), 1);
        batch_.push_back({made.back(), pos, tokens[i], 0});
      }
      forward(/*all_rows=*/true);
    } catch (...) {
      for (handle h : made) cache_.release(h);
      throw;
    }
    std::copy(made.begin(), made.end(), children.begin());
    rows_ = n;
  }

  /// Teacher forcing (`ScoringLogitSource`): one new sequence = `parent + tokens`, evaluated as one
  /// batch like a prompt (positions `length(parent) .. length(parent) + n - 1`, each attending
  /// causally over the parent's cached keys/values and the span's earlier tokens), continuing a
  /// fork of the parent (which stays valid and unchanged: its blocks are shared, copy-on-write).
  /// `logits()` then shows n rows, row i = the next-token logits after `parent + tokens[0..i]`;
  /// they equal the rows of n single-token extends up to the batch rounding of the file comment.
  /// `invalid_input` for an empty span, a token outside the vocabulary, a dead parent, or a
  /// result longer than seq_len (`capacity().max_context`). All-or-nothing.
  handle extend_span(handle parent, std::span<const token_id> tokens) {
    if (tokens.empty()) throw invalid_input("itscale: extend_span needs at least one token");
    detail::check_tokens(tokens, vocab_size(), "tokens");
    if (!cache_.is_live(parent))
      throw invalid_input("itscale: extend_span: parent = " + std::to_string(parent) + " is not a live handle");
    const std::size_t len = cache_.length(parent);
    if (tokens.size() > cache_.max_tokens() - len)
      throw invalid_input("itscale: extend_span: parent of " + std::to_string(len) + " tokens + " +
                          std::to_string(tokens.size()) + " tokens exceeds seq_len = " +
                          std::to_string(cache_.max_tokens()) + ", the model's context");
    rows_ = 0;
    const handle s = cache_.fork(parent);
    try {
      const std::size_t pos = cache_.grow(s, tokens.size());
      batch_.clear();
      for (std::size_t i = 0; i < tokens.size(); ++i) batch_.push_back({s, pos + i, tokens[i], 0});
      forward(/*all_rows=*/true);
    } catch (...) {
      cache_.release(s);
      throw;
    }
    rows_ = tokens.size();
    return s;
  }

  /// `SourceWithCapacity`: `max_context` = the checkpoint's seq_len (the longest sequence: RoPE
  /// table and cache depth); `max_live_sequences` = 0, unbounded: the paged cache holds as many
  /// sequences as memory allows (shared prefixes stored once, see `memory()`).
  [[nodiscard]] source_capacity capacity() const noexcept { return {0, cache_.max_tokens()}; }

  [[nodiscard]] logits_view logits() noexcept { return {logits_.data(), rows_, vocab_size()}; }

  void release(handle h) noexcept { cache_.release(h); }

  /// Number of live handles.
  [[nodiscard]] std::size_t live_handles() const noexcept { return cache_.live_sequences(); }
  /// Tokens held by a live handle (`invalid_input` for a dead one).
  [[nodiscard]] std::size_t length(handle h) const { return cache_.length(h); }
  /// KV-cache memory accounting.
  [[nodiscard]] kv_cache_stats memory() const noexcept { return cache_.stats(); }
  [[nodiscard]] const paged_kv_cache& cache() const noexcept { return cache_; }
  /// Returns pooled KV blocks to the allocator.
  void trim() noexcept { cache_.trim(); }

 private:
  struct row_ref {
    handle seq;
    std::size_t pos;
    token_id token;
    std::size_t table = 0;  // index in tables_, set by forward
  };

  static const llama2c_model_options& validated(const llama2c_model_options& o) {
    o.validate();
    return o;
  }

  static std::shared_ptr<const llama2c_weights> check_weights(std::shared_ptr<const llama2c_weights> w) {
    if (!w) throw invalid_input("itscale: llama2c_model needs weights (got a null pointer)");
    return w;
  }

  void build_rope() {
    const llama2c_config& c = w_->config;
    const std::size_t half = c.head_size() / 2;
    cos_.resize(static_cast<Eigen::Index>(c.seq_len), static_cast<Eigen::Index>(half));
    sin_.resize(static_cast<Eigen::Index>(c.seq_len), static_cast<Eigen::Index>(half));
    for (std::size_t j = 0; j < half; ++j) {
      // Double, then one rounding: closest to the float64 reference. The checkpoints' own
      // freq_cis tables (float32 angles) agree to ~2e-6 on the shipped files (tested).
      const double freq = std::pow(10000.0, -static_cast<double>(2 * j) / static_cast<double>(c.head_size()));
      for (std::size_t p = 0; p < c.seq_len; ++p) {
        const double a = static_cast<double>(p) * freq;
        cos_(static_cast<Eigen::Index>(p), static_cast<Eigen::Index>(j)) = static_cast<float>(std::cos(a));
        sin_(static_cast<Eigen::Index>(p), static_cast<Eigen::Index>(j)) = static_cast<float>(std::sin(a));
      }
    }
  }

  static void rms_norm(const row_matrix& x, const Eigen::VectorXf& weight, row_matrix& out) {
    out.resize(x.rows(), x.cols());
    const float inv_n = 1.0f / static_cast<float>(x.cols());
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      const float ss = x.row(r).squaredNorm() * inv_n + 1e-5f;
      out.row(r) = x.row(r).cwiseProduct(weight.transpose()) * (1.0f / std::sqrt(ss));
    }
  }

  /// Rotates pairs (2i, 2i+1) of every head of every row by its position's angle.
  void rope(row_matrix& m, std::size_t heads) const {
    const auto hs = static_cast<Eigen::Index>(w_->config.head_size());
    for (std::size_t r = 0; r < batch_.size(); ++r) {
      const auto p = static_cast<Eigen::Index>(batch_[r].pos);
      float* row = m.row(static_cast<Eigen::Index>(r)).data();
      for (Eigen::Index h = 0; h < static_cast<Eigen::Index>(heads); ++h)
        for (Eigen::Index j = 0; j < hs / 2; ++j) {
          const float c = cos_(p, j), s = sin_(p, j);
          float* v = row + h * hs + 2 * j;
          const float v0 = v[0], v1 = v[1];
          v[0] = v0 * c - v1 * s;
          v[1] = v0 * s + v1 * c;
        }
    }
  }

  /// Attention of batch row `r` over its own sequence in `layer`, into att_.row(r); `scores_mem`
  /// has room for seq_len floats. Reads the cache and q_, writes only row r of att_ (so rows can
  /// run concurrently).
  void attend_row(std::size_t layer, std::size_t r, float* scores_mem) {
    const llama2c_config& c = w_->config;
    const std::size_t hs = c.head_size(), kv_dim = c.kv_dim(), B = cache_.block_tokens();
    const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
    using map_rows = Eigen::Map<const row_matrix, 0, Eigen::OuterStride<>>;
    const std::size_t n = batch_[r].pos + 1;  // causal: positions 0..pos
    const std::vector<std::uint32_t>& table = tables_[batch_[r].table];
    Eigen::Map<Eigen::VectorXf> scores(scores_mem, static_cast<Eigen::Index>(n));
    auto att_row = att_.row(static_cast<Eigen::Index>(r));
    for (std::size_t h = 0; h < c.n_heads; ++h) {
      const std::size_t g = h / c.kv_group();
      const auto q = q_.row(static_cast<Eigen::Index>(r)).segment(static_cast<Eigen::Index>(h * hs),
                                                                   static_cast<Eigen::Index>(hs));
      for (std::size_t t0 = 0; t0 < n; t0 += B) {
        const std::size_t cnt = std::min(B, n - t0);
        const map_rows k(cache_.keys(table[t0 / B], layer) + g * hs, static_cast<Eigen::Index>(cnt),
                         static_cast<Eigen::Index>(hs), Eigen::OuterStride<>(static_cast<Eigen::Index>(kv_dim)));
        scores.segment(static_cast<Eigen::Index>(t0), static_cast<Eigen::Index>(cnt)).noalias() =
            (k * q.transpose()) * scale;
      }
      const float mx = scores.maxCoeff();
      scores = (scores.array() - mx).exp();
      scores /= scores.sum();
      auto out = att_row.segment(static_cast<Eigen::Index>(h * hs), static_cast<Eigen::Index>(hs));
      for (std::size_t t0 = 0; t0 < n; t0 += B) {
        const std::size_t cnt = std::min(B, n - t0);
        const map_rows v(cache_.values(table[t0 / B], layer) + g * hs, static_cast<Eigen::Index>(cnt),
                         static_cast<Eigen::Index>(hs), Eigen::OuterStride<>(static_cast<Eigen::Index>(kv_dim)));
        out.noalias() += scores.segment(static_cast<Eigen::Index>(t0), static_cast<Eigen::Index>(cnt)).transpose() * v;
      }
    }
  }

  /// Attention of the batch rows [r0, r1), consecutive positions of one sequence (a prompt or a
  /// span), for query head `h`, into the head's columns of att_ rows r0..r1-1: the scores of all
  /// rows against each KV block are one matrix product, the causal mask applied after, then the
  /// weighted values are one product per block. `scores` is the worker's scratch.
  void attend_run(std::size_t layer, std::size_t r0, std::size_t r1, std::size_t h, row_matrix& scores) {
    const llama2c_config& c = w_->config;
    const std::size_t hs = c.head_size(), kv_dim = c.kv_dim(), B = cache_.block_tokens();
    const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
    using map_rows = Eigen::Map<const row_matrix, 0, Eigen::OuterStride<>>;
    const auto m = static_cast<Eigen::Index>(r1 - r0);
    const std::size_t first = batch_[r0].pos, n = batch_[r1 - 1].pos + 1;  // keys 0..n-1
    const std::size_t g = h / c.kv_group();
    const std::vector<std::uint32_t>& table = tables_[batch_[r0].table];
    const auto q = q_.block(static_cast<Eigen::Index>(r0), static_cast<Eigen::Index>(h * hs), m,
                            static_cast<Eigen::Index>(hs));
    scores.resize(m, static_cast<Eigen::Index>(n));
    for (std::size_t t0 = 0; t0 < n; t0 += B) {
      const std::size_t cnt = std::min(B, n - t0);
      const map_rows k(cache_.keys(table[t0 / B], layer) + g * hs, static_cast<Eigen::Index>(cnt),
                       static_cast<Eigen::Index>(hs), Eigen::OuterStride<>(static_cast<Eigen::Index>(kv_dim)));
      scores.middleCols(static_cast<Eigen::Index>(t0), static_cast<Eigen::Index>(cnt)).noalias() =
          (q * k.transpose()) * scale;
    }
    for (Eigen::Index i = 0; i < m; ++i) {
      // Causal: row i (position first + i) sees keys 0..first + i.
      const auto len = static_cast<Eigen::Index>(first) + i + 1;
      auto row = scores.row(i).head(len);
      const float mx = row.maxCoeff();
      row = (row.array() - mx).exp();
      row /= row.sum();
      scores.row(i).tail(static_cast<Eigen::Index>(n) - len).setZero();
    }
    auto out = att_.block(static_cast<Eigen::Index>(r0), static_cast<Eigen::Index>(h * hs), m,
                          static_cast<Eigen::Index>(hs));
    for (std::size_t t0 = 0; t0 < n; t0 += B) {
      const std::size_t cnt = std::min(B, n - t0);
      const map_rows v(cache_.values(table[t0 / B], layer) + g * hs, static_cast<Eigen::Index>(cnt),
                       static_cast<Eigen::Index>(hs), Eigen::OuterStride<>(static_cast<Eigen::Index>(kv_dim)));
      out.noalias() += scores.middleCols(static_cast<Eigen::Index>(t0), static_cast<Eigen::Index>(cnt)) * v;
    }
  }

  /// Attention of every batch row. A run of rows at consecutive positions of one sequence (a
  /// prompt, a span) is one task per query head (attend_run, matrix products over the run); any
  /// other row is one task (attend_row). The tasks depend only on the batch, never on the thread
  /// count.
  void attend(std::size_t layer) {
    att_.setZero(static_cast<Eigen::Index>(batch_.size()), static_cast<Eigen::Index>(w_->config.dim));
    auto task = [&](std::size_t t, std::size_t worker) {
      const attention_task& a = attention_tasks_[t];
      if (a.r1 - a.r0 == 1)
        attend_row(layer, a.r0, scores_[worker].data());
      else
        attend_run(layer, a.r0, a.r1, a.head, run_scores_[worker]);
    };
    run(attention_tasks_.size(), task);
  }

  /// Splits batch_ into attention tasks (see attend); once per forward.
  void plan_attention() {
    attention_tasks_.clear();
    for (std::size_t r0 = 0; r0 < batch_.size();) {
      std::size_t r1 = r0 + 1;
      while (r1 < batch_.size() && batch_[r1].seq == batch_[r0].seq && batch_[r1].pos == batch_[r1 - 1].pos + 1) ++r1;
      if (r1 - r0 == 1)
        attention_tasks_.push_back({r0, r1, 0});
      else
        for (std::size_t h = 0; h < w_->config.n_heads; ++h) attention_tasks_.push_back({r0, r1, h});
      r0 = r1;
    }
  }

  /// out[:, cols] (= or +=) in * w[cols, :]^T, for a destination of `n` rows with row stride `ld`.
  struct matmul {
    const row_matrix* in;
    const row_matrix* w;
    float* out;
    Eigen::Index ld;
    bool accumulate;
    [[nodiscard]] std::size_t blocks() const noexcept {
      return (static_cast<std::size_t>(w->rows()) + matmul_block_cols - 1) / matmul_block_cols;
    }
    void block(std::size_t b) const {
      const auto c0 = static_cast<Eigen::Index>(b * matmul_block_cols);
      const Eigen::Index cn = std::min<Eigen::Index>(static_cast<Eigen::Index>(matmul_block_cols), w->rows() - c0);
      Eigen::Map<row_matrix, 0, Eigen::OuterStride<>> o(out + c0, in->rows(), cn, Eigen::OuterStride<>(ld));
      if (accumulate)
        o.noalias() += *in * w->middleRows(c0, cn).transpose();
      else
        o.noalias() = *in * w->middleRows(c0, cn).transpose();
    }
  };

  /// Runs the products (their outputs disjoint, their inputs not among the outputs) as one batch of
  /// fixed column-block tasks.
  template <std::size_t N>
  void products(const std::array<matmul, N>& ms) {
    std::array<std::size_t, N + 1> first{};
    for (std::size_t i = 0; i < N; ++i) first[i + 1] = first[i] + ms[i].blocks();
    auto task = [&](std::size_t t, std::size_t) {
      std::size_t i = 0;
      while (t >= first[i + 1]) ++i;
      ms[i].block(t - first[i]);
    };
    run(first[N], task);
  }

  template <class F>
  void run(std::size_t n, F& f) {
    if (pool_)
      pool_->run(n, f);
    else
      for (std::size_t i = 0; i < n; ++i) f(i, std::size_t{0});
  }

  static matmul product(const row_matrix& in, const row_matrix& w, row_matrix& out, bool accumulate = false) {
    if (!accumulate) out.resize(in.rows(), w.rows());
    return {&in, &w, out.data(), out.outerStride(), accumulate};
  }

  /// The block table of every batch row's sequence into tables_ (once per sequence: the rows of a
  /// prompt share one), for all layers. The cache's tables are a tree walked on lookup, so they are
  /// gathered once per forward rather than per layer and row; tables_ keeps its vectors across
  /// calls, so steady-state decoding allocates nothing here.
  void gather_tables() {
    std::size_t k = 0;
    for (std::size_t r = 0; r < batch_.size(); ++r) {
      if (r == 0 || batch_[r].seq != batch_[r - 1].seq) {
        if (k == tables_.size()) tables_.emplace_back();
        cache_.block_table(batch_[r].seq, tables_[k++]);
      }
      batch_[r].table = k - 1;
    }
  }

  /// Runs batch_ through the network; writes the logits of every row (`all_rows`) or of the last.
  void forward(bool all_rows) {
    const llama2c_config& c = w_->config;
    const auto n = static_cast<Eigen::Index>(batch_.size());
    gather_tables();
    plan_attention();
    x_.resize(n, static_cast<Eigen::Index>(c.dim));
    for (Eigen::Index r = 0; r < n; ++r) x_.row(r) = w_->token_embedding.row(batch_[static_cast<std::size_t>(r)].token);
    for (std::size_t l = 0; l < c.n_layers; ++l) {
      const llama2c_layer& lw = w_->layers[l];
      rms_norm(x_, lw.rms_att, xn_);
      products(std::array{product(xn_, lw.wq, q_), product(xn_, lw.wk, k_), product(xn_, lw.wv, v_)});
      rope(q_, c.n_heads);
      rope(k_, c.n_kv_heads);
      // Every row's key/value goes in before any attention, so prompt rows see each other.
      const std::size_t kv = c.kv_dim();
      for (Eigen::Index r = 0; r < n; ++r) {
        const row_ref& b = batch_[static_cast<std::size_t>(r)];
        std::copy_n(k_.row(r).data(), kv, cache_.key(b.seq, l, b.pos));
        std::copy_n(v_.row(r).data(), kv, cache_.value(b.seq, l, b.pos));
      }
      attend(l);
      products(std::array{product(att_, lw.wo, x_, /*accumulate=*/true)});
      rms_norm(x_, lw.rms_ffn, xn_);
      products(std::array{product(xn_, lw.w1, h1_), product(xn_, lw.w3, h3_)});
      h1_.array() = h1_.array() / (1.0f + (-h1_.array()).exp()) * h3_.array();  // SwiGLU: silu(w1 x) * w3 x
      products(std::array{product(h1_, lw.w2, x_, /*accumulate=*/true)});
    }
    const Eigen::Index first = all_rows ? 0 : n - 1, m = n - first;
    rms_norm(x_.bottomRows(m).eval(), w_->rms_final, xn_);
    logits_.resize(static_cast<std::size_t>(m) * c.vocab_size);
    products(std::array{matmul{&xn_, &w_->classifier(), logits_.data(), static_cast<Eigen::Index>(c.vocab_size), false}});
  }

  std::shared_ptr<const llama2c_weights> w_;
  paged_kv_cache cache_;
  row_matrix cos_, sin_;
  std::vector<row_ref> batch_;
  std::vector<std::vector<std::uint32_t>> tables_;  // see gather_tables
  row_matrix x_, xn_, q_, k_, v_, att_, h1_, h3_;
  std::size_t threads_ = 1;
  std::vector<Eigen::VectorXf> scores_;           // per thread, seq_len floats
  struct attention_task {
    std::size_t r0, r1, head;  // batch rows [r0, r1); head only for runs (r1 - r0 > 1)
  };
  std::vector<attention_task> attention_tasks_;   // see plan_attention
  std::vector<row_matrix> run_scores_;            // per thread, [run rows x keys] (attend_run)
  std::unique_ptr<detail::fork_join_pool> pool_;  // null when threads_ == 1
  std::vector<float> logits_;
  std::size_t rows_ = 0;
};

static_assert(ScoringLogitSource<llama2c_model>);
static_assert(SourceWithCapacity<llama2c_model>);

ITSCALE_END_NAMESPACE
