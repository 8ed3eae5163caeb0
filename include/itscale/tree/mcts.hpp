#pragma once
/// \file mcts.hpp
/// Monte Carlo tree search over reasoning steps, on any `StepProposer` and `Verifier`.
///
///     itscale::mcts search(proposer, verifier, prompt, {.simulations = 64, .leaves_per_round = 8});
///     auto r = search.search();        // r.sequences[0]: the chosen sequence; r.compute: what it cost
///     search.commit(r.chosen);         // tree reuse: keep the chosen child's subtree and statistics
///     auto r2 = search.search();       // ... and continue from there
///
/// One simulation walks from the root to a leaf, evaluates it and backs the value up:
///
/// - **Selection.** PUCT as in AlphaZero, Q + c(s)·P·sqrt(N)/(1 + n) with c(s) = log((1 + N +
///   c_base)/c_base) + c_init, or UCT, Q + c·sqrt(ln N / n). Priors P come from the proposer: the
///   softmax of the children's model log-probs divided by a temperature, or their sample counts,
///   or uniform; the root's are mixed with Dirichlet noise when asked. Ties go to the higher
///   prior, then to the earlier child.
/// - **Expansion and progressive widening.** A node is expanded on the visit after the one that
///   evaluated it: the proposer draws `samples_per_expansion` samples from it (identical steps
///   merged, with their counts), or more if the widening limit allows more new children. With
///   widening, a node visited N times may have max(1, ceil(c·N^alpha)) children: distinct steps
///   beyond that wait, in proposal order, and are admitted as N grows; when none wait, the node
///   is asked for more samples, continuing its random streams (`propose_item::drawn`), and the
///   simulation goes on to a new child. A node whose last `widening.patience` expansions brought
///   no new step (only duplicates) is exhausted.
/// - **Evaluation.** A new leaf is scored by the verifier as a partial sequence (a process
///   verifier), or by a rollout (the proposer applied repeatedly from the leaf, keeping the most
///   likely of `rollout_samples` samples each step, until a terminal step) scored as a complete
///   sequence (an outcome verifier), or by the mix (1 - lambda)·verifier + lambda·rollout. A
///   terminal node is scored as a complete sequence, once (its value is kept) unless
///   `cache_terminal_values` is off. Values are verifier scores mapped to [0, 1] through the
///   verifier's declared range, so a loss is 0 and a win is 1.
/// - **Backup.** Every node of the path gets N += 1 and W += v (selection reads Q = W/N), or, with
///   `mcts_backup::max`, Q = the largest value seen below.
/// - **Batched leaves.** A round walks `leaves_per_round` (B) paths before evaluating any: each
///   node on a path gets a virtual loss (it counts `virtual_loss` extra visits of value 0 until the
///   round backs up), which steers the next paths of the round elsewhere. A node that must be
///   expanded stops the first path that reaches it; later paths pass through to its existing
///   children (or join it if it has none). The round's expansions go to the proposer in one batch,
///   after which each stopped path steps to a new child, and the round's leaves go to the verifier
///   in one call. A path that ends at a leaf an earlier path of the round took (a collision) only
///   gives its virtual loss back: it is neither backed up nor counted as a simulation. (Only a
///   path whose node's expansion brought no new step walks on and may need another batch in the
///   same round; rollouts cost one batch per rollout step.)
///
/// **Determinism.** A node's random streams are keyed by its path from the root (`child_key` of
/// its parent's key and its proposal index), not by creation order. So, for a proposer whose
/// samples depend only on (seed, item id, drawn) — the contract of `StepProposer` — and a
/// deterministic verifier:
/// - the same options and seed give the same tree, bit for bit, whatever order or grouping the
///   proposer gives its source calls inside a batch;
/// - every node's step, log-probs, terminal flag and own value, and the order of its children,
///   are a function of the seed and its path only: searches with different B (or different
///   simulation counts) agree on every node both trees contain, and one node's children are a
///   prefix of the other's. What B changes is which nodes are visited and how often (virtual loss
///   and late backups change selection), hence statistics, how many times a widened node was
///   expanded (its number of children, its steps' sample counts) and the final choice. Without
///   widening, a search that expands a finite tree completely builds the same nodes, counts
///   included, for every B.
/// Node ids (arena indices) are in creation order, which is deterministic for given options.
///
/// **Handles.** Each node holds its proposer state (a live source handle for a proposer over a
/// `LogitSource`). A node that can never be expanded again (fully expanded or exhausted) gives
/// its handle back at once. With `max_live_handles` = L > 0, the search holds at most L live
/// states whenever it calls the proposer (the proposer briefly holds the samples it is building on
/// top); past L, the least recently used nodes give theirs back (`drop`) and are rebuilt
/// (`restore`, a re-prefill) if they are expanded or rolled out later. For a proposer whose
/// restored state behaves like the original, results are identical to an unbounded run.
///
/// **Budgets.** A search stops after `simulations`, at a `compute_budget` limit (generated
/// tokens, source calls, verifier calls, time) or on cancellation through its `stop_token`,
/// whichever comes first, checked between rounds (a round in flight completes). Exceptions from
/// the proposer or the verifier pass through; the search then releases every state it holds and
/// keeps no tree (call `reset`).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/rng.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/core/types.hpp"
#include "itscale/steps/step_proposer.hpp"
#include "itscale/steps/verifier.hpp"
#include "itscale/tree/dirichlet.hpp"
#include "itscale/tree/lru_order.hpp"
#include "itscale/tree/mcts_node.hpp"
#include "itscale/tree/selection.hpp"
#include "itscale/tree/tree_export.hpp"

ITSCALE_BEGIN_NAMESPACE

// ---------------------------------------------------------------------------------------------
// Options and result
// ---------------------------------------------------------------------------------------------

enum class mcts_selection : std::uint8_t { puct, uct };
/// Where priors come from: softmax(model_logprob / prior_temperature), sample counts, or uniform.
enum class mcts_prior : std::uint8_t { logprob, count, uniform };
/// How a new leaf is scored (see the file comment).
enum class mcts_evaluation : std::uint8_t { verifier, rollout, mixed };
enum class mcts_backup : std::uint8_t { mean, max };
/// The final choice at each level of the returned path: most visits, best value, or sampled with
/// probability proportional to visits^(1/choice_temperature).
enum class mcts_choice : std::uint8_t { visits, value, sampled };

