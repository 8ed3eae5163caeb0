// itscale_scaling: inference-time scaling curves on a real model. Chain-arithmetic problems
// (tests/data/models/README.md) are solved by arith-1750.bin with every search method of the
// library at growing budgets; the program writes results.csv and accuracy_vs_tokens.svg
// (accuracy against mean generated tokens per problem, with arith-2500.bin's greedy accuracy as
// the reference line: inference compute standing in for training compute).
//
//   itscale_scaling [--count N] [--ops 2,3,4,5,6] [--seed N] [--problems FILE.jsonl]
//                   [--methods greedy,beam,...] [--budgets 1,2,4,8,16] [--threads N] [--out DIR] ...
//
// Every compute figure is the library's own accounting (`compute_stats` of each run). Each method
// is one function (problem, budget, worker) -> {answer, compute}; the table `methods` says what
// each method's budget means. Results do not depend on --threads: each problem's runs draw their
// randomness from streams keyed by the problem's index, and every model is bit-identical across
// thread counts.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <itscale/search.hpp>

#include "arith/arith_task.hpp"
#include "arith/methods.hpp"
#include "arith/problems_file.hpp"
#include "arith/report.hpp"
#include "cli.hpp"

namespace {

#ifdef ITSCALE_DATA_DIR
const std::filesystem::path models_dir = std::filesystem::path(ITSCALE_DATA_DIR) / "models";
#else
const std::filesystem::path models_dir = "tests/data/models";  // from the top of the repo
#endif

using itscale::token_id;
using arith::method_def;
using arith::methods;
using arith::outcome;
using arith::task;

/// A bad command line or input file: exit code 2.
struct usage_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct config {
  std::size_t count = 60;
  std::vector<std::size_t> ops = {2, 3, 4, 5, 6};
  std::uint64_t seed = 1;
  std::string problems_file;
  std::string model = (models_dir / "arith-1750.bin").string();
  std::string amateur = (models_dir / "arith-750.bin").string();
  std::string reference = (models_dir / "arith-2500.bin").string();
  std::string tokenizer = (models_dir / "arith-tok.bin").string();
  std::size_t threads = std::max(1u, std::min(2u, std::thread::hardware_concurrency()));
  arith::method_settings settings;
  std::vector<std::string> methods;  // empty: all
  std::vector<std::size_t> budgets = {1, 2, 4, 8, 16};
  std::string out = "scaling-out";
  bool answers = false;
  bool quiet = false;
};

using arith::find_method;

std::string method_names() {
  std::string s;
  for (const auto& m : methods) s += (s.empty() ? "" : ", ") + std::string(m.name);
  return s;
}

// ---- Problems ----

// The reader lives in arith/problems_file.hpp (shared with its tests and the fuzz target); a bad
// file is a usage error here (exit code 2).
std::vector<arith::problem> read_problems(const std::string& path) {
  try {
    return arith::read_problems(path);
  } catch (const arith::problems_file_error& e) {
    throw usage_error(std::string("--problems: ") + e.what());
  }
}

std::string ops_text(const std::vector<std::size_t>& ops) {
  auto lo = *std::min_element(ops.begin(), ops.end()), hi = *std::max_element(ops.begin(), ops.end());
  return lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
}

// ---- Progress on stderr ----

class progress {
 public:
  progress(std::size_t total, bool quiet) : total_(total), quiet_(quiet), tty_(isatty(STDERR_FILENO) == 1) {}
  void add(std::size_t n) { done_ += n; }
  /// Redraws (terminal) or prints a line every ~10 % (otherwise).
  void show(bool final = false) {
    if (quiet_) return;
    const std::size_t d = done_.load();
    const double s = clock_.seconds(), rate = s > 0 ? static_cast<double>(d) / s : 0;
    const double left = rate > 0 ? static_cast<double>(total_ - d) / rate : 0;
    if (tty_) {
      constexpr int width = 30;
      const int fill = total_ ? static_cast<int>(width * d / total_) : width;
      std::fprintf(stderr, "\r[%.*s%*s] %zu/%zu runs  %.1f runs/s  %s left   ", fill,
                   "##############################", width - fill, "", d, total_, rate, clock(left).c_str());
      if (final) std::fputc('\n', stderr);
    } else {
      const std::size_t tenth = total_ ? 10 * d / total_ : 10;
      if (tenth == last_tenth_ && !final) return;
      last_tenth_ = tenth;
      std::fprintf(stderr, "progress: %zu/%zu runs, %.1f runs/s, %s left\n", d, total_, rate, clock(left).c_str());
    }
    std::fflush(stderr);
  }

