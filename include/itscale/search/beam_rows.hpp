#pragma once
/// \file beam_rows.hpp
/// Internal: what beam search does to a source row before selection — log-softmax, then the
/// processors, as HF does — with the SIMD kernels and bit for bit HF's float32 arithmetic.
///
/// HF scores a candidate as `beam_score + ((x - max) - log(sum))` in float32 (PyTorch's CPU
/// log-softmax subtracts the max, then the log of the sum). Each row is therefore stored shifted,
/// d = x - max (the one rounding torch also makes), and log(sum exp d) is `kernels::logsumexp` of
/// the shifted row: its max is exactly 0, so the kernel adds nothing to the log of the sum. Then:
///
/// - fused (no processor changes values: no repetition penalty, no user processor): the row keeps
///   d, the masks (no-repeat-n-gram, min-new-tokens) are applied to it — a -inf stays -inf after
///   the subtraction, so masking before or after it is the same — and selection scores
///   `(d - lse) + beam_score` (`select_beam_candidates` with `sub`): the log-probs are never
///   written, only the winners' are computed;
/// - written (otherwise): the row becomes the log-probs d - lse (`kernels::log_softmax` of the
///   shifted row) before the processors, and selection subtracts 0, which changes no value.
///
/// Either way candidate (r, t) scores `beam_score + (row[t] - sub(r))` with the same roundings.

#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/types.hpp"
#include "itscale/core/detail/source_rows.hpp"
#include "itscale/processors/chain.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/softmax.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/processors/sampling_chain.hpp"
#include "itscale/processors/sampling_options.hpp"
#include "itscale/search/beam_options.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

/// The built-in processors of beam search, as a `sampling_chain` without warpers.
inline sampling_options beam_processor_options(const beam_options& o) {
  sampling_options s;
  s.stop = o.stop;
  s.repetition_penalty = o.repetition_penalty;
  s.no_repeat_ngram_size = o.no_repeat_ngram_size;
  s.do_sample = false;
  return s;
}

/// Stores `row - max(row)` in place and returns log(sum(exp(row - max))), both rounded as torch
/// rounds them; `-inf` (row untouched) when every entry is `-inf`.
inline float shift_to_max(std::span<float> row) noexcept {
  const float m = kernels::max(row);
  if (m == -std::numeric_limits<float>::infinity()) return m;
  for (float& x : row) x -= m;
  return kernels::logsumexp(row);
}

/// In-place log-softmax with PyTorch's association, (x - max) - log(sum exp(x - max)), so that
/// equal and nearly equal log-probs round as they do in HF. Returns false (row untouched) when
/// every entry is `-inf`.
inline bool log_softmax_like_torch(std::span<float> row) noexcept {
  const float m = kernels::max(row);
  if (m == -std::numeric_limits<float>::infinity()) return false;
  for (float& x : row) x -= m;
  kernels::log_softmax(row);  // of the shifted row: subtracts exactly log(sum exp(d))
  return true;
}

/// Processors that change no value: with these the fused path is exact.
template <class P>
inline constexpr bool processor_is_identity =
    std::is_same_v<P, logits_processor_archetype> || std::is_same_v<P, stateful_logits_processor_archetype>;

/// Prepares each row of a step once (the first step's placeholder beams share the prompt's row)
/// and remembers what selection must subtract from it.
template <AnyLogitsProcessor P>
class beam_rows {
 public:
  using state = typename state_of<P>::type;

  beam_rows(const beam_options& o, const P& user, std::size_t vocab)
      : chain_(beam_processor_options(o)), user_(user), fused_(processor_is_identity<P> && o.repetition_penalty == 1.0f) {
    ws_.reserve(vocab);
  }

  /// True when a processor reads the beams' tokens (repetition penalty, no-repeat-n-gram, or a
  /// caller's processor, which may): only then does the search keep each beam's prompt and
  /// generated tokens contiguous. Otherwise `prepare` only needs the generated count.
  [[nodiscard]] bool reads_tokens() const noexcept { return chain_.reads_tokens() || !processor_is_identity<P>; }

  /// A new step whose view has `rows` rows, none prepared.
  void begin_step(std::size_t rows) {
    sub_.assign(rows, 0.0f);
    ready_.assign(rows, 0);
  }

  /// Prepares row `r` (= `row`) of a beam with tokens `tokens` (prompt included) and user state
  /// `st`, unless done already this step; returns what selection subtracts from it. Throws
  /// `search_error` if the source masked the whole row (`step`, `prompt` name it).
  float prepare(std::span<float> row, std::size_t r, std::span<const token_id> tokens, std::size_t prompt_length,
                const state& st, std::size_t step, std::size_t prompt) {
    if (ready_[r]) return sub_[r];
    ready_[r] = 1;
    const step_context ctx{tokens, prompt_length, &ws_};
    if (fused_) {
      const float lse = shift_to_max(row);
      if (lse == -std::numeric_limits<float>::infinity()) masked(step, prompt);
      chain_.apply_processors(row, ctx);  // masks only (see `fused_`)
      sub_[r] = lse;
      return lse;
    }
    if (!log_softmax_like_torch(row)) masked(step, prompt);
    chain_.apply_processors(row, ctx);
    if constexpr (StatefulLogitsProcessor<P>)
      user_.apply(row, ctx, st);
    else
      user_.apply(row, ctx);
    return 0.0f;
  }

 private:
  [[noreturn]] static void masked(std::size_t step, std::size_t prompt) {
    throw search_error("itscale: the source masked every token at step " + std::to_string(step) + " of prompt " +
                       std::to_string(prompt));
  }

  sampling_chain chain_;
  const P& user_;
  workspace ws_;
  // Only the masks of no-repeat-n-gram and min-new-tokens remain when the repetition penalty is
  // off and the user's processor is an archetype.
  bool fused_;
  std::vector<float> sub_;
  std::vector<char> ready_;
};

}  // namespace detail
ITSCALE_END_NAMESPACE
