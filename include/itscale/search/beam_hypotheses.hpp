#pragma once
/// \file beam_hypotheses.hpp
/// What the beam family returns — `search_result` (every prompt's sequences as `generation`s, the
/// compute spent, how the run ended), `beam_search_result` with per-prompt facts and, on request,
/// a trace of every step's candidates — and, internally, the bounded, score-ordered set of
/// finished hypotheses a search keeps per prompt (or per group).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE

/// What every search of the beam family returns: the sequences of all its prompts, ordered by
/// prompt, then rank (best first); `generation::request` is the prompt's index and
/// `generation::sample` its rank among that prompt's results. Iterates like the vector of
/// sequences (as `decode_result` does): for one prompt, `r[0]` is the best hypothesis.
struct search_result {
  std::vector<generation> sequences;
  compute_stats compute;                       ///< what the whole call spent (all prompts)
  run_status status = run_status::completed;   ///< budget_exhausted / cancelled if a limit cut a running prompt

  [[nodiscard]] std::size_t size() const noexcept { return sequences.size(); }
  [[nodiscard]] bool empty() const noexcept { return sequences.empty(); }
  [[nodiscard]] const generation& operator[](std::size_t i) const noexcept { return sequences[i]; }
  [[nodiscard]] generation& operator[](std::size_t i) noexcept { return sequences[i]; }
  [[nodiscard]] const generation& front() const noexcept { return sequences.front(); }
  [[nodiscard]] const generation& back() const noexcept { return sequences.back(); }
  [[nodiscard]] auto begin() const noexcept { return sequences.begin(); }
  [[nodiscard]] auto end() const noexcept { return sequences.end(); }
  [[nodiscard]] auto begin() noexcept { return sequences.begin(); }
  [[nodiscard]] auto end() noexcept { return sequences.end(); }
};

/// One of the top candidates of a step (see `beam_options::record_trace`).
struct beam_trace_candidate {
  std::size_t beam = 0;       ///< index of the parent among the step's running beams (of its group)
  token_id token = 0;
  float logprob = 0;          ///< the token's processed log-prob
  float score = 0;            ///< parent's running score + logprob
  bool finishes = false;      ///< the token is an EOS or the step reaches max_new_tokens
  bool kept_running = false;  ///< became a running beam of the next step
  bool kept_finished = false; ///< entered the finished hypotheses (it may be displaced later)
};

/// The candidates of one step (of one group, for diverse beam search), best first.
struct beam_trace_step {
  std::size_t step = 0;                 ///< 0 for the first generated token
  std::size_t group = 0;                ///< the beam group (always 0 for `beam_search`)
  std::size_t running_beams = 0;        ///< how many beams were expanded
  std::vector<beam_trace_candidate> candidates;
};

/// One prompt's part of a beam-search result.
struct beam_prompt_result {
  std::size_t first = 0;   ///< index of its first hypothesis in `sequences`
  std::size_t count = 0;   ///< how many hypotheses it has there
  std::size_t steps = 0;   ///< tokens generated before its search ended
  /// `completed` if its search reached its own end; `budget_exhausted` / `cancelled` if the run's
  /// budget cut it while it still ran (then its finished hypotheses come first and running beams
  /// fill the remaining places, with `stop_reason::budget` / `cancelled`).
  run_status status = run_status::completed;
  std::vector<beam_trace_step> trace;   ///< empty unless `record_trace`; (step, group) entries, groups in turn
};

/// What `beam_search` returns. Each hypothesis is a `generation`: `tokens` (the EOS, if any,
/// included), `logprobs` (each token's log-prob after the processors, what the search ranks
/// by), `logprob_sum` (their sum accumulated in float left to right, as HF does, held exactly in
/// the double), `score` (logprob_sum / tokens.size()^length_penalty rounded to float as HF's
/// `sequences_scores`), `stop` (`eos`, `max_new_tokens`, or `budget` / `cancelled` for a running
/// beam returned by a cut run).
struct beam_search_result : search_result {
  std::vector<beam_prompt_result> prompts;  ///< one per prompt, in order

  /// Prompt `p`'s hypotheses, best first (precondition: p < prompts.size()).
  [[nodiscard]] std::span<const generation> hypotheses(std::size_t p) const noexcept {
    return std::span<const generation>(sequences).subspan(prompts[p].first, prompts[p].count);
  }
};

namespace detail {

/// A finished hypothesis while the search runs: its last token's node in the search's
/// `token_tree` (the tokens are read back only for the hypotheses returned) and its scores in
/// float, as HF keeps them.
struct finished_entry {
  float score = 0;        ///< logprob_sum / length^length_penalty
  float logprob_sum = 0;
  std::size_t node = 0;
  stop_reason stop = stop_reason::max_new_tokens;
};

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
  void add(const finished_entry& h) {
    const auto at = std::upper_bound(items_.begin(), items_.end(), h.score,
                                     [](float s, const finished_entry& x) { return s > x.score; });
    items_.insert(at, h);
    if (items_.size() > capacity_) items_.pop_back();
  }

  [[nodiscard]] bool full() const noexcept { return items_.size() == capacity_; }
  [[nodiscard]] std::size_t size() const noexcept { return items_.size(); }
  [[nodiscard]] const finished_entry& worst() const noexcept { return items_.back(); }
  /// Best first.
  [[nodiscard]] std::span<const finished_entry> items() const noexcept { return items_; }

 private:
  std::size_t capacity_;
  std::vector<finished_entry> items_;
};

}  // namespace detail
ITSCALE_END_NAMESPACE