/// Progressive widening: max(1, ceil(c · N^alpha)) children for a node visited N times. c = 0: off
/// (a node is expanded once, with every distinct step of `samples_per_expansion` samples).
struct mcts_widening {
  double c = 0;              ///< >= 0, finite
  double alpha = 0.5;        ///< in [0, 1] when c > 0
  std::size_t patience = 3;  ///< expansions in a row bringing no new step before a node counts as exhausted (>= 1)
};

/// Dirichlet noise on the root's priors: P = (1 - weight)·P + weight·Dir(alpha). weight 0: off.
struct mcts_dirichlet {
  double weight = 0;   ///< in [0, 1]
  double alpha = 0.3;  ///< > 0, finite, when weight > 0
};

/// Options of `mcts`. Designated initialisers; `validate()` names the broken rule.
struct mcts_options {
  std::size_t simulations = 64;           ///< simulations per `search()` (>= 1)
  std::size_t leaves_per_round = 1;       ///< B: leaves selected (with virtual loss) and evaluated together (>= 1)
  std::size_t samples_per_expansion = 4;  ///< samples per expansion, at least (widening may ask for more) (>= 1)
  mcts_selection selection = mcts_selection::puct;
  double c_init = 1.25;                ///< PUCT (>= 0)
  double c_base = 19652;               ///< PUCT (> 0)
  double c_uct = std::numbers::sqrt2;  ///< UCT (>= 0)
  mcts_prior prior = mcts_prior::logprob;
  double prior_temperature = 1;  ///< > 0
  /// Q of an unvisited child: max(0, Q(parent) - fpu_reduction) (first-play urgency), in [0, 1].
  double fpu_reduction = 0;
  mcts_widening widening = {};
  mcts_dirichlet dirichlet = {};
  mcts_evaluation evaluation = mcts_evaluation::verifier;
  double mix_lambda = 0.5;             ///< weight of the rollout in `mixed` (in [0, 1])
  std::size_t rollout_samples = 1;     ///< samples per rollout step; the most likely is kept (>= 1)
  std::size_t max_rollout_steps = 64;  ///< a rollout not finished by then is scored as partial (>= 1)
  bool cache_terminal_values = true;   ///< score a terminal node once (off: at every visit, for noisy verifiers)
  mcts_backup backup = mcts_backup::mean;
  double virtual_loss = 1;           ///< virtual visits (of value 0) per path in flight (>= 0)
  std::size_t max_steps = 0;         ///< nodes this many steps below the first root are terminal (0: no limit)
  std::size_t max_live_handles = 0;  ///< 0: unbounded; else >= leaves_per_round (see the file comment)
  mcts_choice choice = mcts_choice::visits;
  double choice_temperature = 1;         ///< for `sampled` (> 0)
  std::size_t num_return_sequences = 1;  ///< paths through the best root children, best first (>= 1)
  std::uint64_t seed = 0;                ///< Dirichlet noise and sampled choices (the proposer has its own)
  std::uint32_t stream = 0;              ///< the root's stream key (give concurrent searches different ones)
  compute_budget budget = {};

  void validate() const {
    const auto fail = [](const std::string& what) { throw invalid_option("itscale: mcts_options." + what); };
    const auto finite_ge = [&](double v, double lo, const char* name) {
      if (!(v >= lo) || !std::isfinite(v))
        fail(std::string(name) + " must be finite and >= " + detail::num(lo) + ", got " + detail::num(v));
    };
    const auto unit = [&](double v, const char* name) {
      if (!(v >= 0 && v <= 1)) fail(std::string(name) + " must be in [0, 1], got " + detail::num(v));
    };
    if (simulations == 0) fail("simulations must be >= 1, got 0");
    if (leaves_per_round == 0) fail("leaves_per_round (B) must be >= 1, got 0");
    if (samples_per_expansion == 0 || samples_per_expansion > 0x7FFFFFFF)
      fail("samples_per_expansion must be in [1, 2^31), got " + std::to_string(samples_per_expansion));
    finite_ge(c_init, 0, "c_init");
    if (!(c_base > 0) || !std::isfinite(c_base)) fail("c_base must be finite and > 0, got " + detail::num(c_base));
    finite_ge(c_uct, 0, "c_uct");
    if (!(prior_temperature > 0) || !std::isfinite(prior_temperature))
      fail("prior_temperature must be finite and > 0, got " + detail::num(prior_temperature));
    unit(fpu_reduction, "fpu_reduction");
    finite_ge(widening.c, 0, "widening.c");
    if (widening.c > 0) unit(widening.alpha, "widening.alpha");
    if (widening.patience == 0) fail("widening.patience must be >= 1, got 0");
    unit(dirichlet.weight, "dirichlet.weight");
    if (dirichlet.weight > 0 && (!(dirichlet.alpha > 0) || !std::isfinite(dirichlet.alpha)))
      fail("dirichlet.alpha must be finite and > 0 when dirichlet.weight > 0, got " + detail::num(dirichlet.alpha));
    unit(mix_lambda, "mix_lambda");
    if (rollout_samples == 0 || rollout_samples > 0x7FFFFFFF)
      fail("rollout_samples must be in [1, 2^31), got " + std::to_string(rollout_samples));
    if (max_rollout_steps == 0) fail("max_rollout_steps must be >= 1, got 0");
    finite_ge(virtual_loss, 0, "virtual_loss");
    if (max_live_handles != 0 && max_live_handles < leaves_per_round)
      fail("max_live_handles must be 0 (unbounded) or >= leaves_per_round (" + std::to_string(leaves_per_round) +
           "): a round holds B live states at once; got " + std::to_string(max_live_handles));
    if (!(choice_temperature > 0) || !std::isfinite(choice_temperature))
      fail("choice_temperature must be finite and > 0, got " + detail::num(choice_temperature));
    if (num_return_sequences == 0) fail("num_return_sequences must be >= 1, got 0");
    budget.validate();
  }
};

/// What one `search()` returns.
struct mcts_result {
  /// Up to `num_return_sequences` paths, each from the root through one of its visited children
  /// (ranked by the choice rule), then down by the same rule to a terminal node or the frontier.
  /// Tokens exclude the prompt and include committed steps; `score` is the last node's value
  /// (mean, or max with `mcts_backup::max`), `logprob_sum` the sum of the steps' log-probs;
  /// `stop` is the terminal step's reason, or `budget` / `cancelled` for a path that ends at the
  /// frontier. Per-token log-probs are not kept (`logprobs` is empty).
  std::vector<generation> sequences;
  std::vector<std::uint32_t> path;  ///< node ids of `sequences[0]` from the root (root included)
  std::uint32_t chosen = no_node;   ///< the root child `sequences[0]` goes through (for `commit`)
  compute_stats compute;            ///< source work (the proposer's, during this search) and verifier work
  run_status status = run_status::completed;
  std::uint64_t simulations = 0;  ///< completed simulations of this search (collisions excluded)
  std::uint64_t collisions = 0;   ///< paths of a round that reached a leaf an earlier path of the round took
  std::uint64_t rounds = 0;
  std::uint64_t expansions = 0;  ///< nodes sent to the proposer for children
  std::uint64_t rollouts = 0;
  std::uint64_t restores = 0;           ///< states rebuilt after the handle budget took them
  std::uint64_t peak_tree_handles = 0;  ///< most live states the tree held at once (rollouts included)
  std::uint64_t nodes = 0;              ///< nodes in the tree at the end
};

