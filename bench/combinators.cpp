// The model-level combinators on the chain-arithmetic checkpoints (tests/data/models/README.md):
// greedy accuracy and cost of
//
//   model/step:S              arith-S alone (750 = the weak early checkpoint, 1750 = the main
//                             model, 2500 = trained longest)
//   contrastive/a:A/b:B       contrastive decoding, expert arith-1750, amateur arith-750,
//                             alpha = A / 100, beta = B / 100
//   ensemble/poe, /mixture    arith-1750 + arith-2500, equal weights
//   cfg/g:G                   classifier-free guidance on arith-1750, unconditional prompt = BOS,
//                             gamma = G / 100
//
// Each benchmark decodes the same problems greedily (all prompts in one batch, one batched extend
// per step, EOS or 100 new tokens) and reports counters: accuracy (final answer after '#' equals
// the true result), correct, problems, fixed / broken (problems arith-1750 alone gets wrong / right
// that this configuration gets right / wrong), tokens (generated, per problem), rows_per_token
// (model rows evaluated per generated token, about 1 for one model and 2 for the two-sequence
// combinators; the final EOS is never evaluated, hence slightly less). Problems come
// from the README's generator rules, 2-5 operations uniformly, fixed seed; ITSCALE_BENCH_PROBLEMS
// sets their number (default 100).
//
// The checkpoints are read from ITSCALE_DATA_DIR/models; a missing one is an error.

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <itscale/backends/cfg_source.hpp>
#include <itscale/backends/contrastive_source.hpp>
#include <itscale/backends/ensemble_source.hpp>
#include <itscale/backends/llama2c_checkpoint.hpp>
#include <itscale/backends/llama2c_model.hpp>
#include <itscale/backends/llama2c_tokenizer.hpp>
#include <itscale/core/metered_source.hpp>
#include <itscale/decode/generate.hpp>

