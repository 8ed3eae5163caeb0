#pragma once
/// \file llama_cpp_source.hpp
/// A llama.cpp model (`llama_model` + `llama_context`) as a `LogitSource`, so every itscale
/// algorithm (beam search, sampling, self-consistency, MCTS, step-level search) runs on llama.cpp
/// unchanged. **Needs llama.cpp** (`llama.h` on the include path, libllama linked); nothing else in
/// itscale includes this header. Written against llama.cpp's C API of release v0.4.0 (the
/// `llama_memory_*` functions; the one inside the npm package `node-llama-cpp@3.21.1`).
///
/// How the concept maps onto llama.cpp:
/// - a handle is a `llama_seq_id`, taken from a pool of `n_seq_max` ids and given back by
///   `release` (`llama_memory_seq_rm` of the whole sequence);
/// - `prefill` decodes the prompt under a free id in one `llama_batch` (only the last position
///   asks for logits);
/// - `extend` decodes all children in one `llama_decode`: each child first gets its parent's cells
///   with `llama_memory_seq_cp` — the context uses a *unified* KV cache (`kv_unified = true`), in
///   which a copy only adds the child's id to the parent's cells, so K beams of one prompt hold the
///   prompt's cells once (with per-sequence caches, llama.cpp copies the data between streams).
///   Children with the same parent and token are one batch entry carrying all their ids: one cell,
///   one row, bit-identical children;
/// - `logits()` is llama.cpp's own output buffer (`llama_get_logits`, rows in batch order) without
///   a copy, except after an `extend` that merged duplicate children (their rows are copied out);
/// - `extend_span` (`ScoringLogitSource`) decodes the span after a copy of the parent's cells, all
///   positions asking for logits.
///
/// llama.cpp's limits become exceptions that name the limit and how to raise it, and leave every
/// handle as it was (all-or-nothing):
/// - sequence ids exhausted: `backend_error` naming `n_seq_max` (`capacity().max_live_sequences`,
///   which the step-level searches' handle budget respects);
/// - KV cache full (`llama_decode` returns 1): `backend_error` naming `n_ctx` (the cells all
///   sequences share; shared prefixes count once);
/// - context length: a sequence longer than `max_context` is `invalid_input`, as the concept
///   requires (`capacity().max_context`).
///
/// Precision: llama.cpp's CPU kernels (and its f16 KV cache by default) differ from a float64
/// reference by about 6e-3 on aidreams260K; batch composition changes rows by rounding only.

#include <llama.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/detail/validate_tokens.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Options of `llama_cpp_source` (the context it creates).
struct llama_cpp_source_options {
  /// Sequence slots: handles live at once (llama.cpp's `n_seq_max`, at most 256 = LLAMA_MAX_SEQ).
  std::size_t n_seq_max = 64;
  /// KV cells shared by all sequences (llama.cpp's `n_ctx` of a unified cache; it rounds up to a
  /// multiple of 256). A shared prefix occupies its cells once.
  std::size_t n_ctx = 4096;
  /// Tokens one sequence may hold; 0 = the model's training context (`llama_model_n_ctx_train`),
  /// capped by `n_ctx`.
  std::size_t max_context = 0;
  /// llama.cpp's worker threads (`n_threads` and `n_threads_batch`).
  std::size_t threads = 1;

  /// Throws `invalid_option` unless `n_seq_max` is in [1, 256], `n_ctx` in [1, 2^24], `threads`
  /// in [1, 512] and `max_context <= n_ctx`.
  void validate() const {
    if (n_seq_max == 0 || n_seq_max > 256)
      throw invalid_option("itscale: llama_cpp_source_options.n_seq_max = " + std::to_string(n_seq_max) +
                           " must be in [1, 256] (llama.cpp's LLAMA_MAX_SEQ)");
    if (n_ctx == 0 || n_ctx > (std::size_t{1} << 24))
      throw invalid_option("itscale: llama_cpp_source_options.n_ctx = " + std::to_string(n_ctx) +
                           " must be in [1, 16777216]");
    if (max_context > n_ctx)
      throw invalid_option("itscale: llama_cpp_source_options.max_context = " + std::to_string(max_context) +
                           " must be <= n_ctx = " + std::to_string(n_ctx));
    if (threads == 0 || threads > 512)
      throw invalid_option("itscale: llama_cpp_source_options.threads = " + std::to_string(threads) +
                           " must be in [1, 512]");
  }
};

