#pragma once
/// \file cfg_source.hpp
/// Classifier-free guidance for language models (Sanchez et al. 2023, "Stay on topic with
/// Classifier-Free Guidance") as a `LogitSource`. Each handle owns two sequences of one model: the
/// conditional one (the prompt given to `prefill`, then the generated tokens) and the
/// unconditional one (the `unconditional_prompt` of the options — a BOS-only prompt, or a negative
/// prompt — then the same generated tokens). Rows, with lp = log_softmax of the model's row:
///
///     row(t) = lp_uncond(t) + gamma * (lp_cond(t) - lp_uncond(t))
///            = gamma * lp_cond(t) + (1 - gamma) * lp_uncond(t)     (computed in this form)
///
/// gamma = 1 gives the conditional log-probs exactly, gamma = 0 the unconditional ones, gamma > 1
/// pushes away from the unconditional distribution (the paper uses 1.25 to 3). The rows are
/// scores, not log-probs (decoders and searches treat them as logits). For gamma > 1 a token the
/// unconditional sequence masks (-inf) would score +inf: its log-prob is taken as ln(2^-149), the
/// log of the smallest float probability. For gamma < 1 a token masked by either sequence (with a
/// positive coefficient) stays masked.
///
///     auto guided = itscale::make_cfg(model, {.gamma = 1.5, .unconditional_prompt = {1}});
///     auto out = itscale::generate(guided, prompts, opts);
///
/// Calls: one `extend` on the combinator is one batched `extend` of 2n rows on the model (the n
/// conditional then the n unconditional children). `prefill(prompt)` is one model prefill: the
/// unconditional prompt is prefilled once and shared (reference-counted) by every handle made by
/// `prefill` until each is extended; `prefill(prompt, unconditional)` prefills a handle's own
/// unconditional prompt (two model prefills). Every call is all-or-nothing; the model returning
/// NaN or +inf is a `backend_error`. The model is borrowed (lvalue, must outlive the combinator)
/// or owned (rvalue, moved in).
///
/// Unlike a plain source, a guided sequence's rows depend on where its prompt ended, not only on
/// its tokens: prefilling prompt + generated tokens as one prompt restarts the unconditional
/// sequence at the unconditional prompt. A search that gives handles back and rebuilds sequences
/// must rebuild them as prefill(prompt) + extends (or `extend_span`), not as one prefill.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/backends/support/member_set.hpp"
#include "itscale/core/abi.hpp"
#include "itscale/core/detail/validate_tokens.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Options of `cfg_source`.
struct cfg_options {
  double gamma = 1.5;                               ///< guidance scale, in [0, 1e6]; 1 = no guidance
  std::vector<token_id> unconditional_prompt = {};  ///< non-empty, inside the vocabulary (e.g. `{bos}`)

