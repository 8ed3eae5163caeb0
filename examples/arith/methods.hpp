// The methods of itscale_scaling (and of bench/scaling.cpp): each is one function
// (problem, budget, worker) -> {answer, compute} that calls the library; the example only turns
// tokens into an answer. `methods` is the table, with what each method's budget means.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <itscale/search.hpp>
#include <itscale/select/adaptive_consistency.hpp>
#include <itscale/select/best_of_n.hpp>
#include <itscale/select/self_consistency.hpp>

#include "arith_task.hpp"

namespace arith {

using itscale::token_id;
using model_t = itscale::llama2c_model;

/// What the methods share besides the budget.
struct method_settings {
  std::uint64_t seed = 1;       ///< of the samples and the verifier's noise (each problem has its own streams)
  float temperature = 0.7f;     ///< of every sampling method (the models README's reference)
  double verifier_noise = 0;    ///< probability that the calculator's verdict is flipped
};

/// One problem as the workers see it.
struct task {
  std::size_t index = 0;         ///< keys the problem's random streams
  arith::problem problem;
  std::string text;              ///< the prompt, e.g. "37+45-18+9="
  long answer = 0;
  std::vector<token_id> prompt;  ///< its tokens
};

/// A verifier whose verdicts are flipped with probability `noise`, as a function of
/// (seed, the item's tokens, complete): the same item always gets the same verdict, whatever the
/// batching, the order or the thread. Shows what an imperfect verifier does to each method.
template <itscale::Verifier V>
class noisy_verifier {
 public:
  noisy_verifier(V inner, double noise, std::uint64_t seed) : inner_(std::move(inner)), noise_(noise), seed_(seed) {}

  std::vector<double> verify(std::span<const itscale::verify_item> batch) {
    std::vector<double> out = inner_.verify(batch);
    if (noise_ > 0)
      for (std::size_t i = 0; i < batch.size() && i < out.size(); ++i)
        if (flip(batch[i])) out[i] = inner_.range().hi - (out[i] - inner_.range().lo);
    return out;
  }
  [[nodiscard]] itscale::score_range range() const noexcept { return inner_.range(); }
  [[nodiscard]] std::string_view name() const noexcept { return inner_.name(); }
  [[nodiscard]] const V& inner() const noexcept { return inner_; }

 private:
  [[nodiscard]] bool flip(const itscale::verify_item& it) const {
    std::uint64_t h = 0xcbf29ce484222325ull ^ (it.complete ? 0x9e3779b97f4a7c15ull : 0);  // FNV-1a
    const auto mix = [&h](std::span<const token_id> ts) {
      for (token_id t : ts) h = (h ^ static_cast<std::uint32_t>(t)) * 0x100000001b3ull;
      h = (h ^ 0xffffffffull) * 0x100000001b3ull;  // separates the prompt from the sequence
    };
    mix(it.prompt);
    mix(it.sequence);
    return itscale::counter_rng(seed_, h).uniform(0) < noise_;
  }

  V inner_;
  double noise_;
  std::uint64_t seed_;
};

/// What one method run on one problem gives.
struct outcome {
  std::optional<long> answer;
  itscale::compute_stats compute;
  std::vector<token_id> completion;  ///< the chosen sequence (for --answers), if the method has one
};

struct worker;
using method_fn = outcome (*)(const task&, std::size_t budget, worker&);

/// A method of the table: its name, what its budget means, and whether it has a width at all.
struct method_def {
  const char* name;
  const char* budget_meaning;  // "" for width-less methods (run at budget 1 only)
  method_fn run;
};

/// Per-thread state: its own model instances (sources are not thread-safe), the verifier, and
/// the per-problem live start and sample pool that several methods share.
struct worker {
  const method_settings& cfg;
  const itscale::llama2c_tokenizer& tok;
  model_t model, amateur, reference;
  noisy_verifier<calculator_verifier> verifier;  // exact when the noise is 0
  token_id semicolon;                             // the step delimiter
  // Per problem (reset by `begin`):
  std::optional<itscale::prefilled<model_t>> start;  // one prefill shared by every method that starts live
  std::vector<itscale::generation> pool;             // samples 0..pool.size()-1 of the problem's stream
  std::vector<std::pair<std::size_t, itscale::compute_stats>> pool_cost;  // (samples drawn, compute so far)

  worker(const method_settings& c, const itscale::llama2c_tokenizer& t, const std::shared_ptr<const itscale::llama2c_weights>& w,
         const std::shared_ptr<const itscale::llama2c_weights>& wa, const std::shared_ptr<const itscale::llama2c_weights>& wr)
      : cfg(c), tok(t), model(w), amateur(wa), reference(wr), verifier(calculator_verifier(t), c.verifier_noise, c.seed),
        semicolon(token_of(t, ";")) {}

  static token_id token_of(const itscale::llama2c_tokenizer& tok, std::string_view piece) {
    for (std::size_t i = 0; i < tok.vocab_size(); ++i)
      if (tok.piece(static_cast<token_id>(i)) == piece) return static_cast<token_id>(i);
    throw std::invalid_argument("the tokenizer has no token '" + std::string(piece) + "'");
  }

  /// The seed of a problem's searches (their proposers key streams by node id, so problems need
  /// seeds of their own): 64 bits of the stream (settings seed, problem index).
  [[nodiscard]] std::uint64_t problem_seed(const task& t) const {
    const auto b = itscale::counter_rng(cfg.seed, t.index).bits(0xFFFFFFFFu, 0);
    return std::uint64_t{b[0]} << 32 | b[1];
  }