// ---------------------------------------------------------------------------------------------
// The search
// ---------------------------------------------------------------------------------------------

/// A search tree over the steps of `P`, scored by `V`. Holds references to both (they must outlive
/// it) and the tree between searches (for `commit`). Not copyable.
template <StepProposer P, Verifier V>
class mcts {
 public:
  using state = typename P::state;
  using node = mcts_node<state>;

  /// Validates `options` and builds the root from `prompt` (non-empty): one `proposer.root` call.
  mcts(P& proposer, V& verifier, std::span<const token_id> prompt, mcts_options options = {})
      : p_(proposer), v_(verifier), opts_(std::move(options)) {
    opts_.validate();
    reset(prompt);
  }
  mcts(const mcts&) = delete;
  mcts& operator=(const mcts&) = delete;
  ~mcts() { clear(); }

  /// Drops the tree and starts a new one from `prompt`.
  void reset(std::span<const token_id> prompt) {
    if (prompt.empty()) throw invalid_input("itscale: mcts needs a non-empty prompt");
    clear();
    prompt_.assign(prompt.begin(), prompt.end());
    committed_.clear();
    committed_logprob_ = 0;
    node r;
    r.key = opts_.stream;
    nodes_.reserve(64);
    base_ = p_.stats();  // the root's prefill is charged to the first search
    charge_root_ = true;
    r.state = p_.root(prompt_);
    nodes_.push_back(std::move(r));  // reserved: cannot throw
    root_ = 0;
    grow_scratch();
    note_live(0);
  }

  /// Runs up to `options().simulations` simulations (fewer if a budget limit or cancellation
  /// comes first). Validates the options again (they may be changed between searches).
  mcts_result search() {
    opts_.validate();
    if (root_ == no_node) throw invalid_input("itscale: mcts holds no tree (a search threw; call reset)");
    const detail::stopwatch clock;
    if (!charge_root_) base_ = p_.stats();
    charge_root_ = false;
    run_ = {};
    mcts_result res;
    res_ = &res;
    peak_ = live_;
    try {
      std::uint64_t sims = 0;
      if (!nodes_[root_].terminal) {
        while (sims < opts_.simulations) {
          const run_status s = opts_.budget.check(spent(), clock.seconds());
          if (s != run_status::completed) {
            res.status = s;
            break;
          }
          const std::size_t k = std::min<std::size_t>(opts_.leaves_per_round, opts_.simulations - sims);
          sims += round(k);
          ++res.rounds;
        }
      }
      res.simulations = sims;
      res.peak_tree_handles = peak_;
      res.nodes = nodes_.size();
      write_sequences(res);
      res.compute = spent();
      res.compute.wall_seconds = clock.seconds();
    } catch (...) {
      clear();
      res_ = nullptr;
      throw;
    }
    res_ = nullptr;
    ++searches_;
    return res;
  }

  /// Tree reuse: makes `child` (a node id among the root's children) the new root, keeping its
  /// subtree and statistics and releasing everything else. Node ids are renumbered (creation
  /// order kept); stream keys are not, so the subtree's future samples are unchanged.
  void commit(std::uint32_t child) {
    if (root_ == no_node) throw invalid_input("itscale: mcts::commit: no tree");
    const auto& rc = nodes_[root_].children;
    if (std::find(rc.begin(), rc.end(), child) == rc.end())
      throw invalid_input("itscale: mcts::commit: node " + std::to_string(child) + " is not a child of the root");
    committed_.insert(committed_.end(), nodes_[child].step.begin(), nodes_[child].step.end());
    committed_logprob_ += nodes_[child].logprob;
    std::vector<std::uint8_t> keep(nodes_.size(), 0);
    std::vector<std::uint32_t> stack{child};
    while (!stack.empty()) {
      const std::uint32_t x = stack.back();
      stack.pop_back();
      keep[x] = 1;
      for (std::uint32_t c : nodes_[x].children) stack.push_back(c);
      for (std::uint32_t c : nodes_[x].pending) stack.push_back(c);
    }
    // The recency order of the survivors, to rebuild it under their new ids.
    std::vector<std::uint32_t> recency;
    for (std::uint32_t x = lru_.oldest(); x != detail::lru_order::none; x = lru_.newer(x))
      if (keep[x] != 0) recency.push_back(x);
    std::vector<std::uint32_t> remap(nodes_.size(), no_node);
    std::vector<node> kept;
    kept.reserve(nodes_.size());
    for (std::uint32_t x = 0; x < nodes_.size(); ++x) {
      if (keep[x] != 0) {
        remap[x] = static_cast<std::uint32_t>(kept.size());
        kept.push_back(std::move(nodes_[x]));
      } else {
        drop_state(x);
      }
    }
    for (auto& n : kept) {
      n.parent = n.parent == no_node || remap[n.parent] == no_node ? no_node : remap[n.parent];
      for (auto& c : n.children) c = remap[c];
      for (auto& c : n.pending) c = remap[c];
    }
    nodes_ = std::move(kept);
    root_ = remap[child];
    lru_.clear();
    grow_scratch();
    for (std::uint32_t x : recency) lru_.touch(remap[x]);
    update_priors(root_);
  }

  /// The root child the choice rule picks (`no_node` if none was visited).
  [[nodiscard]] std::uint32_t choose() const { return root_ == no_node ? no_node : pick(root_); }

  [[nodiscard]] std::span<const node> nodes() const noexcept { return nodes_; }
  [[nodiscard]] std::uint32_t root() const noexcept { return root_; }
  [[nodiscard]] std::span<const token_id> prompt() const noexcept { return prompt_; }
  /// Tokens of the steps committed so far (after the prompt).
  [[nodiscard]] std::span<const token_id> committed() const noexcept { return committed_; }
  /// Live states the tree holds now.
  [[nodiscard]] std::size_t live_states() const noexcept { return live_; }
  [[nodiscard]] mcts_options& options() noexcept { return opts_; }
  [[nodiscard]] const mcts_options& options() const noexcept { return opts_; }