/// Registers llama.cpp's compute backends once per process: `llama_backend_init`, then
/// `ggml_backend_load_all_from_path(dir)` (builds whose CPU backends are separate libraries, as
/// the npm package's `libggml-cpu-*.so`, need it), or `ggml_backend_load_all()` for an empty
/// `dir`. Throws `backend_error` when no device is available afterwards. Later calls only
/// re-check that a device exists.
inline void llama_cpp_init(const std::filesystem::path& backend_dir = {}) {
  static std::once_flag once;
  std::call_once(once, [&] {
    llama_backend_init();
    if (backend_dir.empty()) ggml_backend_load_all();
    else ggml_backend_load_all_from_path(backend_dir.string().c_str());
  });
  if (ggml_backend_dev_count() == 0)
    throw backend_error("itscale: llama.cpp has no compute device after loading backends from '" +
                        backend_dir.string() + "' (the directory of libggml-cpu-*.so)");
}

/// A loaded llama.cpp model, shared by the sources (contexts) made from it.
using llama_cpp_model_ptr = std::shared_ptr<llama_model>;

/// Loads a GGUF file on the CPU (`llama_cpp_init` must have run). `format_error` when the file is
/// missing or llama.cpp rejects it.
[[nodiscard]] inline llama_cpp_model_ptr load_llama_cpp_model(const std::filesystem::path& gguf) {
  if (!std::filesystem::is_regular_file(gguf))
    throw format_error("itscale: llama.cpp model '" + gguf.string() + "' is not a readable file");
  llama_model_params p = llama_model_default_params();
  p.n_gpu_layers = 0;
  llama_model* m = llama_model_load_from_file(gguf.string().c_str(), p);
  if (m == nullptr)
    throw format_error("itscale: llama.cpp could not load '" + gguf.string() +
                       "' (not a GGUF model it supports; its log says why)");
  return llama_cpp_model_ptr(m, [](llama_model* x) { llama_model_free(x); });
}

/// A llama.cpp context as a `LogitSource` (see the file comment). Move-only; not thread-safe.
class llama_cpp_source {
 public:
  using handle = std::int32_t;  // a llama_seq_id

  /// A context on `model` (not null, else `invalid_input`); options valid (`invalid_option`);
  /// `backend_error` when llama.cpp cannot create the context.
  explicit llama_cpp_source(llama_cpp_model_ptr model, const llama_cpp_source_options& opts = {})
      : model_(check_model(std::move(model))), opts_(validated(opts)) {
    const llama_vocab* vocab = llama_model_get_vocab(model_.get());
    vocab_ = static_cast<std::size_t>(std::max(0, llama_vocab_n_tokens(vocab)));
    if (vocab_ == 0) throw backend_error("itscale: llama.cpp model has an empty vocabulary");
    const auto train = static_cast<std::size_t>(std::max(0, llama_model_n_ctx_train(model_.get())));
    max_context_ = opts_.max_context != 0 ? opts_.max_context : std::min(train == 0 ? opts_.n_ctx : train, opts_.n_ctx);

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<std::uint32_t>(opts_.n_ctx);
    cp.n_seq_max = static_cast<std::uint32_t>(opts_.n_seq_max);
    // One llama_decode must take a whole prompt or span (max_context) and a whole extend
    // (n_seq_max rows); llama.cpp splits it into physical ubatches itself.
    cp.n_batch = static_cast<std::uint32_t>(std::max(max_context_, opts_.n_seq_max));
    cp.n_ubatch = std::min<std::uint32_t>(cp.n_batch, 512);
    cp.n_threads = static_cast<std::int32_t>(opts_.threads);
    cp.n_threads_batch = static_cast<std::int32_t>(opts_.threads);
    cp.kv_unified = true;  // forks share cells (see the file comment)
    cp.no_perf = true;
    llama_context* c = llama_init_from_model(model_.get(), cp);
    if (c == nullptr)
      throw backend_error("itscale: llama.cpp could not create a context (n_ctx " + std::to_string(opts_.n_ctx) +
                          ", n_seq_max " + std::to_string(opts_.n_seq_max) + "); its log says why");
    ctx_.reset(c);
    n_ctx_ = llama_n_ctx(c);
    alive_.assign(opts_.n_seq_max, 0);
    length_.assign(opts_.n_seq_max, 0);
    // Lowest id first out of the pool (a stack, so push the highest first).
    for (std::size_t i = opts_.n_seq_max; i-- > 0;) free_.push_back(static_cast<handle>(i));
  }

