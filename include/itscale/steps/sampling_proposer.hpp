#pragma once
/// \file sampling_proposer.hpp
/// The step proposer over any `LogitSource`: a node's candidate steps are samples of its
/// continuation (a `sampling_options` chain) until a step delimiter, EOS or `max_step_tokens`.
///
///     itscale::sampling_proposer prop(model, {.sampling = {.do_sample = true, .seed = 7, .temperature = 0.7f},
///                                             .delimiters = {{semicolon}}, .eos_token_id = {2}});
///     auto root = prop.root(prompt);
///     auto steps = prop.propose(items, 8);  // 8 samples per node, identical steps merged
///
/// One `propose` is one batched `generate` over every node of the batch (one per distinct step
/// limit or sample count when those differ): node i's samples fork its handle and draw from the
/// streams (seed, id_i, drawn_i + j), so a node's candidates do not depend on the batch. Each
/// non-terminal candidate's state comes back live (`run_options::keep_handles`): its handle holds
/// every token of the step and its row is the next-token row, so expanding it again evaluates
/// nothing twice. Duplicates' handles are released at once; a terminal candidate keeps its tokens
/// only. (The handed-back state costs one row per sample, also for the samples that end with EOS.)
///
/// A step is terminal when it ends with EOS, when the sequence reaches `max_sequence_tokens`, or
/// when the caller's `ends_sequence` says so. A step cut at `max_step_tokens` without a delimiter is
/// not terminal (a long step continues).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/live.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/logit_source_archetype.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/decode/generate.hpp"
#include "itscale/processors/sampling_options.hpp"
#include "itscale/steps/detail/source_proposer.hpp"
#include "itscale/steps/step_proposer.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Options of `sampling_proposer`. Designated initialisers, one `validate()`.
struct sampling_proposer_options {
  /// The token chain (processors and warpers, seed). Its `stop` and `num_return_sequences` stay at
  /// their defaults: the step rules below replace them. Greedy (`do_sample = false`) proposes one
  /// step per node, with the requested sample count.
  sampling_options sampling = {.do_sample = true};
  std::vector<std::vector<token_id>> delimiters = {};  ///< a step ends with any of them (kept); non-empty
  std::vector<token_id> eos_token_id = {};             ///< a step ending with one is terminal (kept)
  std::size_t max_step_tokens = 64;                    ///< >= 1; longer steps are cut (not terminal)
  std::size_t max_sequence_tokens = 0;                 ///< prompt included; reaching it is terminal; 0 = none
  sequence_predicate ends_sequence = {};               ///< optional: true for a finished sequence (whole tokens)

  /// Rules that do not depend on the vocabulary; throws `invalid_option` naming the rule.
  void validate() const {
    const auto fail = [](const std::string& what) { throw invalid_option("itscale: sampling_proposer_options." + what); };
    if (delimiters.empty()) fail("delimiters is empty: give at least one step delimiter (e.g. the token of \";\")");
    if (max_step_tokens == 0) fail("max_step_tokens must be >= 1, got 0");
    const stopping def{};
    const stopping& st = sampling.stop;
    if (!st.eos_token_id.empty() || !st.stop_sequences.empty() || st.min_new_tokens != 0 ||
        st.max_new_tokens != def.max_new_tokens)
      fail("sampling.stop must be left at its default: a step's end is set by delimiters, eos_token_id and "
           "max_step_tokens");
    if (sampling.num_return_sequences != 1)
      fail("sampling.num_return_sequences must be left at 1: the searches choose the samples per node");
    step_stop(max_step_tokens).validate("sampling_proposer_options");  // delimiters and EOS ids
    sampling.validate();
  }

  /// `validate()` plus the vocabulary rules (every token id inside it).
  void validate(std::size_t vocab) const {
    validate();
    step_stop(max_step_tokens).validate(vocab, "sampling_proposer_options");
    sampling.validate(vocab);
  }

  /// The stopping rule of a step that may hold at most `limit` tokens.
  [[nodiscard]] stopping step_stop(std::size_t limit) const {
    return stopping{.max_new_tokens = limit, .eos_token_id = eos_token_id, .stop_sequences = delimiters};
  }
};

/// The sampling step proposer over a `LogitSource` `S` (see the file comment). Satisfies
/// `StepProposer`. The source must outlive the proposer, and states the proposer made must be
/// destroyed before it.
template <LogitSource S>
class sampling_proposer : public detail::source_proposer_base<S> {
  using base = detail::source_proposer_base<S>;