  [[nodiscard]] std::string to_json(const tree_export_options& o = {}) const { return tree_to_json(nodes(), root_, o); }
  [[nodiscard]] std::string to_dot(const tree_export_options& o = {}) const { return tree_to_dot(nodes(), root_, o); }

  /// The tokens after the prompt that lead to node `x` (committed steps included).
  [[nodiscard]] std::vector<token_id> sequence_of(std::uint32_t x) const {
    std::vector<token_id> out;
    sequence_into(x, out);
    return out;
  }

 private:
  static constexpr std::uint32_t rollout_slot = 0xFFFFFFFEu;  // child index of a rollout's stream key

  enum class path_end : std::uint8_t { leaf, waiting };

  // --- one round: select B paths, expand what they wait on, evaluate the leaves, back up -------

  // Returns the simulations completed: the paths whose leaf no earlier path of the round took.
  std::size_t round(std::size_t k) {
    if (paths_.size() < k) paths_.resize(k);
    ends_.assign(k, path_end::leaf);
    for (std::size_t b = 0; b < k; ++b) {
      paths_[b].clear();
      paths_[b].push_back(root_);
      ++nodes_[root_].in_flight;
      descend(b);
    }
    while (!to_expand_.empty()) {
      expand_queued();
      for (std::size_t b = 0; b < k; ++b)
        if (ends_[b] == path_end::waiting) descend(b, true);
    }
    for (std::uint32_t x : expanded_) queued_[x] = 0;
    expanded_.clear();
    evaluate(k);
    return backup(k);
  }

  // Walks path b down from its last node until a leaf (an unevaluated node, or a terminal one) or
  // a node that must ask the proposer for children first (queued; the path waits). A node is
  // expanded at most once a round; one already queued by another path of the round is passed
  // through when it has children (only the first path waits on a widening), joined when it has
  // none. A path resuming after its node's
  // expansion (`resumed`) goes to one of the new, unvisited children if there are any (progressive
  // widening visits the child it adds), so a round does not cascade through further expansions.
  void descend(std::size_t b, bool resumed = false) {
    auto& path = paths_[b];
    std::uint32_t x = path.back();
    for (;;) {
      touch(x);
      node& s = nodes_[x];
      if (x != root_ && (s.terminal || s.visits == 0)) {
        ends_[b] = path_end::leaf;
        return;
      }
      if (wants_child(s)) {
        admit(x);
        // queued_: 0 not yet this round, 1 queued, 3 expanded this round
        if (wants_child(nodes_[x]) && !nodes_[x].exhausted && queued_[x] != 3 &&
            (queued_[x] == 0 || nodes_[x].children.empty())) {
          ends_[b] = path_end::waiting;
          if (queued_[x] == 0) {
            queued_[x] = 1;
            to_expand_.push_back(x);
          }
          return;
        }
      }
      if (nodes_[x].children.empty())
        throw search_error("itscale: mcts: node " + std::to_string(x) + " is not terminal and has no step to follow");
      x = best_child(x, resumed);
      resumed = false;
      ++nodes_[x].in_flight;
      path.push_back(x);
    }
  }

  [[nodiscard]] bool wants_child(const node& s) const noexcept {
    if (s.exhausted && s.pending.empty()) return false;
    return s.children.size() < widening_limit(opts_.widening.c, opts_.widening.alpha, s.visits);
  }

  // Moves waiting steps into the children while the widening limit allows, then updates priors.
  void admit(std::uint32_t x) {
    node& s = nodes_[x];
    const std::uint64_t limit = widening_limit(opts_.widening.c, opts_.widening.alpha, s.visits);
    std::size_t moved = 0;
    while (moved < s.pending.size() && s.children.size() < limit) s.children.push_back(s.pending[moved++]);
    if (moved > 0) {
      s.pending.erase(s.pending.begin(), s.pending.begin() + static_cast<std::ptrdiff_t>(moved));
      update_priors(x);
    }
  }

  [[nodiscard]] double q_of(const node& n) const noexcept {
    return opts_.backup == mcts_backup::mean ? n.mean() : (n.visits > 0 ? n.value_max : 0.0);
  }

  // PUCT or UCT over the children (only the unvisited ones if `fresh` and there are any), with
  // virtual loss; ties to the higher prior, then the earlier.
  [[nodiscard]] std::uint32_t best_child(std::uint32_t x, bool fresh = false) const noexcept {
    const node& s = nodes_[x];
    const double vl = opts_.virtual_loss;
    // The path being walked is in s.in_flight too: only the other paths of the round count.
    const double n_parent = static_cast<double>(s.visits) + vl * (s.in_flight - 1);
    const double fpu = std::max(0.0, (s.visits > 0 ? q_of(s) : 0.0) - opts_.fpu_reduction);
    const bool puct = opts_.selection == mcts_selection::puct;
    const double coef = puct ? puct_coefficient(n_parent, opts_.c_init, opts_.c_base) * std::sqrt(n_parent) : 0.0;
    std::uint32_t best = s.children.front();
    double best_score = -std::numeric_limits<double>::infinity(), best_prior = -1;
    if (fresh)
      fresh = std::any_of(s.children.begin(), s.children.end(), [&](std::uint32_t c) { return nodes_[c].visits == 0; });
    for (std::uint32_t c : s.children) {
      const node& k = nodes_[c];
      if (fresh && k.visits != 0) continue;
      const double virt = vl * k.in_flight;
      const double n = static_cast<double>(k.visits) + virt;
      const double q = k.visits > 0 ? q_of(k) * (static_cast<double>(k.visits) / n) : (virt > 0 ? 0.0 : fpu);
      const double score = puct ? q + coef * k.prior / (1.0 + n) : uct_score(q, n_parent, n, opts_.c_uct);
      if (score > best_score || (score == best_score && k.prior > best_prior)) {
        best = c;
        best_score = score;
        best_prior = k.prior;
      }
    }
    return best;
  }

