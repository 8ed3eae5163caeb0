// itscale_bench_scaling: where itscale_scaling's time goes (issue 12).
//
//   scaling/method:<name>/N:16   every method of examples/arith/methods.hpp at budget 16 (width-less
//                                methods at 1) on 10 generated problems (2..6 operations, seed 1)
//       library_share   = 1 - source_seconds / wall_seconds, both from the runs' compute_stats:
//                         search, proposer, verifier, kernels and bookkeeping against the model's
//                         forward passes (goal: below 10 % for every method)
//       tokens_per_s    = generated tokens (compute_stats) / wall seconds
//       rows_per_extend = extend_rows / extend_calls: the batch size the method gives the model
//   scaling/llama2c_extend/batch:B   the llama2.c backend (arith-1750.bin) alone: B sequences
//                                forked from one prompt, extended together for 64 steps;
//                                tokens_per_s at the batch sizes the methods use
//
// One thread (the program's workers each run their own model on one thread).

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <itscale/search.hpp>

#include "../examples/arith/methods.hpp"

namespace {

const std::string models = std::string(ITSCALE_DATA_DIR) + "/models/";

struct fixture {
  itscale::llama2c_tokenizer tok = itscale::llama2c_tokenizer::load(models + "arith-tok.bin");
  std::shared_ptr<const itscale::llama2c_weights> model = load("arith-1750.bin"), amateur = load("arith-750.bin"),
                                                  reference = load("arith-2500.bin");
  std::vector<arith::problem> problems;
  std::vector<arith::task> tasks;

  fixture() {
    problems = arith::make_problems(1, 10, 2, 6);
    for (std::size_t i = 0; i < problems.size(); ++i) {
      const std::string text = problems[i].prompt();
      tasks.push_back({i, problems[i], text, problems[i].answer(), arith::encode_prompt(tok, text)});
    }
  }
  static std::shared_ptr<const itscale::llama2c_weights> load(const std::string& f) {
    return std::make_shared<const itscale::llama2c_weights>(itscale::load_llama2c_checkpoint(models + f));
  }
};

fixture& data() {
  static fixture f;
  return f;
}

void method(benchmark::State& state, const arith::method_def* m) {
  auto& d = data();
  const arith::method_settings settings;
  arith::worker w(settings, d.tok, d.model, d.amateur, d.reference);
  const std::size_t n = *m->budget_meaning ? 16 : 1;
  itscale::compute_stats total;
  std::size_t correct = 0, runs = 0;
  for (auto _ : state) {
    for (const auto& t : d.tasks) {
      w.begin(t);
      const auto o = m->run(t, n, w);
      w.end();
      total += o.compute;
      correct += o.answer && *o.answer == t.answer;
      ++runs;
    }
  }
  state.counters["library_share"] = total.wall_seconds > 0 ? 1 - total.source_seconds / total.wall_seconds : 0;
  state.counters["tokens_per_s"] = total.wall_seconds > 0 ? static_cast<double>(total.generated_tokens()) / total.wall_seconds : 0;
  state.counters["rows_per_extend"] =
      total.extend_calls ? static_cast<double>(total.extend_rows) / static_cast<double>(total.extend_calls) : 0;
  state.counters["accuracy"] = runs ? static_cast<double>(correct) / static_cast<double>(runs) : 0;
  state.counters["tokens_per_problem"] = runs ? static_cast<double>(total.generated_tokens()) / static_cast<double>(runs) : 0;
}

void llama2c_extend(benchmark::State& state) {
  auto& d = data();
  itscale::llama2c_model model(d.model);
  const auto batch = static_cast<std::size_t>(state.range(0));
  constexpr std::size_t steps = 64;
  const auto& prompt = d.tasks[0].prompt;
  std::vector<itscale::llama2c_model::handle> parents(batch), children(batch);
  std::vector<itscale::token_id> next(batch);
  std::size_t tokens = 0;
  for (auto _ : state) {
    const auto root = model.prefill(prompt);
    for (auto& p : parents) p = root;
    for (std::size_t s = 0; s < steps && prompt.size() + s < model.config().seq_len; ++s) {
      for (std::size_t i = 0; i < batch; ++i) next[i] = static_cast<itscale::token_id>(260 + (s + i) % 15);
      model.extend(parents, next, children);
      benchmark::DoNotOptimize(model.logits().data);
      for (std::size_t i = 0; i < batch; ++i) {
        if (s > 0) model.release(parents[i]);
        parents[i] = children[i];
      }
      tokens += batch;
    }
    for (auto p : parents) model.release(p);
    model.release(root);
  }
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}

}  // namespace

int main(int argc, char** argv) {
  for (const auto& m : arith::methods)
    benchmark::RegisterBenchmark(("scaling/method:" + std::string(m.name) + "/N:" + (*m.budget_meaning ? "16" : "1")).c_str(),
                                 method, &m)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1);
  benchmark::RegisterBenchmark("scaling/llama2c_extend", llama2c_extend)
      ->ArgName("batch")
      ->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(16)->Arg(32)->Arg(64)
      ->Unit(benchmark::kMillisecond);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