  llama_cpp_source(llama_cpp_source&&) noexcept = default;
  llama_cpp_source& operator=(llama_cpp_source&&) noexcept = default;
  llama_cpp_source(const llama_cpp_source&) = delete;
  llama_cpp_source& operator=(const llama_cpp_source&) = delete;
  ~llama_cpp_source() = default;

  [[nodiscard]] std::size_t vocab_size() const noexcept { return vocab_; }

  /// A new sequence holding `prompt` (non-empty, ids in the vocabulary, at most `max_context`
  /// tokens: else `invalid_input`); `backend_error` when no sequence id is free or the KV cache is
  /// full. `logits()` then shows its next-token row.
  handle prefill(std::span<const token_id> prompt) {
    if (prompt.empty()) throw invalid_input("itscale: prefill needs a non-empty prompt");
    detail::check_tokens(prompt, vocab_, "prompt");
    if (prompt.size() > max_context_)
      throw invalid_input("itscale: llama_cpp_source: a prompt of " + std::to_string(prompt.size()) +
                          " tokens exceeds max_context = " + std::to_string(max_context_) + context_hint());
    need_ids(1);
    rows_ = 0;
    begin_batch(prompt.size(), prompt.size());  // may throw (allocation): before any id is taken
    const handle s = take_id();
    for (std::size_t i = 0; i < prompt.size(); ++i) {
      add(prompt[i], i, i + 1 == prompt.size());
      add_seq(s);
    }
    decode_or_undo(std::span<const handle>(&s, 1));
    length_[idx(s)] = prompt.size();
    view_ = llama_get_logits(ctx_.get());
    rows_ = 1;
    return s;
  }

  /// Child i = parents[i] + tokens[i], all in one `llama_decode` (see the file comment).
  /// `invalid_input` for mismatched spans, a token outside the vocabulary, a dead parent or a
  /// child longer than `max_context`; `backend_error` when the sequence ids or the KV cache run
  /// out. All-or-nothing.
  void extend(std::span<const handle> parents, std::span<const token_id> tokens, std::span<handle> children) {
    detail::check_extend_shape(parents.size(), tokens.size(), children.size());
    detail::check_tokens(tokens, vocab_, "tokens");
    for (std::size_t i = 0; i < parents.size(); ++i) {
      check_live(parents[i], "extend: parents[" + std::to_string(i) + "]");
      if (length_[idx(parents[i])] >= max_context_)
        throw invalid_input("itscale: llama_cpp_source: extend: parents[" + std::to_string(i) + "] already holds " +
                            std::to_string(max_context_) + " tokens = max_context" + context_hint());
    }
    const std::size_t n = parents.size();
    need_ids(n);
    rows_ = 0;
    // Unique (parent, token) pairs, in order of first appearance: one batch entry each.
    first_of_.assign(n, 0);
    std::size_t unique = 0;
    for (std::size_t i = 0; i < n; ++i) {
      std::size_t j = 0;
      while (j < i && !(parents[j] == parents[i] && tokens[j] == tokens[i])) ++j;
      first_of_[i] = j == i ? unique++ : first_of_[j];
    }
    // Allocations that may throw come before any id is taken.
    begin_batch(unique, n);
    made_.clear();
    made_.reserve(n);
    if (unique != n) copy_.resize(n * vocab_);
    for (std::size_t i = 0; i < n; ++i) made_.push_back(take_id());
    for (std::size_t i = 0; i < n; ++i)
      llama_memory_seq_cp(memory(), parents[i], made_[i], -1, -1);  // shares the parent's cells
    for (std::size_t u = 0, i = 0; i < n; ++i) {
      if (first_of_[i] != u) continue;  // a repeat: its id joins its first's entry below
      add(tokens[i], length_[idx(parents[i])], true);
      for (std::size_t k = i; k < n; ++k)
        if (first_of_[k] == u) add_seq(made_[k]);
      ++u;
    }
    decode_or_undo(made_);
    for (std::size_t i = 0; i < n; ++i) {
      length_[idx(made_[i])] = length_[idx(parents[i])] + 1;
      children[i] = made_[i];
    }
    float* out = llama_get_logits(ctx_.get());
    if (unique == n) {
      view_ = out;  // rows in batch order = child order: no copy
    } else {
      for (std::size_t i = 0; i < n; ++i) std::copy_n(out + first_of_[i] * vocab_, vocab_, copy_.data() + i * vocab_);
      view_ = copy_.data();
    }
    rows_ = n;
  }