 private:
  static std::string clock(double s) {
    const auto t = static_cast<long>(std::lround(s));
    return arith::format("%ld:%02ld", t / 60, t % 60);
  }
  std::size_t total_;
  bool quiet_, tty_;
  std::atomic<std::size_t> done_{0};
  std::size_t last_tenth_ = static_cast<std::size_t>(-1);
  itscale::detail::stopwatch clock_;
};

// ---- Command line ----

void add_options(CLI::App& app, config& c) {
  using itscale_examples::non_negative_integer;
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(40);
  app.add_option("--count", c.count, "problems to generate")->transform(non_negative_integer);
  app.add_option("--ops", c.ops, "operations per problem, cycled over the problems")
      ->delimiter(',')->transform(non_negative_integer);
  app.add_option("--seed", c.seed, "seed of the problems, the samples and the verifier's noise")
      ->transform(non_negative_integer);
  app.add_option("--problems", c.problems_file, "read problems from a JSONL file ({\"prompt\": \"37+45-18+9=\", "
                                                "\"answer\": 73} a line) instead of generating them");
  app.add_option("--model", c.model, "the model that searches (llama2.c checkpoint)");
  app.add_option("--amateur", c.amateur, "the amateur of contrastive decoding");
  app.add_option("--reference-model", c.reference, "its greedy accuracy is the chart's reference line");
  app.add_option("--tokenizer", c.tokenizer, "llama2.c tokenizer of the three models");
  app.add_option("--threads", c.threads, "worker threads, each with its own models (results do not depend on it)")
      ->transform(non_negative_integer);
  app.add_option("--verifier-noise", c.settings.verifier_noise, "probability that the calculator's verdict is flipped (seeded)");
  app.add_option("--temperature", c.settings.temperature, "sampling temperature of every sampling method");
  std::string all;
  for (const auto& m : methods) all += (all.empty() ? "" : ",") + std::string(m.name);
  app.add_option("--methods", c.methods, "methods to run (default: all): " + all)->delimiter(',');
  app.add_option("--budgets", c.budgets, "budgets: each method's width (see below)")
      ->delimiter(',')->transform(non_negative_integer);
  app.add_option("--out", c.out, "output folder: results.csv, accuracy_vs_tokens.svg");
  app.add_flag("--answers", c.answers, "also write DIR/answers.csv (every run's answer)");
  app.add_flag("--quiet", c.quiet, "no progress on stderr");
  std::string foot = "What the budget N means per method:\n";
  for (const auto& m : methods)
    foot += arith::format("  %-20s %s%s\n", m.name, m.budget_meaning, m.has_width ? "" : " (no width: budget 1 only)");
  foot += "Bad values, an unknown method or a malformed problems file exit with code 2 and a message on stderr.";
  app.footer(foot);
}

void check(config& c) {
  if (c.methods.empty())
    for (const auto& m : methods) c.methods.push_back(m.name);
  for (const auto& m : c.methods)
    if (find_method(m) == nullptr) throw usage_error("--methods: unknown method '" + m + "' (known: " + method_names() + ")");
  for (std::size_t i = 0; i < c.methods.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (c.methods[i] == c.methods[j]) throw usage_error("--methods: '" + c.methods[i] + "' is given twice");
  if (c.budgets.empty()) throw usage_error("--budgets: give at least one budget");
  for (auto b : c.budgets)
    if (b == 0 || b > 1024) throw usage_error("--budgets: " + std::to_string(b) + " is not in [1, 1024]");
  std::sort(c.budgets.begin(), c.budgets.end());
  c.budgets.erase(std::unique(c.budgets.begin(), c.budgets.end()), c.budgets.end());
  if (c.problems_file.empty()) {
    if (c.count == 0) throw usage_error("--count: must be >= 1");
    if (c.ops.empty()) throw usage_error("--ops: give at least one operation count");
    for (auto o : c.ops)
      if (o == 0 || o > 7) throw usage_error("--ops: " + std::to_string(o) + " is not in [1, 7] (the model's context holds 7 steps)");
  }
  if (c.threads == 0 || c.threads > 64) throw usage_error("--threads: " + std::to_string(c.threads) + " is not in [1, 64]");
  if (!(c.settings.verifier_noise >= 0 && c.settings.verifier_noise <= 1))
    throw usage_error("--verifier-noise: " + std::to_string(c.settings.verifier_noise) + " is not a probability in [0, 1]");
  if (!(c.settings.temperature > 0) || !std::isfinite(c.settings.temperature))
    throw usage_error("--temperature: must be > 0");
}

/// The (method, budget) pairs to run: width-less methods at budget 1 only.
struct run_key {
  const method_def* method;
  std::size_t budget;
};

std::vector<run_key> runs_of(const config& c) {
  std::vector<run_key> r;
  for (const auto& name : c.methods) {
    const method_def* m = find_method(name);
    if (!m->has_width) r.push_back({m, 1});
    else
      for (auto b : c.budgets) r.push_back({m, b});
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  config cfg;
  CLI::App app{"Inference-time scaling curves: chain arithmetic solved by a small llama2.c model with every search "
               "method of itscale at growing budgets.",
               "itscale_scaling"};
  add_options(app, cfg);
  if (const int rc = itscale_examples::parse_command_line(app, argc, argv); rc >= 0) return rc;
  try {
    check(cfg);
    const itscale::detail::stopwatch wall;
    const auto tok = itscale::llama2c_tokenizer::load(cfg.tokenizer);
    const auto load = [&](const std::string& path) {
      auto w = std::make_shared<const itscale::llama2c_weights>(itscale::load_llama2c_checkpoint(path));
      itscale::check_vocab_match(tok, w->config.vocab_size);
      return w;
    };
    const auto wm = load(cfg.model), wa = load(cfg.amateur), wr = load(cfg.reference);

    std::vector<arith::problem> problems;
    if (cfg.problems_file.empty()) {
      // Problem i has ops[i % ops.size()] operations (an even mix).
      for (std::size_t i = 0; i < cfg.count; ++i)
        problems.push_back(arith::make_problem(cfg.seed, static_cast<std::uint32_t>(i),
                                               static_cast<int>(cfg.ops[i % cfg.ops.size()])));
    } else {
      problems = read_problems(cfg.problems_file);
    }
    std::vector<task> tasks;
    for (std::size_t i = 0; i < problems.size(); ++i) {
      const std::string text = problems[i].prompt();
      tasks.push_back({i, problems[i], text, problems[i].answer(), arith::encode_prompt(tok, text)});
      // The completion takes about 13 tokens per operation.
      if (tasks[i].prompt.size() + 14 * problems[i].ops.size() + 8 > wm->config.seq_len)
        throw usage_error("problem " + std::to_string(i + 1) + " ('" + text + "') is too long for the model's context");
    }
    std::string set_name;
    if (cfg.problems_file.empty()) {
      set_name = arith::format("%zu generated problems (seed %llu, %s operations)", problems.size(),
                               static_cast<unsigned long long>(cfg.seed), ops_text(cfg.ops).c_str());
    } else {
      set_name = std::to_string(problems.size()) + " problems from " + std::filesystem::path(cfg.problems_file).filename().string();
    }

    const auto runs = runs_of(cfg);
    // outcomes[run][problem]; reference greedy answers per problem.
    std::vector<std::vector<outcome>> outcomes(runs.size(), std::vector<outcome>(tasks.size()));
    std::vector<std::optional<long>> ref_answers(tasks.size());
    progress bar(runs.size() * tasks.size(), cfg.quiet);

    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex error_mutex;
    const auto work = [&] {
      try {
        arith::worker w(cfg.settings, tok, wm, wa, wr);
        for (std::size_t i; !failed && (i = next++) < tasks.size();) {
          const task& t = tasks[i];
          w.begin(t);
          for (std::size_t k = 0; k < runs.size() && !failed; ++k) {
            outcomes[k][i] = runs[k].method->run(t, runs[k].budget, w);
            bar.add(1);
          }
          w.end();
          const auto ref = itscale::generate(w.reference, std::span<const token_id>(t.prompt), {.stop = w.stop(t)});
          ref_answers[i] = w.answer_of(ref[0].tokens);
        }
      } catch (...) {
        const std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    };
    std::vector<std::thread> pool;
    for (std::size_t k = 0; k < std::min(cfg.threads, tasks.size()); ++k) pool.emplace_back(work);
    std::atomic<bool> running{true};
    std::thread ticker([&] {
      while (running) {
        bar.show();
        for (int k = 0; k < 5 && running; ++k) std::this_thread::sleep_for(std::chrono::milliseconds(40));
      }
    });
    for (auto& th : pool) th.join();
    running = false;
    ticker.join();
    if (error) std::rethrow_exception(error);
    bar.show(true);

    // Aggregate in problem order (the same sums whatever thread ran a problem).
    std::vector<arith::result_row> rows;
    for (std::size_t k = 0; k < runs.size(); ++k) {
      arith::result_row r{runs[k].method->name, runs[k].budget, tasks.size()};
      std::uint64_t gen = 0, ver = 0;
      for (std::size_t i = 0; i < tasks.size(); ++i) {
        const outcome& o = outcomes[k][i];
        r.correct += o.answer && *o.answer == tasks[i].answer;
        gen += o.compute.generated_tokens();
        ver += o.compute.verifier_calls;
        r.seconds += o.compute.wall_seconds;
      }
      r.generated_tokens_per_problem = static_cast<double>(gen) / static_cast<double>(tasks.size());
      r.verifier_calls_per_problem = static_cast<double>(ver) / static_cast<double>(tasks.size());
      rows.push_back(r);
    }
    std::size_t ref_correct = 0;
    for (std::size_t i = 0; i < tasks.size(); ++i) ref_correct += ref_answers[i] && *ref_answers[i] == tasks[i].answer;
    const double ref_acc = static_cast<double>(ref_correct) / static_cast<double>(tasks.size());

    std::filesystem::create_directories(cfg.out);
    const std::string csv = (std::filesystem::path(cfg.out) / "results.csv").string();
    const std::string svg = (std::filesystem::path(cfg.out) / "accuracy_vs_tokens.svg").string();
    arith::write_csv(csv, rows);
    const std::string model_name = std::filesystem::path(cfg.model).filename().string();
    const std::string ref_name = std::filesystem::path(cfg.reference).filename().string();
    arith::write_svg(svg, rows,
                     {.title = model_name + " on " + set_name, .reference_label = ref_name + " greedy",
                      .reference_accuracy = ref_acc});
    std::string answers_path;
    if (cfg.answers) {
      answers_path = (std::filesystem::path(cfg.out) / "answers.csv").string();
      std::ofstream f(answers_path);
      const arith::calculator_verifier text_of(tok);
      f << "method,budget,problem,prompt,expected,answer,correct,completion\n";
      for (std::size_t k = 0; k < runs.size(); ++k)
        for (std::size_t i = 0; i < tasks.size(); ++i) {
          const auto& a = outcomes[k][i].answer;
          f << runs[k].method->name << ',' << runs[k].budget << ',' << i + 1 << ',' << tasks[i].text << ','
            << tasks[i].answer << ',' << (a ? std::to_string(*a) : "") << ',' << (a && *a == tasks[i].answer ? 1 : 0)
            << ',' << text_of.text(outcomes[k][i].completion) << '\n';
        }
      if (!f) throw std::runtime_error("cannot write " + answers_path);
    }

    std::printf("%s on %s (threads %zu, temperature %g, verifier noise %g)\n\n", model_name.c_str(), set_name.c_str(),
                cfg.threads, static_cast<double>(cfg.settings.temperature), cfg.settings.verifier_noise);
    std::printf("%-20s %6s %9s %9s %14s %14s %9s\n", "method", "budget", "correct", "accuracy", "tokens/problem",
                "verifier/prob", "seconds");
    for (const auto& r : rows)
      std::printf("%-20s %6zu %4zu/%-4zu %9.3f %14.1f %14.2f %9.2f\n", r.method.c_str(), r.budget, r.correct, r.problems,
                  r.accuracy(), r.generated_tokens_per_problem, r.verifier_calls_per_problem, r.seconds);
    std::printf("\nreference: %s greedy %zu/%zu = %.3f\n", ref_name.c_str(), ref_correct, tasks.size(), ref_acc);
    std::printf("wall time %.1f s\n\nwrote %s\nwrote %s\n", wall.seconds(), csv.c_str(), svg.c_str());
    if (!answers_path.empty()) std::printf("wrote %s\n", answers_path.c_str());
    return 0;
  } catch (const std::invalid_argument& e) {  // usage_error and the library's invalid_option / invalid_input
    std::fprintf(stderr, "itscale_scaling: %s\n", e.what());
    return 2;
  } catch (const itscale::format_error& e) {  // an unreadable model or tokenizer
    std::fprintf(stderr, "itscale_scaling: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "itscale_scaling: %s\n", e.what());
    return 1;
  }
}