  void begin(const task& t) {
    pool.clear();
    pool_cost.assign(1, {0, itscale::compute_stats{}});
    start.reset();
    start.emplace(itscale::prefill(model, t.prompt));
  }
  void end() {
    pool.clear();
    start.reset();
  }

  [[nodiscard]] std::size_t max_new_tokens(const task& t) const { return model.config().seq_len - t.prompt.size(); }
  [[nodiscard]] std::optional<long> answer_of(std::span<const token_id> completion) const {
    return extract_answer(verifier.inner().text(completion));
  }
  /// The answer extractor of the selection methods.
  [[nodiscard]] auto extractor() const {
    return [this](std::span<const token_id> completion) { return answer_of(completion); };
  }
  [[nodiscard]] itscale::stopping stop(const task& t) const {
    return {.max_new_tokens = max_new_tokens(t), .eos_token_id = {itscale::llama2c_tokenizer::eos}};
  }
  [[nodiscard]] itscale::sampling_options sampling(const task& t) const {
    return {.stop = stop(t), .do_sample = true, .seed = cfg.seed, .temperature = cfg.temperature};
  }

  /// The first `n` samples of the problem's pool and what drawing them cost. Samples are drawn in
  /// chunks (first_sample = the number drawn before) forking the shared prefill, so the first n
  /// are the same whatever n, and the cost of the first n is the sum of the chunks' compute.
  std::pair<std::span<const itscale::generation>, itscale::compute_stats> samples(const task& t, std::size_t n) {
    if (n > pool.size()) {
      itscale::sampling_options so = sampling(t);
      so.num_return_sequences = n - pool.size();
      const itscale::live_request<model_t> r{&*start, static_cast<std::uint32_t>(t.index),
                                             static_cast<std::uint32_t>(pool.size())};
      auto got = itscale::generate(model, std::span<const itscale::live_request<model_t>>(&r, 1), so);
      itscale::compute_stats c = pool_cost.back().second;
      c += got.compute;
      for (auto& g : got.sequences) pool.push_back(std::move(g));
      pool_cost.emplace_back(pool.size(), c);
    }
    for (const auto& [drawn, c] : pool_cost)
      if (drawn == n) return {std::span<const itscale::generation>(pool).first(n), c};
    // Budgets are run in ascending order, so every n asked for is a chunk boundary.
    throw std::logic_error("sample pool: " + std::to_string(n) + " is not a chunk boundary");
  }
};

// ---- The methods. Each calls the library; the example only extracts the answer. ----

inline outcome run_greedy(const task& t, std::size_t, worker& w) {
  const auto r = itscale::generate(w.model, *w.start, {.stop = w.stop(t)});
  return {w.answer_of(r[0].tokens), r.compute, r[0].tokens};
}

inline outcome run_beam(const task& t, std::size_t n, worker& w) {
  const auto r = itscale::beam_search(w.model, *w.start, {.num_beams = n, .stop = w.stop(t)});
  return {w.answer_of(r[0].tokens), r.compute, r[0].tokens};
}

/// Self-consistency, N samples of the problem's stream (the pool's first N), voted by `how`.
inline outcome vote(const task& t, std::size_t n, worker& w, itscale::vote_weight how) {
  const itscale::request req{t.prompt, static_cast<std::uint32_t>(t.index)};
  const auto r = itscale::self_consistency(w.model, std::span<const itscale::request>(&req, 1), w.extractor(),
                                           {.samples = n, .sampling = w.sampling(t), .weight = how});
  return {r[0].vote.answer, r.compute, {}};
}
inline outcome run_majority(const task& t, std::size_t n, worker& w) { return vote(t, n, w, itscale::vote_weight::count); }
inline outcome run_weighted_vote(const task& t, std::size_t n, worker& w) {
  return vote(t, n, w, itscale::vote_weight::mean_logprob);
}

inline outcome run_adaptive(const task& t, std::size_t n, worker& w) {
  const itscale::request req{t.prompt, static_cast<std::uint32_t>(t.index)};
  const auto r = itscale::adaptive_consistency(w.model, std::span<const itscale::request>(&req, 1), w.extractor(),
                                               {.rule = itscale::stop_rule::beta, .confidence = 0.95, .max_samples = n,
                                                .sampling = w.sampling(t)});
  return {r[0].vote.answer, r.compute, {}};
}

inline outcome run_best_of_n(const task& t, std::size_t n, worker& w) {
  auto [cands, c] = w.samples(t, n);
  const auto r = itscale::best_of_n(w.verifier, t.prompt, cands);
  c += r.compute;
  return {w.answer_of(cands[r.best].tokens), c, cands[r.best].tokens};
}

inline outcome run_weighted_best_of_n(const task& t, std::size_t n, worker& w) {
  auto [cands, c] = w.samples(t, n);
  const auto r = itscale::weighted_best_of_n(w.verifier, t.prompt, cands, w.extractor());
  c += r.compute;
  return {r.vote.answer, c, cands[r.best].tokens};
}

inline const method_def methods[] = {
    {"greedy", "", run_greedy},
    {"beam", "beam search with N beams", run_beam},
    {"majority", "N samples, majority vote (self-consistency)", run_majority},
    {"weighted_vote", "N samples, votes weighted by exp(mean token log-prob)", run_weighted_vote},
    {"adaptive", "at most N samples, drawn until the Beta criterion is 95 % sure of the vote", run_adaptive},
    {"best_of_n", "N samples, the calculator's best (first on ties)", run_best_of_n},
    {"weighted_best_of_n", "N samples, the calculator's scores summed per answer", run_weighted_best_of_n},
};

inline const method_def* find_method(std::string_view name) {
  for (const auto& m : methods)
    if (name == m.name) return &m;
  return nullptr;
}

}  // namespace arith