  // Priors of x's children from the proposer's figures; Dirichlet noise on the root's.
  void update_priors(std::uint32_t x) {
    node& s = nodes_[x];
    const std::size_t k = s.children.size();
    if (k == 0) return;
    double total = 0;
    if (opts_.prior == mcts_prior::logprob) {
      double m = -std::numeric_limits<double>::infinity();
      for (std::uint32_t c : s.children) m = std::max(m, nodes_[c].model_logprob / opts_.prior_temperature);
      for (std::uint32_t c : s.children) {
        const double e = std::isfinite(m) ? std::exp(nodes_[c].model_logprob / opts_.prior_temperature - m) : 1.0;
        nodes_[c].prior_raw = e;
        total += e;
      }
    } else {
      for (std::uint32_t c : s.children) {
        const double w = opts_.prior == mcts_prior::count ? static_cast<double>(nodes_[c].count) : 1.0;
        nodes_[c].prior_raw = w;
        total += w;
      }
    }
    for (std::uint32_t c : s.children)
      nodes_[c].prior = nodes_[c].prior_raw = total > 0 ? nodes_[c].prior_raw / total : 1.0 / static_cast<double>(k);
    if (x == root_ && opts_.dirichlet.weight > 0) {
      noise_.resize(k);
      const counter_rng rng(opts_.seed, std::uint64_t{0xD1D1D1D1u} << 32 | s.key);
      detail::dirichlet_draw(rng, 0, opts_.dirichlet.alpha, noise_);
      const double w = opts_.dirichlet.weight;
      for (std::size_t i = 0; i < k; ++i) {
        node& c = nodes_[s.children[i]];
        c.prior = (1 - w) * c.prior_raw + w * noise_[i];
      }
    }
  }

  // --- expansion --------------------------------------------------------------------------------

  // One proposer batch over the queued nodes; their new steps become nodes (waiting for
  // admission), duplicates of known steps add to those steps' counts.
  void expand_queued() {
    std::vector<std::uint32_t> batch;
    batch.swap(to_expand_);
    for (std::uint32_t x : batch) {
      queued_[x] = 3;  // expanded this round (cleared when the round's selection ends)
      expanded_.push_back(x);
    }
    make_live(batch, 0);
    const std::uint32_t n = static_cast<std::uint32_t>(opts_.samples_per_expansion);
    items_.clear();
    for (std::uint32_t x : batch) {
      // Enough samples for the children the widening limit allows now (it can grow by more
      // than one between visits), at least `samples_per_expansion`.
      const node& s = nodes_[x];
      const std::uint64_t limit = widening_limit(opts_.widening.c, opts_.widening.alpha, s.visits);
      const std::uint64_t missing = limit > s.children.size() ? limit - s.children.size() : 0;
      const std::size_t k = missing > n && missing < 0x7FFFFFFF ? static_cast<std::size_t>(missing) : n;
      items_.push_back({&nodes_[x].state, s.key, s.drawn, k});
    }
    candidate_guard got(*this, propose(n));
    if (got.lists.size() != batch.size())
      throw search_error("itscale: mcts: the proposer returned " + std::to_string(got.lists.size()) +
                         " candidate lists for a batch of " + std::to_string(batch.size()));
    std::size_t total = 0;
    for (const auto& l : got.lists) total += l.size();
    // Node pushes below must not throw: room first (geometric, or the arena would be copied on
    // every expansion).
    if (nodes_.capacity() < nodes_.size() + total)
      nodes_.reserve(std::max(nodes_.size() + total, 2 * nodes_.capacity()));
    grow_scratch(nodes_.size() + total);
    res_->expansions += batch.size();
    for (std::size_t i = 0; i < batch.size(); ++i) adopt(batch[i], got.lists[i], items_[i].samples);
    trim(limit_target(0));
  }

  void adopt(std::uint32_t x, std::vector<step_candidate<state>>& list, std::size_t samples) {
    {
      node& s = nodes_[x];
      if (list.empty() && s.children.empty() && s.pending.empty())
        throw search_error("itscale: mcts: the proposer returned no step for node " + std::to_string(x) + " (depth " +
                           std::to_string(s.depth) + "), which is not terminal");
      s.proposed = true;
      const std::uint64_t drawn = std::uint64_t{s.drawn} + samples;
      s.drawn = drawn > 0xFFFFFFFFull ? 0xFFFFFFFFu : static_cast<std::uint32_t>(drawn);
      if (drawn > 0xFFFFFFFFull - 0x7FFFFFFFull) s.exhausted = true;  // its streams are (nearly) used up
    }
    std::size_t fresh = 0;
    for (auto& c : list) {
      const std::uint32_t same = find_step(x, c.tokens);
      if (same != no_node) {
        nodes_[same].count += c.count;
        drop(c.state);
        continue;
      }
      node k;
      k.parent = x;
      k.key =
          child_key(nodes_[x].key, static_cast<std::uint32_t>(nodes_[x].children.size() + nodes_[x].pending.size()));
      k.depth = nodes_[x].depth + 1;
      k.step = std::move(c.tokens);
      k.logprob = c.logprob;
      k.model_logprob = c.model_logprob;
      k.count = c.count;
      k.terminal = c.terminal;
      k.stop = c.stop;
      if (!k.terminal && opts_.max_steps != 0 && k.depth >= opts_.max_steps) {
        k.terminal = k.cut = true;
        k.stop = stop_reason::max_new_tokens;
      }
      k.state = std::move(c.state);
      const auto id = static_cast<std::uint32_t>(nodes_.size());
      nodes_.push_back(std::move(k));
      nodes_[x].pending.push_back(id);
      if (nodes_[id].terminal)
        drop(nodes_[id].state);  // never expanded: its handle is not needed
      else
        note_live(id);
      ++fresh;
    }
    node& s = nodes_[x];
    s.misses = fresh == 0 ? s.misses + 1 : 0;
    if (opts_.widening.c == 0 || s.misses >= opts_.widening.patience) s.exhausted = true;
    admit(x);
    if (opts_.prior == mcts_prior::count) update_priors(x);  // duplicates changed counts
    if (s.exhausted) drop_state(x);                          // never asked again
  }

  // Proposes for `items_`. Ids of one batch must be distinct; two different nodes can share a
  // 32-bit key (rarely), so such a batch is split into batches of distinct ids, results in order.
  std::vector<std::vector<step_candidate<state>>> propose(std::uint32_t n) {
    const std::span<const propose_item<state>> all(items_);
    ids_.clear();
    for (const auto& it : all) ids_.push_back(it.id);
    std::sort(ids_.begin(), ids_.end());
    if (std::adjacent_find(ids_.begin(), ids_.end()) == ids_.end()) return p_.propose(all, n);
    candidate_guard done(
        *this, std::vector<std::vector<step_candidate<state>>>(all.size()));  // earlier parts, if a later one throws
    std::vector<std::uint8_t> sent(all.size(), 0);
    for (std::size_t left = all.size(); left > 0;) {
      std::vector<propose_item<state>> part;
      std::vector<std::size_t> where;
      ids_.clear();
      for (std::size_t i = 0; i < all.size(); ++i)
        if (sent[i] == 0 && std::find(ids_.begin(), ids_.end(), all[i].id) == ids_.end()) {
          ids_.push_back(all[i].id);
          part.push_back(all[i]);
          where.push_back(i);
          sent[i] = 1;
        }
      candidate_guard got(*this, p_.propose(std::span<const propose_item<state>>(part), n));
      if (got.lists.size() != part.size())
        throw search_error("itscale: mcts: the proposer returned " + std::to_string(got.lists.size()) +
                           " candidate lists for a batch of " + std::to_string(part.size()));
      for (std::size_t j = 0; j < where.size() && j < got.lists.size(); ++j)
        done.lists[where[j]] = std::move(got.lists[j]);
      left -= where.size();
    }
    std::vector<std::vector<step_candidate<state>>> out = std::move(done.lists);
    done.lists.clear();
    return out;
  }