 public:
  using typename base::candidate;
  using typename base::source_type;
  using typename base::state;

  /// Validates `opts` against the source's vocabulary (`invalid_option`).
  sampling_proposer(S& source, sampling_proposer_options opts) : base(source), opts_(std::move(opts)) {
    opts_.validate(source.vocab_size());
  }

  [[nodiscard]] const sampling_proposer_options& options() const noexcept { return opts_; }

  /// For each item, `samples` (or `n`) sampled steps of its node, identical ones merged (first
  /// occurrence kept, `count` = how many samples gave it), in sample order. Dropped nodes are
  /// restored first. Throws `invalid_input` for a missing node, repeated ids, a node at the
  /// sequence limit or a count of 0; source and predicate exceptions pass through. Every handle
  /// made by a failed call is released.
  std::vector<std::vector<candidate>> propose(std::span<const propose_item<state>> batch, std::size_t n) {
    this->prepare(batch, n, opts_.max_sequence_tokens, "sampling_proposer::propose");
    std::vector<std::vector<candidate>> out(batch.size());
    for (const auto& g : groups(batch, n)) run_group(batch, g, out);
    return out;
  }

 private:
  // Items decoded together: the same step limit and sample count (one `generate`).
  struct group {
    std::size_t limit = 0;
    std::size_t samples = 0;
    std::vector<std::size_t> items;
  };

  [[nodiscard]] std::size_t limit_of(const state& s) const noexcept {
    if (opts_.max_sequence_tokens == 0) return opts_.max_step_tokens;
    return std::min(opts_.max_step_tokens, opts_.max_sequence_tokens - s.tokens.size());
  }

  [[nodiscard]] std::vector<group> groups(std::span<const propose_item<state>> batch, std::size_t n) const {
    std::vector<group> gs;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const std::size_t lim = limit_of(*batch[i].node), k = batch[i].samples == 0 ? n : batch[i].samples;
      auto it = std::find_if(gs.begin(), gs.end(), [&](const group& g) { return g.limit == lim && g.samples == k; });
      if (it == gs.end()) it = gs.insert(gs.end(), group{lim, k, {}});
      it->items.push_back(i);
    }
    return gs;
  }

  void run_group(std::span<const propose_item<state>> batch, const group& g, std::vector<std::vector<candidate>>& out) {
    std::vector<live_request<source_type>> reqs;
    reqs.reserve(g.items.size());
    for (std::size_t i : g.items) reqs.push_back({batch[i].node, batch[i].id, batch[i].drawn});
    sampling_options o = opts_.sampling;
    o.stop = opts_.step_stop(g.limit);
    const std::size_t per = o.do_sample ? g.samples : 1;
    o.num_return_sequences = per;
    o.output_logprobs = true;
    o.output_model_logprobs = true;
    auto res = itscale::generate(this->source(), std::span<const live_request<source_type>>(reqs), o,
                                 run_options{.keep_handles = true});
    for (std::size_t k = 0; k < g.items.size(); ++k) {
      const std::size_t i = g.items[k];
      for (std::size_t j = 0; j < per; ++j)
        merge(out[i], res.sequences[k * per + j], res.live[k * per + j], *batch[i].node, g.samples / per);
    }
  }

  // Adds one sample to its node's candidates, or counts it on an identical earlier one (whose
  // handle is kept; this one's is released at once).
  void merge(std::vector<candidate>& cands, generation& g, state& live, const state& node, std::size_t weight) {
    for (auto& c : cands)
      if (c.tokens == g.tokens) {
        c.count += weight;
        live.handle.reset();
        return;
      }
    candidate c;
    c.logprob = g.logprob_sum;
    c.model_logprob = std::accumulate(g.model_logprobs.begin(), g.model_logprobs.end(), 0.0);
    c.count = weight;
    c.stop = g.stop;
    c.state = std::move(live);
    if (c.state.tokens.empty()) {  // no state handed back (cannot happen without a budget): tokens only
      c.state.tokens = node.tokens;
      c.state.tokens.insert(c.state.tokens.end(), g.tokens.begin(), g.tokens.end());
    }
    c.tokens = std::move(g.tokens);
    c.terminal = g.stop == stop_reason::eos || this->ends(c.state.tokens, opts_.max_sequence_tokens, opts_.ends_sequence);
    if (c.terminal) this->drop(c.state);
    cands.push_back(std::move(c));
  }

  sampling_proposer_options opts_;
};

static_assert(StepProposer<sampling_proposer<logit_source_archetype>>);

ITSCALE_END_NAMESPACE
