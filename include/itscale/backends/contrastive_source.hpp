#pragma once
/// \file contrastive_source.hpp
/// Contrastive decoding (Li et al. 2023, "Contrastive Decoding: Open-ended Text Generation as
/// Optimization") as a `LogitSource`: an expert and an amateur over one vocabulary, whose rows are
///
///     score(t) = lp_expert(t) - alpha * lp_amateur(t)   if p_expert(t) >= beta * max_t' p_expert(t')
///     score(t) = -inf                                   otherwise (the plausibility mask)
///
/// with lp = log_softmax of each member's row. Li et al.'s objective is alpha = 1 with their
/// plausibility threshold (their alpha) = this beta = 0.1; O'Brien and Lewis 2023's
/// `(1 + b) lp_expert - b lp_amateur` is alpha = b / (1 + b) at temperature 1 / (1 + b).
///
/// The rows are scores, not log-probs: decoders and searches treat them as logits (greedy takes
/// their argmax, sampling and beam search their log-softmax). With alpha = 0 they are the
/// expert's log-probs under the mask. The mask is min-p on the expert (threshold max + ln beta,
/// `kernels::min_p_threshold`), so beta = 1 keeps only the expert's top token(s) and beta = 0
/// keeps every token the expert does not mask. A plausible token the amateur masks (-inf) would
/// score +inf: its amateur log-prob is taken as ln(2^-149), the log of the smallest float
/// probability, which keeps every score finite.
///
///     auto cd = itscale::make_contrastive(expert, amateur, {.alpha = 0.5, .beta = 0.1});
///     auto out = itscale::generate(cd, prompts, {.stop = {.max_new_tokens = 64}});
///
/// Members (lvalues borrowed, rvalues owned), handles, all-or-nothing calls and capabilities
/// (`extend_span`, `capacity`) as in `ensemble_source`: one call on the combinator is one call on
/// the expert, then one on the amateur.

#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/backends/support/member_set.hpp"
#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/filters.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Options of `contrastive_source`.
struct contrastive_options {
  double alpha = 1.0;  ///< weight of the amateur's log-prob, in [0, 1e6]
  double beta = 0.1;   ///< plausibility threshold relative to the expert's top probability, in [0, 1]

  /// Throws `invalid_option` for alpha or beta outside its range (or NaN).
  void validate() const {
    if (!(alpha >= 0 && alpha <= 1e6))
      throw invalid_option("itscale: contrastive_options.alpha = " + detail::num(alpha) + " must be in [0, 1e6]");
    if (!(beta >= 0 && beta <= 1))
      throw invalid_option("itscale: contrastive_options.beta = " + detail::num(beta) + " must be in [0, 1]");
  }
};

/// Contrastive decoding as a `LogitSource`. See the file comment. Build it with `make_contrastive`.
template <CombinatorMember E, CombinatorMember A>
class contrastive_source : public detail::combined_source<contrastive_source<E, A>, E, A> {
  using base = detail::combined_source<contrastive_source<E, A>, E, A>;
  friend base;

 public:
  static constexpr const char* name = "contrastive_source";

  /// Throws `invalid_option` for bad options, `invalid_input` when the vocabulary sizes differ.
  template <class EA, class AA>
  contrastive_source(EA&& expert, AA&& amateur, const contrastive_options& opts)
      : base(std::forward<EA>(expert), std::forward<AA>(amateur)), opts_((opts.validate(), opts)),
        alpha_(static_cast<float>(opts.alpha)), beta_(static_cast<float>(opts.beta)) {}
  contrastive_source(contrastive_source&&) = default;

  [[nodiscard]] const contrastive_options& options() const noexcept { return opts_; }
  [[nodiscard]] auto& expert() noexcept { return this->template member<0>(); }
  [[nodiscard]] auto& amateur() noexcept { return this->template member<1>(); }

 private:
  void begin_rows(std::span<float>, std::size_t n) {
    scratch_.resize(this->vocab_size());
    rows_ = n;
  }

  // The expert's log-probs go straight to the output rows; the amateur's are then subtracted on
  // the plausible tokens.
  void fold(std::size_t k, const logits_view& v, std::span<float> out) noexcept {
    const std::size_t vocab = v.vocab;
    for (std::size_t r = 0; r < rows_; ++r) {
      const std::span<float> row = out.subspan(r * vocab, vocab);
      if (k == 0) {
        detail::log_softmax_or_masked(v.row(r), row);
        continue;
      }
      detail::log_softmax_or_masked(v.row(r), scratch_);
      const float threshold = kernels::min_p_threshold(row, beta_);
      const float floor = detail::min_subtracted_logprob;
      for (std::size_t t = 0; t < vocab; ++t) {
        const float e = row[t];
        const float a = scratch_[t] < floor ? floor : scratch_[t];
        // A token the expert masks stays masked even when beta = 0 lets everything through.
        row[t] = (e >= threshold && e != masked_logit) ? e - alpha_ * a : masked_logit;
      }
    }
  }

  void finish(std::span<float>, std::size_t) noexcept {}

  contrastive_options opts_;
  float alpha_, beta_;
  std::vector<float> scratch_;
  std::size_t rows_ = 0;
};

template <class EA, class AA>
contrastive_source(EA&&, AA&&, const contrastive_options&) -> contrastive_source<EA, AA>;

/// Contrastive decoding of `expert` against `amateur` (lvalues borrowed, rvalues moved in).
/// Throws as the constructor.
template <CombinatorMember E, CombinatorMember A>
[[nodiscard]] contrastive_source<E, A> make_contrastive(E&& expert, A&& amateur, const contrastive_options& opts = {}) {
  return contrastive_source<E, A>(std::forward<E>(expert), std::forward<A>(amateur), opts);
}

ITSCALE_END_NAMESPACE