  [[nodiscard]] std::uint32_t find_step(std::uint32_t x, const std::vector<token_id>& step) const noexcept {
    for (std::uint32_t c : nodes_[x].children)
      if (nodes_[c].step == step) return c;
    for (std::uint32_t c : nodes_[x].pending)
      if (nodes_[c].step == step) return c;
    return no_node;
  }

  // --- evaluation -------------------------------------------------------------------------------

  void evaluate(std::size_t k) {
    const bool process = opts_.evaluation != mcts_evaluation::rollout;
    const bool rollout = opts_.evaluation != mcts_evaluation::verifier;
    // The round's distinct leaves, in path order, and what each needs.
    // A path whose leaf an earlier path of the round took is a collision: it adds no information,
    // so it is not backed up (see `backup`).
    leaves_.clear();
    collided_.assign(k, 0);
    for (std::size_t b = 0; b < k; ++b) {
      const std::uint32_t x = paths_[b].back();
      if (queued_[x] == 2) {
        collided_[b] = 1;
        continue;
      }
      queued_[x] = 2;
      leaves_.push_back(x);
    }
    for (std::uint32_t x : leaves_) queued_[x] = 0;
    std::vector<std::uint32_t> rolled;
    for (std::uint32_t x : leaves_)
      if (!nodes_[x].terminal && rollout) rolled.push_back(x);
    std::vector<rollout_run> runs = run_rollouts(rolled);

    // One verifier call: process scores of new non-terminal leaves, outcome scores of terminal
    // leaves not yet scored, outcome scores of the rollouts.
    struct slot {
      std::uint32_t leaf;
      int kind;  // 0 process, 1 terminal, 2 rollout
    };
    std::vector<slot> slots;
    std::size_t used = 0;
    const auto buffer = [&]() -> std::vector<token_id>& { return seqs_[used++]; };
    for (std::uint32_t x : leaves_) {
      const node& n = nodes_[x];
      if (n.terminal) {
        if (opts_.cache_terminal_values && !std::isnan(n.value)) continue;
        slots.push_back({x, 1});
      } else if (process) {
        slots.push_back({x, 0});
      }
    }
    for (std::size_t r = 0; r < runs.size(); ++r) slots.push_back({static_cast<std::uint32_t>(r), 2});
    if (seqs_.size() < slots.size()) seqs_.resize(slots.size());
    std::vector<verify_item> items;
    items.reserve(slots.size());
    for (const auto& sl : slots) {
      auto& seq = buffer();
      if (sl.kind == 2) {
        sequence_into(runs[sl.leaf].leaf, seq);
        seq.insert(seq.end(), runs[sl.leaf].tokens.begin(), runs[sl.leaf].tokens.end());
        items.push_back({prompt_, seq, runs[sl.leaf].complete});
      } else {
        sequence_into(sl.leaf, seq);
        items.push_back({prompt_, seq, sl.kind == 1 && !nodes_[sl.leaf].cut});
      }
    }
    const std::vector<double> scores = verify(v_, std::span<const verify_item>(items), run_);
    const score_range range = std::as_const(v_).range();
    const auto unit = [&](double s) { return range.hi > range.lo ? (s - range.lo) / (range.hi - range.lo) : 0.0; };
    // Combine: process and rollout parts of a non-terminal leaf, or a terminal's outcome.
    for (std::uint32_t x : leaves_) {
      leaf_process_[x] = 0;
      leaf_rollout_[x] = 0;
    }
    for (std::size_t i = 0; i < slots.size(); ++i) {
      const double v = unit(scores[i]);
      if (slots[i].kind == 2)
        leaf_rollout_[runs[slots[i].leaf].leaf] = v;
      else if (slots[i].kind == 1)
        nodes_[slots[i].leaf].value = v;
      else
        leaf_process_[slots[i].leaf] = v;
    }
    for (std::uint32_t x : leaves_) {
      node& n = nodes_[x];
      if (n.terminal) continue;
      n.value = opts_.evaluation == mcts_evaluation::verifier ? leaf_process_[x]
                : opts_.evaluation == mcts_evaluation::rollout
                    ? leaf_rollout_[x]
                    : (1 - opts_.mix_lambda) * leaf_process_[x] + opts_.mix_lambda * leaf_rollout_[x];
    }
  }

  struct rollout_run {
    std::uint32_t leaf = no_node;
    std::uint32_t key = 0;
    std::vector<token_id> tokens;
    state st{};
    bool done = false;
    bool complete = false;
  };