  /// Throws `invalid_option` for gamma outside [0, 1e6] (or NaN) or an empty unconditional prompt.
  void validate() const {
    if (!(gamma >= 0 && gamma <= 1e6))
      throw invalid_option("itscale: cfg_options.gamma = " + detail::num(gamma) + " must be in [0, 1e6]");
    if (unconditional_prompt.empty())
      throw invalid_option("itscale: cfg_options.unconditional_prompt is empty: give at least one token (e.g. BOS)");
  }
  /// `validate()` plus: the unconditional prompt is inside a vocabulary of `vocab` tokens.
  void validate(std::size_t vocab) const {
    validate();
    for (std::size_t i = 0; i < unconditional_prompt.size(); ++i) {
      const token_id t = unconditional_prompt[i];
      if (t < 0 || static_cast<std::size_t>(t) >= vocab)
        throw invalid_option("itscale: cfg_options.unconditional_prompt[" + std::to_string(i) + "] = " +
                             std::to_string(t) + " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
  }
};

/// Classifier-free guidance as a `LogitSource`. See the file comment. Build it with `make_cfg`.
template <CombinatorMember M>
class cfg_source {
  using model_type = detail::member_source_t<M>;
  using mhandle = handle_t<model_type>;

 public:
  using handle = std::uint32_t;
  static constexpr const char* name = "cfg_source";

  /// Throws `invalid_option` for bad options (the unconditional prompt checked against the
  /// model's vocabulary).
  template <class Arg>
  cfg_source(Arg&& model, cfg_options opts)
      : model_(std::forward<Arg>(model)), opts_((opts.validate(model_.vocab_size()), std::move(opts))),
        vocab_(model_.vocab_size()) {
    c_cond_ = static_cast<float>(opts_.gamma);
    c_uncond_ = static_cast<float>(1.0 - opts_.gamma);
    root_lp_.assign(vocab_, 0.0f);
    cond_lp_.assign(vocab_, 0.0f);
    uncond_lp_.assign(vocab_, 0.0f);
    const source_capacity m = capacity_of(model_);
    if (m.max_live_sequences == 1)
      throw invalid_input("itscale: cfg_source: the model holds 1 live sequence; each guided handle needs 2");
    if (m.max_context != 0 && opts_.unconditional_prompt.size() > m.max_context)
      throw invalid_option("itscale: cfg_options.unconditional_prompt has " +
                           std::to_string(opts_.unconditional_prompt.size()) + " tokens, more than the model's context (" +
                           std::to_string(m.max_context) + ")");
    capacity_.max_live_sequences = m.max_live_sequences / 2;
    // A handle of n tokens made from a prompt of p >= 1 tokens has an unconditional sequence of
    // n - p + |unconditional_prompt| <= n + |unconditional_prompt| - 1 tokens.
    if (m.max_context != 0) capacity_.max_context = m.max_context - (opts_.unconditional_prompt.size() - 1);
  }
  cfg_source(cfg_source&& o) noexcept(std::is_nothrow_move_constructible_v<M>)
      : model_(std::forward<M>(o.model_)), opts_(std::move(o.opts_)), vocab_(o.vocab_), c_cond_(o.c_cond_),
        c_uncond_(o.c_uncond_), capacity_(o.capacity_), table_(std::exchange(o.table_, {})), root_(o.root_),
        root_refs_(std::exchange(o.root_refs_, 0)), root_lp_(std::move(o.root_lp_)), cond_lp_(std::move(o.cond_lp_)),
        uncond_lp_(std::move(o.uncond_lp_)), out_(std::move(o.out_)),
        rows_(std::exchange(o.rows_, 0)) {}
  cfg_source& operator=(cfg_source&&) = delete;
  cfg_source(const cfg_source&) = delete;
  cfg_source& operator=(const cfg_source&) = delete;
  /// Releases the model handles of every handle still live.
  ~cfg_source() {
    table_.drain([this](const entry& e) { drop(e); });
  }

  [[nodiscard]] std::size_t vocab_size() const noexcept { return vocab_; }

  /// The conditional sequence is `prompt`; the unconditional one is the options' prompt, shared.
  handle prefill(std::span<const token_id> prompt) {
    check_prompt(prompt, "prompt");
    check_length(prompt.size());
    reserve(1, 1);
    const bool made_root = root_refs_ == 0;
    if (made_root) {
      root_ = model_.prefill(opts_.unconditional_prompt);
      try {
        detail::log_softmax_or_masked(read(1, "the unconditional prompt").row(0), root_lp_);
      } catch (...) {
        model_.release(root_);
        throw;
      }
    }
    const mhandle c = [&] {
      try {
        return model_.prefill(prompt);
      } catch (...) {
        if (made_root) model_.release(root_);
        throw;
      }
    }();
    logits_view cv;
    try {
      cv = read(1, "the conditional prompt");
    } catch (...) {
      model_.release(c);
      if (made_root) model_.release(root_);
      throw;
    }
    return finish_prefill({c, root_, true, prompt.size()}, cv.row(0), root_lp_);
  }

  /// A handle whose unconditional sequence is `unconditional` (e.g. a per-request negative prompt)
  /// instead of the options' prompt: two model prefills.
  handle prefill(std::span<const token_id> prompt, std::span<const token_id> unconditional) {
    check_prompt(prompt, "prompt");
    check_prompt(unconditional, "unconditional prompt");
    check_length(prompt.size());
    reserve(1, 1);
    const mhandle u = model_.prefill(unconditional);
    mhandle c{};
    try {
      detail::log_softmax_or_masked(read(1, "the unconditional prompt").row(0), uncond_lp_);
      c = model_.prefill(prompt);
    } catch (...) {
      model_.release(u);
      throw;
    }
    logits_view cv;
    try {
      cv = read(1, "the conditional prompt");
    } catch (...) {
      model_.release(c);
      model_.release(u);
      throw;
    }
    return finish_prefill({c, u, false, prompt.size()}, cv.row(0), uncond_lp_);
  }

  /// One batched `extend` of 2n rows on the model: the conditional children, then the
  /// unconditional ones. All-or-nothing.
  void extend(std::span<const handle> parents, std::span<const token_id> tokens, std::span<handle> children) {
    detail::check_extend_shape(parents.size(), tokens.size(), children.size());
    detail::check_tokens(tokens, vocab_, "tokens");
    const std::size_t n = parents.size();
    // assign, not resize: every element is overwritten below, and g++ 12 -O3 reports a
    // false stringop-overflow in resize's relocation path (-Werror in CI).
    parents2_.assign(2 * n, mhandle{});
    tokens2_.assign(2 * n, token_id{});
    kids2_.assign(2 * n, mhandle{});
    lengths_.assign(n, std::size_t{0});
    for (std::size_t i = 0; i < n; ++i) {
      const entry& e = table_.at(parents[i], name);  // a dead parent throws before the model is called
      check_length(e.length + 1);
      parents2_[i] = e.cond;
      parents2_[n + i] = e.uncond;
      tokens2_[i] = tokens2_[n + i] = tokens[i];
      lengths_[i] = e.length + 1;
    }
    reserve(n, n);
    model_.extend(parents2_, tokens2_, kids2_);
    logits_view v;
    try {
      v = read(2 * n, "the model");
    } catch (...) {
      for (mhandle h : kids2_) model_.release(h);
      throw;
    }
    for (std::size_t r = 0; r < n; ++r) {
      detail::log_softmax_or_masked(v.row(r), cond_lp_);
      detail::log_softmax_or_masked(v.row(n + r), uncond_lp_);
      combine(cond_lp_, uncond_lp_, std::span<float>(out_.data() + r * vocab_, vocab_));
    }
    rows_ = n;
    for (std::size_t i = 0; i < n; ++i) children[i] = table_.acquire({kids2_[i], kids2_[n + i], false, lengths_[i]});
  }

  /// Teacher forcing when the model can: one `extend_span` for each of the two sequences; one row
  /// per prefix. All-or-nothing.
  handle extend_span(handle parent, std::span<const token_id> tokens)
    requires ScoringLogitSource<model_type>
  {
    if (tokens.empty()) throw invalid_input("itscale: cfg_source: extend_span needs at least one token");
    detail::check_tokens(tokens, vocab_, "tokens");
    const entry e = table_.at(parent, name);
    const std::size_t n = tokens.size();
    check_length(e.length + n);
    reserve(1, n);
    span_cond_.resize(n * vocab_);
    const mhandle c = model_.extend_span(e.cond, tokens);
    mhandle u{};
    try {
      const logits_view v = read(n, "the model");
      for (std::size_t r = 0; r < n; ++r)
        detail::log_softmax_or_masked(v.row(r), std::span<float>(span_cond_.data() + r * vocab_, vocab_));
      u = model_.extend_span(e.uncond, tokens);
    } catch (...) {
      model_.release(c);
      throw;
    }
    logits_view v;
    try {
      v = read(n, "the model");
    } catch (...) {
      model_.release(u);
      model_.release(c);
      throw;
    }
    for (std::size_t r = 0; r < n; ++r) {
      detail::log_softmax_or_masked(v.row(r), uncond_lp_);
      combine(std::span<const float>(span_cond_.data() + r * vocab_, vocab_), uncond_lp_,
              std::span<float>(out_.data() + r * vocab_, vocab_));
    }
    rows_ = n;
    return table_.acquire({c, u, false, e.length + n});
  }

  [[nodiscard]] logits_view logits() noexcept { return {out_.data(), rows_, vocab_}; }

  /// Releases both sequences of `h` (the shared unconditional prompt when its last user goes).
  void release(handle h) noexcept {
    entry e{};
    if (table_.take(h, e)) drop(e);
  }

  /// Number of live handles of the combinator (each holds two sequences of the model).
  [[nodiscard]] std::size_t live_handles() const noexcept { return table_.size(); }

  /// The limits, when the model declares some: half its live sequences (each handle holds two),
  /// and the longest conditional sequence whose unconditional sequence (from the options' prompt)
  /// still fits the model's context: `max_context - (|unconditional_prompt| - 1)`, enforced here
  /// (`invalid_input`, nothing created). Handles made with their own unconditional prompt may be
  /// rejected earlier by the model, when that prompt is longer.
  [[nodiscard]] source_capacity capacity() const noexcept
    requires SourceWithCapacity<model_type>
  {
    return capacity_;
  }

  [[nodiscard]] model_type& model() noexcept { return model_; }
  [[nodiscard]] const cfg_options& options() const noexcept { return opts_; }

 private:
  struct entry {
    mhandle cond{};
    mhandle uncond{};
    bool shared = false;     // uncond is the shared root (reference-counted)
    std::size_t length = 0;  // tokens of the conditional sequence
  };

  void check_prompt(std::span<const token_id> p, const char* what) const {
    if (p.empty()) throw invalid_input(std::string("itscale: cfg_source: ") + what + " is empty");
    detail::check_tokens(p, vocab_, what);
  }

  // Room for `count` new handles and `rows` output rows, before the model is called.
  void reserve(std::size_t count, std::size_t rows) {
    table_.reserve(count);
    out_.resize(rows * vocab_);
    rows_ = 0;
  }

  // Reads and checks the model's view after a call. The one read of each call: the model's
  // `logits()` may throw (the concept does not forbid it), so it is only called where the new
  // handles are still released on failure, and the view is passed on from here.
  logits_view read(std::size_t rows, const char* what) {
    const logits_view v = model_.logits();
    detail::check_member_rows(v, rows, vocab_, name, what);
    return v;
  }

  handle finish_prefill(const entry& e, std::span<const float> cond_row, std::span<const float> uncond_lp) noexcept {
    detail::log_softmax_or_masked(cond_row, cond_lp_);
    combine(cond_lp_, uncond_lp, std::span<float>(out_.data(), vocab_));
    rows_ = 1;
    if (e.shared) ++root_refs_;
    return table_.acquire(e);
  }

  // The declared context (see `capacity`): `invalid_input` for a longer conditional sequence.
  void check_length(std::size_t n) const {
    if (capacity_.max_context != 0 && n > capacity_.max_context)
      throw invalid_input("itscale: cfg_source: a sequence of " + std::to_string(n) + " tokens exceeds the context of " +
                          std::to_string(capacity_.max_context) + " (the model's, less the unconditional prompt's length - 1)");
  }

  // gamma * cond + (1 - gamma) * uncond, without inf - inf (see the file comment).
  void combine(std::span<const float> cond, std::span<const float> uncond, std::span<float> out) const noexcept {
    if (opts_.gamma == 1) {
      std::copy(cond.begin(), cond.end(), out.begin());
      return;
    }
    if (opts_.gamma == 0) {
      std::copy(uncond.begin(), uncond.end(), out.begin());
      return;
    }
    const float g = c_cond_, h = c_uncond_, floor = detail::min_subtracted_logprob;
    if (h < 0) {
      for (std::size_t t = 0; t < out.size(); ++t) out[t] = g * cond[t] + h * (uncond[t] < floor ? floor : uncond[t]);
    } else {
      for (std::size_t t = 0; t < out.size(); ++t) out[t] = g * cond[t] + h * uncond[t];
    }
  }

  void drop(const entry& e) noexcept {
    model_.release(e.cond);
    if (!e.shared) model_.release(e.uncond);
    else if (--root_refs_ == 0) model_.release(root_);
  }

  M model_;
  cfg_options opts_;
  std::size_t vocab_;
  float c_cond_ = 1, c_uncond_ = 0;
  source_capacity capacity_{};
  detail::handle_table<entry> table_;
  mhandle root_{};
  std::size_t root_refs_ = 0;
  std::vector<float> root_lp_, cond_lp_, uncond_lp_, span_cond_, out_;
  std::vector<mhandle> parents2_, kids2_;
  std::vector<std::size_t> lengths_;
  std::vector<token_id> tokens2_;
  std::size_t rows_ = 0;
};

template <class Arg>
cfg_source(Arg&&, cfg_options) -> cfg_source<Arg>;

/// Classifier-free guidance on `model` (lvalue borrowed, rvalue moved in). Throws as the
/// constructor.
template <CombinatorMember M>
[[nodiscard]] cfg_source<M> make_cfg(M&& model, cfg_options opts) {
  return cfg_source<M>(std::forward<M>(model), std::move(opts));
}

ITSCALE_END_NAMESPACE