namespace {

using itscale::token_id;
namespace fs = std::filesystem;

const fs::path models_dir = fs::path(ITSCALE_DATA_DIR) / "models";

struct problem {
  std::string prompt;  // "37+45-18+9="
  long answer = 0;
};

// The README's generator: first operand uniform in 10..99; each later operand uniform in 10..99
// with probability 0.85, else 1..9; '+' or '-' with probability 1/2, except that a '-' making the
// running total negative becomes '+', and a '+' taking it above 999 becomes '-'.
std::vector<problem> make_problems(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  const auto uniform = [&g](long lo, long hi) { return std::uniform_int_distribution<long>(lo, hi)(g); };
  std::vector<problem> out;
  for (std::size_t i = 0; i < n; ++i) {
    const long ops = uniform(2, 5);
    long total = uniform(10, 99);
    problem p{std::to_string(total), 0};
    for (long k = 0; k < ops; ++k) {
      const long y = std::bernoulli_distribution(0.85)(g) ? uniform(10, 99) : uniform(1, 9);
      bool add = std::bernoulli_distribution(0.5)(g);
      if (!add && total - y < 0) add = true;
      else if (add && total + y > 999) add = false;
      total = add ? total + y : total - y;
      p.prompt += (add ? "+" : "-") + std::to_string(y);
    }
    p.prompt += "=";
    p.answer = total;
    out.push_back(std::move(p));
  }
  return out;
}

std::size_t problem_count() {
  const char* env = std::getenv("ITSCALE_BENCH_PROBLEMS");
  const long n = env != nullptr ? std::atol(env) : 100;
  return n > 0 ? static_cast<std::size_t>(n) : 100;
}

struct data {
  itscale::llama2c_tokenizer tok;
  std::shared_ptr<const itscale::llama2c_weights> w750, w1750, w2500;
  std::vector<problem> problems;
  std::vector<std::vector<token_id>> prompts;
};

// Everything loaded once; null after reporting a missing file on `st`.
const data* load(benchmark::State& st) {
  static std::unique_ptr<data> d;
  static std::string error;
  if (!d && error.empty()) {
    for (const char* f : {"arith-tok.bin", "arith-750.bin", "arith-1750.bin", "arith-2500.bin"})
      if (!fs::exists(models_dir / f)) error = (models_dir / f).string() + " not found (ITSCALE_DATA_DIR/models)";
    if (error.empty()) {
      const auto weights = [](const char* f) {
        return std::make_shared<const itscale::llama2c_weights>(itscale::load_llama2c_checkpoint(models_dir / f));
      };
      d = std::make_unique<data>(data{itscale::llama2c_tokenizer::load(models_dir / "arith-tok.bin"),
                                      weights("arith-750.bin"), weights("arith-1750.bin"), weights("arith-2500.bin"),
                                      make_problems(problem_count(), 20240611), {}});
      for (const problem& p : d->problems) d->prompts.push_back(d->tok.encode(p.prompt, /*add_bos=*/true));
    }
  }
  if (!error.empty()) st.SkipWithError(error.c_str());
  return d.get();
}

// The number after the last '#' of a completion, or -1.
long answer_of(const std::string& text) {
  const auto hash = text.rfind('#');
  if (hash == std::string::npos || hash + 1 >= text.size()) return -1;
  long v = 0;
  std::size_t i = hash + 1;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9' && i < hash + 8; ++i) v = v * 10 + (text[i] - '0');
  return i == hash + 1 ? -1 : v;
}

const itscale::sampling_options greedy{
    .stop = {.max_new_tokens = 100, .eos_token_id = {itscale::llama2c_tokenizer::eos}}};

// Which problems `source` answers right, greedily (all prompts in one batch); adds the tokens it
// generated to `generated`.
template <class S>
std::vector<bool> right_answers(S& source, const data& d, std::size_t& generated) {
  const auto out = itscale::generate(source, d.prompts, greedy);
  std::vector<bool> right(out.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    generated += out[i].tokens.size();
    right[i] = answer_of(d.tok.decode(out[i].tokens)) == d.problems[i].answer;
  }
  return right;
}

// arith-1750's answers alone: the baseline the paired counters compare with.
const std::vector<bool>& baseline(const data& d) {
  static const std::vector<bool> right = [&] {
    itscale::llama2c_model m(d.w1750);
    std::size_t ignored = 0;
    return right_answers(m, d, ignored);
  }();
  return right;
}

// Greedy decoding of every problem on `source`; `model_rows` reads the model rows evaluated so far.
// Counters `fixed` / `broken`: problems arith-1750 alone gets wrong / right that this gets right /
// wrong (paired, on the same problems).
template <class S, class Rows>
void measure(benchmark::State& st, const data& d, S& source, Rows model_rows) {
  const std::vector<bool>& base = baseline(d);
  std::size_t correct = 0, generated = 0, rows = 0, fixed = 0, broken = 0;
  for (auto _ : st) {
    const std::size_t rows0 = model_rows();
    generated = 0;
    const std::vector<bool> right = right_answers(source, d, generated);
    rows = model_rows() - rows0;
    correct = fixed = broken = 0;
    for (std::size_t i = 0; i < right.size(); ++i) {
      correct += right[i] ? 1u : 0u;
      fixed += right[i] && !base[i] ? 1u : 0u;
      broken += !right[i] && base[i] ? 1u : 0u;
    }
  }
  const auto n = static_cast<double>(d.problems.size());
  st.counters["accuracy"] = static_cast<double>(correct) / n;
  st.counters["correct"] = static_cast<double>(correct);
  st.counters["fixed"] = static_cast<double>(fixed);
  st.counters["broken"] = static_cast<double>(broken);
  st.counters["problems"] = n;
  st.counters["tokens"] = static_cast<double>(generated) / n;
  st.counters["rows_per_token"] = generated > 0 ? static_cast<double>(rows) / static_cast<double>(generated) : 0;
}

// Model rows (prompt tokens excluded) counted by a metered wrapper.
struct counted_model {
  itscale::compute_stats stats;
  itscale::llama2c_model model;
  itscale::metered_source<itscale::llama2c_model> metered{model, stats};
  explicit counted_model(std::shared_ptr<const itscale::llama2c_weights> w) : model(std::move(w)) {}
  counted_model(const counted_model&) = delete;
  counted_model& operator=(const counted_model&) = delete;
  [[nodiscard]] std::size_t rows() const { return static_cast<std::size_t>(stats.generated_tokens()); }
};

void model_alone(benchmark::State& st) {
  const data* d = load(st);
  if (d == nullptr) return;
  const auto step = st.range(0);
  counted_model m(step == 750 ? d->w750 : step == 1750 ? d->w1750 : d->w2500);
  measure(st, *d, m.metered, [&] { return m.rows(); });
}

void contrastive(benchmark::State& st) {
  const data* d = load(st);
  if (d == nullptr) return;
  counted_model expert(d->w1750), amateur(d->w750);
  auto cd = itscale::make_contrastive(expert.metered, amateur.metered,
                                      {.alpha = static_cast<double>(st.range(0)) / 100,
                                       .beta = static_cast<double>(st.range(1)) / 100});
  measure(st, *d, cd, [&] { return expert.rows() + amateur.rows(); });
}

void ensemble(benchmark::State& st, itscale::ensemble_mode mode) {
  const data* d = load(st);
  if (d == nullptr) return;
  counted_model a(d->w1750), b(d->w2500);
  auto e = itscale::make_ensemble({.mode = mode}, a.metered, b.metered);
  measure(st, *d, e, [&] { return a.rows() + b.rows(); });
}

void cfg(benchmark::State& st) {
  const data* d = load(st);
  if (d == nullptr) return;
  counted_model m(d->w1750);
  auto g = itscale::make_cfg(m.metered, {.gamma = static_cast<double>(st.range(0)) / 100,
                                         .unconditional_prompt = {itscale::llama2c_tokenizer::bos}});
  measure(st, *d, g, [&] { return m.rows(); });
}

}  // namespace

BENCHMARK(model_alone)->ArgName("step")->Arg(750)->Arg(1750)->Arg(2500)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(contrastive)
    ->ArgNames({"a", "b"})
    ->Args({10, 10})
    ->Args({25, 10})
    ->Args({50, 10})
    ->Args({100, 10})
    ->Args({50, 50})
    ->Args({100, 50})
    ->Args({50, 0})
    ->Args({100, 0})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(ensemble, poe, itscale::ensemble_mode::log_prob)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(ensemble, mixture, itscale::ensemble_mode::mixture)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(cfg)->ArgName("g")->Arg(150)->Arg(300)->Iterations(1)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