  // Rollouts from `leaves`, batched: one proposer call per step over every unfinished rollout.
  std::vector<rollout_run> run_rollouts(const std::vector<std::uint32_t>& leaves) {
    rollout_guard g(*this);
    auto& runs = g.runs;
    runs.resize(leaves.size());
    for (std::size_t i = 0; i < leaves.size(); ++i) {
      runs[i].leaf = leaves[i];
      runs[i].key = nodes_[leaves[i]].key;
    }
    if (leaves.empty()) return {};
    res_->rollouts += leaves.size();
    const auto n = static_cast<std::uint32_t>(opts_.rollout_samples);
    std::vector<std::size_t> active;
    for (std::size_t step = 0; step < opts_.max_rollout_steps; ++step) {
      active.clear();
      for (std::size_t i = 0; i < runs.size(); ++i) {
        const std::size_t depth = nodes_[runs[i].leaf].depth + step;
        if (!runs[i].done && (opts_.max_steps == 0 || depth < opts_.max_steps)) active.push_back(i);
      }
      if (active.empty()) break;
      if (step == 0) {
        std::vector<std::uint32_t> from;
        for (std::size_t i : active) from.push_back(runs[i].leaf);
        make_live(from, 0);
      } else {
        trim(limit_target(live_extra_));
      }
      items_.clear();
      for (std::size_t i : active) {
        runs[i].key = child_key(runs[i].key, rollout_slot);
        state* from = step == 0 ? &nodes_[runs[i].leaf].state : &runs[i].st;
        items_.push_back({from, runs[i].key, 0});
      }
      candidate_guard got(*this, propose(n));
      if (got.lists.size() != active.size())
        throw search_error("itscale: mcts: the proposer returned " + std::to_string(got.lists.size()) +
                           " candidate lists for a batch of " + std::to_string(active.size()));
      for (std::size_t j = 0; j < active.size(); ++j) {
        rollout_run& r = runs[active[j]];
        auto& list = got.lists[j];
        if (list.empty())
          throw search_error("itscale: mcts: the proposer returned no step for a rollout from node " +
                             std::to_string(r.leaf) + ", which is not terminal");
        std::size_t best = 0;
        for (std::size_t c = 1; c < list.size(); ++c)
          if (list[c].model_logprob > list[best].model_logprob ||
              (list[c].model_logprob == list[best].model_logprob && list[c].count > list[best].count))
            best = c;
        r.tokens.insert(r.tokens.end(), list[best].tokens.begin(), list[best].tokens.end());
        drop(r.st);
        r.st = std::move(list[best].state);
        if (list[best].terminal) {
          r.done = r.complete = true;
          drop(r.st);
        }
      }
      live_extra_ = 0;
      for (const auto& r : runs) live_extra_ += p_.is_live(std::as_const(r.st)) ? 1u : 0u;
      note_peak();
    }
    std::vector<rollout_run> out = std::move(runs);
    for (auto& r : out) drop(r.st);
    return out;
  }

  // --- backup -----------------------------------------------------------------------------------

  // Backs up each path's leaf value; a collided path only gives its virtual loss back. Returns
  // the simulations completed.
  std::size_t backup(std::size_t k) noexcept {
    std::size_t done = 0;
    for (std::size_t b = 0; b < k; ++b) {
      if (collided_[b] != 0) {
        for (std::uint32_t x : paths_[b]) --nodes_[x].in_flight;
        ++res_->collisions;
        continue;
      }
      ++done;
      const double v = nodes_[paths_[b].back()].value;
      for (std::uint32_t x : paths_[b]) {
        node& n = nodes_[x];
        --n.in_flight;
        ++n.visits;
        n.value_sum += v;
        n.value_max = std::max(n.value_max, v);
      }
    }
    return done;
  }

  // --- the final choice -------------------------------------------------------------------------

  // The children of x ranked by the choice rule (visited ones only).
  [[nodiscard]] std::vector<std::uint32_t> ranked(std::uint32_t x) const {
    const node& s = nodes_[x];
    struct entry {
      std::uint32_t id;
      double key;  // sampled: Gumbel-perturbed log(N)/tau
    };
    std::vector<entry> es;
    const counter_rng rng(opts_.seed, std::uint64_t{0x5A5A5A5Au} << 32 | s.key);
    for (std::size_t i = 0; i < s.children.size(); ++i) {
      const std::uint32_t c = s.children[i];
      if (nodes_[c].visits == 0) continue;
      double key = 0;
      if (opts_.choice == mcts_choice::sampled) {
        // Gumbel-top-k: ranking by log(N)/tau + Gumbel samples without replacement, prop. to N^(1/tau).
        const double u =
            detail::open_uniform(rng.bits(static_cast<std::uint32_t>(searches_), static_cast<std::uint32_t>(i))[0]);
        key = std::log(static_cast<double>(nodes_[c].visits)) / opts_.choice_temperature - std::log(-std::log(u));
      }
      es.push_back({c, key});
    }
    const auto better = [&](const entry& ea, const entry& eb) {
      const node& na = nodes_[ea.id];
      const node& nb = nodes_[eb.id];
      if (opts_.choice == mcts_choice::sampled && ea.key != eb.key) return ea.key > eb.key;
      if (opts_.choice == mcts_choice::value && q_of(na) != q_of(nb)) return q_of(na) > q_of(nb);
      if (na.visits != nb.visits) return na.visits > nb.visits;
      if (q_of(na) != q_of(nb)) return q_of(na) > q_of(nb);
      if (na.prior != nb.prior) return na.prior > nb.prior;
      return ea.id < eb.id;
    };
    std::sort(es.begin(), es.end(), better);
    std::vector<std::uint32_t> out;
    out.reserve(es.size());
    for (const auto& e : es) out.push_back(e.id);
    return out;
  }

  [[nodiscard]] std::uint32_t pick(std::uint32_t x) const {
    const auto r = ranked(x);
    return r.empty() ? no_node : r.front();
  }

  void write_sequences(mcts_result& res) const {
    const auto emit = [&](std::uint32_t first, std::size_t rank) {
      std::vector<std::uint32_t> path{root_};
      for (std::uint32_t x = first; x != no_node; x = nodes_[x].terminal ? no_node : pick(x)) path.push_back(x);
      generation g;
      g.sample = rank;
      g.tokens = committed_;
      g.logprob_sum = committed_logprob_;
      for (std::size_t i = 1; i < path.size(); ++i) {
        const node& n = nodes_[path[i]];
        g.tokens.insert(g.tokens.end(), n.step.begin(), n.step.end());
        g.logprob_sum += n.logprob;
      }
      const node& last = nodes_[path.back()];
      g.score = q_of(last);
      g.stop = last.terminal                         ? last.stop
               : res.status == run_status::cancelled ? stop_reason::cancelled
                                                     : stop_reason::budget;
      if (rank == 0) res.path = path;
      res.sequences.push_back(std::move(g));
    };
    if (nodes_[root_].terminal) {
      emit(no_node, 0);
      return;
    }
    const auto order = ranked(root_);
    if (!order.empty()) res.chosen = order.front();
    for (std::size_t r = 0; r < order.size() && r < opts_.num_return_sequences; ++r) emit(order[r], r);
  }

  // --- states and the handle budget -------------------------------------------------------------

  // Rebuilds the states of `xs` that were given back, first making room under the budget (the
  // nodes of `xs` are pinned: never the ones given back); `extra` live states are held elsewhere.
  void make_live(const std::vector<std::uint32_t>& xs, std::size_t extra) {
    std::size_t need = 0;
    for (std::uint32_t x : xs) {
      pinned_[x] = 1;
      if (!p_.is_live(std::as_const(nodes_[x].state))) ++need;
    }
    if (opts_.max_live_handles != 0) {
      const std::size_t target = limit_target(extra);
      trim(target > need ? target - need : 0);
    }
    for (std::uint32_t x : xs) pinned_[x] = 0;
    for (std::uint32_t x : xs) {
      if (p_.is_live(std::as_const(nodes_[x].state))) continue;
      p_.restore(nodes_[x].state);
      ++res_->restores;
      note_live(x);
    }
  }

