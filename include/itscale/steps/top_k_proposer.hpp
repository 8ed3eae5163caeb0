#pragma once
/// \file top_k_proposer.hpp
/// Token-level search as a step proposer: a node's candidates are the k most likely next tokens
/// of its row (ties to the lower id), each a one-token step with its softmax prior. Every
/// non-terminal child is evaluated in one batched `extend` over the whole batch (parents repeated),
/// so children come back live with their own next-token rows. Masked tokens (-inf) are never
/// proposed: a node may get fewer than k candidates.
///
/// `logprob` is log softmax(row / temperature) at the token (the prior a tree search uses),
/// `model_logprob` log softmax(row). A step is terminal when its token is an EOS id, when the
/// sequence reaches `max_sequence_tokens`, or when `ends_sequence` says so.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/detail/handle_guard.hpp"
#include "itscale/core/detail/source_rows.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/logit_source_archetype.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/top_k.hpp"
#include "itscale/steps/detail/source_proposer.hpp"
#include "itscale/steps/step_proposer.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Options of `top_k_proposer`. Designated initialisers, one `validate()`.
struct top_k_proposer_options {
  float temperature = 1.0f;              ///< > 0, finite: priors are softmax(row / temperature)
  std::vector<token_id> eos_token_id = {};
  std::size_t max_sequence_tokens = 0;   ///< prompt included; reaching it is terminal; 0 = none
  sequence_predicate ends_sequence = {}; ///< optional: true for a finished sequence (whole tokens)

  void validate() const {
    const auto fail = [](const std::string& what) { throw invalid_option("itscale: top_k_proposer_options." + what); };
    if (!(temperature > 0) || !std::isfinite(temperature))
      fail("temperature must be finite and > 0, got " + detail::num(temperature));
    for (token_id e : eos_token_id)
      if (e < 0) fail("eos_token_id must be >= 0, got " + std::to_string(e));
  }
  void validate(std::size_t vocab) const {
    validate();
    for (token_id e : eos_token_id)
      if (static_cast<std::size_t>(e) >= vocab)
        throw invalid_option("itscale: top_k_proposer_options.eos_token_id " + std::to_string(e) +
                             " is outside the vocabulary (vocab size " + std::to_string(vocab) + ")");
  }
};

/// The top-k step proposer over a `LogitSource` `S` (see the file comment). Satisfies
/// `StepProposer`; `propose(batch, k)` (or each item's `samples`) gives at most k candidates per
/// node, best first, each with `count` 1. The source must outlive the proposer, and states the
/// proposer made must be destroyed before it.
template <LogitSource S>
class top_k_proposer : public detail::source_proposer_base<S> {
  using base = detail::source_proposer_base<S>;

 public:
  using typename base::candidate;
  using typename base::source_type;
  using typename base::state;

  top_k_proposer(S& source, top_k_proposer_options opts) : base(source), opts_(std::move(opts)) {
    opts_.validate(source.vocab_size());
  }

  [[nodiscard]] const top_k_proposer_options& options() const noexcept { return opts_; }

  /// See the class comment. Throws as `sampling_proposer::propose`; `backend_error` for unusable
  /// rows from the source. Every handle made by a failed call is released.
  std::vector<std::vector<candidate>> propose(std::span<const propose_item<state>> batch, std::size_t n) {
    this->prepare(batch, n, opts_.max_sequence_tokens, "top_k_proposer::propose");
    std::vector<std::vector<candidate>> out(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i)
      rank(*batch[i].node, batch[i].samples == 0 ? n : batch[i].samples, out[i]);
    extend_children(batch, out);
    return out;
  }

 private:
  // The node's top-k unmasked tokens as candidates with their priors (states: tokens only).
  void rank(const state& node, std::size_t k, std::vector<candidate>& cands) {
    const std::span<const float> row(node.logits);
    k = std::min(k, row.size());
    ids_.resize(k);
    vals_.resize(k);
    kernels::top_k(row, ids_, vals_);
    const float lse = kernels::logsumexp(row);
    scaled_.resize(row.size());
    const float inv_t = 1.0f / opts_.temperature;
    for (std::size_t v = 0; v < row.size(); ++v) scaled_[v] = row[v] * inv_t;
    const float lse_t = kernels::logsumexp(std::span<const float>(scaled_));
    for (std::size_t j = 0; j < k; ++j) {
      if (vals_[j] == masked_logit) break;
      const token_id t = ids_[j];
      candidate c;
      c.tokens = {t};
      c.logprob = static_cast<double>(scaled_[static_cast<std::size_t>(t)] - lse_t);
      c.model_logprob = static_cast<double>(vals_[j] - lse);
      const bool eos = std::find(opts_.eos_token_id.begin(), opts_.eos_token_id.end(), t) != opts_.eos_token_id.end();
      c.stop = eos ? stop_reason::eos : stop_reason::max_new_tokens;
      c.state.tokens.reserve(node.tokens.size() + 1);
      c.state.tokens.assign(node.tokens.begin(), node.tokens.end());
      c.state.tokens.push_back(t);
      c.terminal = eos || this->ends(c.state.tokens, opts_.max_sequence_tokens, opts_.ends_sequence);
      cands.push_back(std::move(c));
    }
  }

  // One batched extend for every non-terminal candidate; each takes its child handle and row.
  void extend_children(std::span<const propose_item<state>> batch, std::vector<std::vector<candidate>>& out) {
    using handle = handle_t<source_type>;
    std::vector<handle> parents, children;
    std::vector<token_id> toks;
    std::vector<candidate*> owners;
    for (std::size_t i = 0; i < batch.size(); ++i)
      for (auto& c : out[i])
        if (!c.terminal) {
          parents.push_back(batch[i].node->handle.get());
          toks.push_back(c.tokens.front());
          owners.push_back(&c);
        }
    if (parents.empty()) return;
    source_type& src = this->source();
    detail::handle_guard<source_type> guard(src);
    guard.reserve(parents.size());
    children.resize(parents.size());
    src.extend(parents, toks, children);
    for (handle h : children) guard.adopt(h);
    const logits_view view = src.logits();
    detail::check_source_rows(view, children.size(), src.vocab_size(), 1);
    for (std::size_t r = 0; r < owners.size(); ++r) {
      const auto row = view.row(r);
      owners[r]->state.logits.assign(row.begin(), row.end());
    }
    for (std::size_t r = 0; r < owners.size(); ++r) {  // nothing below throws
      guard.disown(children[r]);
      owners[r]->state.handle = owned_handle<source_type>(src, children[r]);
    }
  }

  top_k_proposer_options opts_;
  std::vector<token_id> ids_;
  std::vector<float> vals_, scaled_;
};

static_assert(StepProposer<top_k_proposer<logit_source_archetype>>);

ITSCALE_END_NAMESPACE