  /// Teacher forcing (`ScoringLogitSource`): one new sequence = `parent + tokens` in one
  /// `llama_decode` over a copy of the parent's cells; `logits()` shows `tokens.size()` rows.
  /// `invalid_input` for an empty span, a bad token, a dead parent or a result longer than
  /// `max_context`; `backend_error` when ids or KV cells run out. All-or-nothing.
  handle extend_span(handle parent, std::span<const token_id> tokens) {
    if (tokens.empty()) throw invalid_input("itscale: extend_span needs at least one token");
    detail::check_tokens(tokens, vocab_, "tokens");
    check_live(parent, "extend_span: parent");
    const std::size_t len = length_[idx(parent)];
    if (tokens.size() > max_context_ - len)
      throw invalid_input("itscale: llama_cpp_source: extend_span: a parent of " + std::to_string(len) + " tokens + " +
                          std::to_string(tokens.size()) + " tokens exceeds max_context = " + std::to_string(max_context_) +
                          context_hint());
    need_ids(1);
    rows_ = 0;
    begin_batch(tokens.size(), tokens.size());  // may throw (allocation): before any id is taken
    const handle s = take_id();
    llama_memory_seq_cp(memory(), parent, s, -1, -1);
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      add(tokens[i], len + i, true);
      add_seq(s);
    }
    decode_or_undo(std::span<const handle>(&s, 1));
    length_[idx(s)] = len + tokens.size();
    view_ = llama_get_logits(ctx_.get());
    rows_ = tokens.size();
    return s;
  }

  [[nodiscard]] logits_view logits() noexcept { return {rows_ == 0 ? nullptr : view_, rows_, vocab_}; }

  /// Removes the sequence from the KV cache (its cells are freed when no other sequence holds them)
  /// and returns its id to the pool. Unknown or released handles are ignored.
  void release(handle h) noexcept {
    if (h < 0 || static_cast<std::size_t>(h) >= alive_.size() || !alive_[idx(h)]) return;
    llama_memory_seq_rm(memory(), h, -1, -1);  // a whole sequence: never fails
    give_back(h);
  }

  /// `SourceWithCapacity`: `n_seq_max` live sequences, `max_context` tokens each.
  [[nodiscard]] source_capacity capacity() const noexcept { return {opts_.n_seq_max, max_context_}; }

  /// Number of live handles (sequence ids in use).
  [[nodiscard]] std::size_t live_handles() const noexcept { return opts_.n_seq_max - free_.size(); }
  /// Tokens held by a live handle (`invalid_input` for a dead one).
  [[nodiscard]] std::size_t length(handle h) const {
    check_live(h, "length");
    return length_[idx(h)];
  }
  /// KV cells of the context (llama.cpp's `n_ctx` after its rounding).
  [[nodiscard]] std::size_t n_ctx() const noexcept { return n_ctx_; }
  /// The llama.cpp objects, for their own API (memory inspection, performance counters). Using
  /// them to change sequences behind the source's back breaks its bookkeeping.
  [[nodiscard]] llama_context* context() const noexcept { return ctx_.get(); }
  [[nodiscard]] const llama_cpp_model_ptr& model() const noexcept { return model_; }
  [[nodiscard]] const llama_cpp_source_options& options() const noexcept { return opts_; }

 private:
  struct context_free {
    void operator()(llama_context* c) const noexcept { llama_free(c); }
  };

  static llama_cpp_model_ptr check_model(llama_cpp_model_ptr m) {
    if (!m) throw invalid_input("itscale: llama_cpp_source needs a model (got a null pointer)");
    return m;
  }
  static const llama_cpp_source_options& validated(const llama_cpp_source_options& o) {
    o.validate();
    return o;
  }
  static std::size_t idx(handle h) noexcept { return static_cast<std::size_t>(h); }

  [[nodiscard]] llama_memory_t memory() const noexcept { return llama_get_memory(ctx_.get()); }

  std::string context_hint() const {
    return " (llama_cpp_source_options::max_context, default the model's training context; at most n_ctx = " +
           std::to_string(opts_.n_ctx) + ")";
  }

  void check_live(handle h, const std::string& what) const {
    if (h < 0 || static_cast<std::size_t>(h) >= alive_.size() || !alive_[idx(h)])
      throw invalid_input("itscale: llama_cpp_source: " + what + " = " + std::to_string(h) + " is not a live handle");
  }

  /// Throws before anything changes when fewer than `n` sequence ids are free.
  void need_ids(std::size_t n) const {
    if (free_.size() < n)
      throw backend_error("itscale: llama_cpp_source: out of sequence ids: " + std::to_string(n) + " needed, " +
                          std::to_string(free_.size()) + " free of n_seq_max = " + std::to_string(opts_.n_seq_max) +
                          " (raise llama_cpp_source_options::n_seq_max, at most 256, or give the search a smaller "
                          "handle budget)");
  }

  handle take_id() noexcept {  // need_ids ran first
    const handle h = free_.back();
    free_.pop_back();
    alive_[idx(h)] = 1;
    return h;
  }

  void give_back(handle h) noexcept {
    alive_[idx(h)] = 0;
    length_[idx(h)] = 0;
    free_.push_back(h);  // capacity n_seq_max reserved by the constructor's fill: cannot throw
  }

  /// Prepares a batch of `tokens` entries carrying `seq_ids` sequence ids in all.
  void begin_batch(std::size_t tokens, std::size_t seq_ids) {
    tok_.clear();
    pos_.clear();
    nseq_.clear();
    seqptr_.clear();
    out_.clear();
    seqs_.clear();
    tok_.reserve(tokens);
    pos_.reserve(tokens);
    nseq_.reserve(tokens);
    out_.reserve(tokens);
    seqs_.reserve(std::max(seq_ids, tokens));  // no reallocation: seqptr_ points into it
    seqptr_.reserve(tokens);
  }

  /// Appends a batch entry (its sequence ids follow with add_seq). Within begin_batch's
  /// reservation: cannot throw.
  void add(token_id t, std::size_t pos, bool want_logits) noexcept {
    tok_.push_back(t);
    pos_.push_back(static_cast<llama_pos>(pos));
    nseq_.push_back(0);
    seqptr_.push_back(seqs_.data() + seqs_.size());
    out_.push_back(want_logits ? 1 : 0);
  }
  /// Adds sequence id `s` to the last batch entry.
  void add_seq(handle s) noexcept {
    seqs_.push_back(s);
    ++nseq_.back();
  }

  /// Runs the batch; on failure removes the sequences `made` (their ids back to the pool) and
  /// throws with llama.cpp's limit named.
  void decode_or_undo(std::span<const handle> made) {
    llama_batch b{};
    b.n_tokens = static_cast<std::int32_t>(tok_.size());
    b.token = tok_.data();
    b.pos = pos_.data();
    b.n_seq_id = nseq_.data();
    b.seq_id = seqptr_.data();
    b.logits = out_.data();
    const std::int32_t rc = llama_decode(ctx_.get(), b);
    if (rc == 0) return;
    for (handle h : made) {
      llama_memory_seq_rm(memory(), h, -1, -1);
      give_back(h);
    }
    if (rc == 1)
      throw backend_error("itscale: llama_cpp_source: the KV cache is full: " + std::to_string(tok_.size()) +
                          " new cells do not fit in n_ctx = " + std::to_string(n_ctx_) +
                          " cells shared by all sequences (raise llama_cpp_source_options::n_ctx, or keep fewer "
                          "sequences alive)");
    throw backend_error("itscale: llama_cpp_source: llama_decode failed with code " + std::to_string(rc) +
                        (rc == 2 ? " (aborted)" : rc == -1 ? " (invalid batch)" : " (fatal; its log says why)"));
  }

  llama_cpp_model_ptr model_;
  std::unique_ptr<llama_context, context_free> ctx_;
  llama_cpp_source_options opts_;
  std::size_t vocab_ = 0, max_context_ = 0, n_ctx_ = 0;
  std::vector<unsigned char> alive_;  // per sequence id
  std::vector<std::size_t> length_;   // tokens per live sequence id
  std::vector<handle> free_;          // the pool of free ids (a stack)
  // The batch being built (llama_batch points into these) and extend's scratch.
  std::vector<llama_token> tok_;
  std::vector<llama_pos> pos_;
  std::vector<std::int32_t> nseq_;
  std::vector<llama_seq_id*> seqptr_;
  std::vector<llama_seq_id> seqs_;
  std::vector<std::int8_t> out_;
  std::vector<handle> made_;
  std::vector<std::size_t> first_of_;
  std::vector<float> copy_;  // rows of an extend with merged duplicates
  float* view_ = nullptr;
  std::size_t rows_ = 0;
};

static_assert(ScoringLogitSource<llama_cpp_source>);
static_assert(SourceWithCapacity<llama_cpp_source>);

ITSCALE_END_NAMESPACE