  [[nodiscard]] std::size_t limit_target(std::size_t extra) const noexcept {
    if (opts_.max_live_handles == 0) return std::numeric_limits<std::size_t>::max();
    return opts_.max_live_handles > extra ? opts_.max_live_handles - extra : 0;
  }

  // Gives back the least recently used unpinned states until at most `target` are live.
  void trim(std::size_t target) noexcept {
    std::uint32_t x = lru_.oldest();
    while (live_ > target && x != detail::lru_order::none) {
      const std::uint32_t next = lru_.newer(x);
      if (pinned_[x] == 0) drop_state(x);
      x = next;
    }
  }

  void note_live(std::uint32_t x) {
    if (!p_.is_live(std::as_const(nodes_[x].state)) || lru_.contains(x)) return;
    ++live_;
    lru_.touch(x);
    note_peak();
  }
  void note_peak() noexcept { peak_ = std::max<std::uint64_t>(peak_, live_ + live_extra_); }

  void touch(std::uint32_t x) noexcept {
    if (opts_.max_live_handles != 0 && lru_.contains(x)) lru_.touch(x);
  }

  // The LRU list holds exactly the node states counted in live_ (robust to a proposer whose
  // is_live stays true after drop).
  void drop_state(std::uint32_t x) noexcept {
    if (lru_.contains(x)) {
      lru_.remove(x);
      --live_;
    }
    if (p_.is_live(std::as_const(nodes_[x].state))) p_.drop(nodes_[x].state);
  }
  void drop(state& s) noexcept {
    if (p_.is_live(std::as_const(s))) p_.drop(s);
  }

  // Drops every live state and forgets the tree.
  void clear() noexcept {
    for (std::uint32_t x = 0; x < nodes_.size(); ++x)
      if (p_.is_live(std::as_const(nodes_[x].state))) p_.drop(nodes_[x].state);
    nodes_.clear();
    lru_.clear();
    live_ = 0;
    live_extra_ = 0;
    root_ = no_node;
    to_expand_.clear();
    expanded_.clear();
    std::fill(queued_.begin(), queued_.end(), std::uint8_t{0});  // an exception may leave marks
    std::fill(pinned_.begin(), pinned_.end(), std::uint8_t{0});
  }

  // Drops the states left in candidate lists on every path (adopted ones were moved out).
  struct candidate_guard {
    mcts& m;
    std::vector<std::vector<step_candidate<state>>> lists;
    candidate_guard(mcts& owner, std::vector<std::vector<step_candidate<state>>>&& l) noexcept
        : m(owner), lists(std::move(l)) {}
    candidate_guard(const candidate_guard&) = delete;
    candidate_guard& operator=(const candidate_guard&) = delete;
    ~candidate_guard() {
      for (auto& l : lists)
        for (auto& c : l) m.drop(c.state);
    }
  };
  struct rollout_guard {
    mcts& m;
    std::vector<rollout_run> runs;
    explicit rollout_guard(mcts& owner) noexcept : m(owner) {}
    rollout_guard(const rollout_guard&) = delete;
    rollout_guard& operator=(const rollout_guard&) = delete;
    ~rollout_guard() {
      for (auto& r : runs) m.drop(r.st);
      m.live_extra_ = 0;
    }
  };

  void grow_scratch(std::size_t n = 0) {
    n = std::max(n, nodes_.size());
    if (queued_.size() < n) {
      queued_.resize(n, 0);
      pinned_.resize(n, 0);
      leaf_process_.resize(n, 0);
      leaf_rollout_.resize(n, 0);
    }
    lru_.grow(n);
  }

  void sequence_into(std::uint32_t x, std::vector<token_id>& out) const {
    out.assign(committed_.begin(), committed_.end());
    const std::size_t base = out.size();
    std::uint32_t d = 0;
    for (std::uint32_t y = x; y != root_ && y != no_node; y = nodes_[y].parent)
      d += static_cast<std::uint32_t>(nodes_[y].step.size());
    out.resize(base + d);
    std::size_t end = out.size();
    for (std::uint32_t y = x; y != root_ && y != no_node; y = nodes_[y].parent) {
      const auto& st = nodes_[y].step;
      end -= st.size();
      std::copy(st.begin(), st.end(), out.begin() + static_cast<std::ptrdiff_t>(end));
    }
  }

  // What this search has spent: the proposer's work since it started, plus the verifier's.
  [[nodiscard]] compute_stats spent() const {
    const compute_stats& now = p_.stats();
    compute_stats s = detail::stats_since(now, base_);
    s.verifier_calls += run_.verifier_calls;
    s.verified_sequences += run_.verified_sequences;
    s.verifier_seconds += run_.verifier_seconds;
    return s;
  }

  P& p_;
  V& v_;
  mcts_options opts_;
  std::vector<token_id> prompt_;
  std::vector<token_id> committed_;
  double committed_logprob_ = 0;
  std::vector<node> nodes_;
  std::uint32_t root_ = no_node;
  std::uint64_t searches_ = 0;
  bool charge_root_ = false;  // the next search's compute includes the root's creation

  // handle accounting
  detail::lru_order lru_;
  std::size_t live_ = 0;        // live node states
  std::size_t live_extra_ = 0;  // live rollout states
  std::uint64_t peak_ = 0;

  // per-search and per-round scratch
  compute_stats base_;
  compute_stats run_;
  mcts_result* res_ = nullptr;
  std::vector<std::vector<std::uint32_t>> paths_;
  std::vector<path_end> ends_;
  std::vector<std::uint32_t> to_expand_, expanded_;
  std::vector<std::uint32_t> leaves_;
  std::vector<std::uint8_t> queued_, pinned_, collided_;
  std::vector<double> leaf_process_, leaf_rollout_;
  std::vector<propose_item<state>> items_;
  std::vector<std::uint32_t> ids_;
  std::vector<std::vector<token_id>> seqs_;
  std::vector<double> noise_;
};

/// One search from `prompt` with a fresh tree (see `mcts`); every state is released on return.
template <StepProposer P, Verifier V>
[[nodiscard]] mcts_result mcts_search(P& proposer, V& verifier, std::span<const token_id> prompt,
                                      const mcts_options& options = {}) {
  mcts<P, V> m(proposer, verifier, prompt, options);
  return m.search();
}

ITSCALE_END_NAMESPACE
