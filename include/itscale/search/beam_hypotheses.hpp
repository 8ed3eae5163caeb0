#pragma once
/// \file beam_hypotheses.hpp
/// What beam search returns — finished hypotheses and, on request, a trace of every step's
/// candidates — and the bounded, score-ordered set of finished hypotheses it keeps per prompt.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "itscale/core/types.hpp"
#include "itscale/decode/generation.hpp"

namespace itscale {
inline namespace v0 {

/// One finished hypothesis.
struct beam_hypothesis {
  std::vector<token_id> tokens;    ///< generated tokens (prompt excluded; the EOS, if any, included)
  std::vector<float> logprobs;     ///< each token's log-prob after the processors (what the search ranks by)
  float logprob_sum = 0;           ///< their sum, accumulated in float left to right (as HF does)
  float score = 0;                 ///< logprob_sum / tokens.size()^length_penalty (HF's `sequences_scores`)
  stop_reason stop = stop_reason::max_new_tokens;  ///< `eos` or `max_new_tokens`
};

/// One of the top candidates of a step (see `beam_options::record_trace`).
struct beam_trace_candidate {
  std::size_t beam = 0;       ///< index of the parent among the step's running beams
  token_id token = 0;
  float logprob = 0;          ///< the token's processed log-prob
  float score = 0;            ///< parent's running score + logprob
  bool finishes = false;      ///< the token is an EOS or the step reaches max_new_tokens
  bool kept_running = false;  ///< became a running beam of the next step
  bool kept_finished = false; ///< entered the finished hypotheses (it may be displaced later)
};

/// The candidates of one step, best first.
struct beam_trace_step {
  std::size_t step = 0;                 ///< 0 for the first generated token
  std::size_t running_beams = 0;        ///< how many beams were expanded
  std::vector<beam_trace_candidate> candidates;
};

/// The result for one prompt.
struct beam_search_result {
  std::vector<beam_hypothesis> hypotheses;  ///< best first; `num_return_sequences` of them (fewer only if masking left fewer)
  std::size_t steps = 0;                    ///< tokens generated before the search of this prompt ended
  std::vector<beam_trace_step> trace;       ///< empty unless `record_trace`
};

namespace detail {

/// The best `capacity` finished hypotheses, best first. Among equal scores the one offered first
/// stays ahead (HF merges the old finished set before the new candidates).
class finished_hypotheses {
 public:
  explicit finished_hypotheses(std::size_t capacity) : capacity_(capacity) { items_.reserve(capacity + 1); }

  /// True if a hypothesis with this score would be kept.
  [[nodiscard]] bool accepts(float score) const noexcept {
    return items_.size() < capacity_ || score > items_.back().score;
  }

  /// Inserts `h` (call only if `accepts(h.score)`), dropping the worst if over capacity.
  void add(beam_hypothesis h) {
    const auto at = std::upper_bound(items_.begin(), items_.end(), h.score,
                                     [](float s, const beam_hypothesis& x) { return s > x.score; });
    items_.insert(at, std::move(h));
    if (items_.size() > capacity_) items_.pop_back();
  }

  [[nodiscard]] bool full() const noexcept { return items_.size() == capacity_; }
  [[nodiscard]] std::size_t size() const noexcept { return items_.size(); }
  [[nodiscard]] const beam_hypothesis& worst() const noexcept { return items_.back(); }

  /// Moves out the best `n` (or all, if fewer).
  [[nodiscard]] std::vector<beam_hypothesis> take_best(std::size_t n) {
    if (items_.size() > n) items_.resize(n);
    return std::move(items_);
  }

 private:
  std::size_t capacity_;
  std::vector<beam_hypothesis> items_;
};

}  // namespace detail
}  // namespace v0
}  // namespace itscale
