// The decoding part of itscale_generate's command line and report, shared by the examples that
// generate text on different backends (generate.cpp on the llama2.c model, llama_cpp_generate.cpp
// on any GGUF through llama.cpp): the strategy, Hugging Face-named options, running greedy /
// sampling / beam search on any LogitSource, and printing results, tokens/s and the library's
// share of the time from the library's own metering (compute_stats).
#pragma once

#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include <itscale/search.hpp>

#include "cli.hpp"

namespace itscale_examples {

enum class strategy { greedy, sample, beam };

struct decode_args {
  std::string strategy_name = "greedy";  // greedy | sample | beam
  std::string early_stopping = "false";  // true | false | never (HF's values)
  strategy strat = strategy::greedy;     // from strategy_name
  std::size_t n = 1;                     // -n / --num-return-sequences
  std::size_t threads = 1;
  // The options common to all strategies are kept in `sampling` and copied to `beam`.
  itscale::sampling_options sampling{.stop = {.max_new_tokens = 64}};
  itscale::beam_options beam{.num_beams = 4, .stop = {.max_new_tokens = 64}};
};

/// The strategy, -n, --seed and --threads (with `threads_help`), then the HF-named options.
/// Integers are checked here (digits only); values the library validates (top_p's range,
/// num_beams vs -n, ...) are left to its validate(), whose messages name the broken rule.
inline void add_decode_options(CLI::App& app, decode_args& a, const char* threads_help) {
  auto& s = a.sampling;
  auto& b = a.beam;
  app.add_option("--strategy", a.strategy_name, "decoding strategy")->check(CLI::IsMember({"greedy", "sample", "beam"}));
  app.add_option("-n,--num-return-sequences", a.n, "samples (sample) or returned beams (beam)")
      ->transform(non_negative_integer);
  app.add_option("--seed", s.seed, "sampling seed")->transform(non_negative_integer);
  app.add_option("--threads", a.threads, threads_help)->transform(non_negative_integer);
  app.add_option("--max-new-tokens", s.stop.max_new_tokens, "tokens generated at most")->transform(non_negative_integer);
  app.add_option("--min-new-tokens", s.stop.min_new_tokens, "EOS masked until this many")->transform(non_negative_integer);
  app.add_option("--temperature", s.temperature, "sampling temperature");
  app.add_option("--top-k", s.top_k, "0 = off")->transform(non_negative_integer);
  app.add_option_function<double>("--top-p", [&s](double p) { s.top_p = p; }, "1 = off (default)");
  app.add_option("--min-p", s.min_p, "0 = off");
  app.add_option("--typical-p", s.typical_p, "1 = off");
  app.add_option("--repetition-penalty", s.repetition_penalty, "1 = off");
  app.add_option("--no-repeat-ngram-size", s.no_repeat_ngram_size, "0 = off")->transform(non_negative_integer);
  app.add_option("--num-beams", b.num_beams, "beams kept at each step (beam)")->transform(non_negative_integer);
  app.add_option("--length-penalty", b.length_penalty, "beam score = log-prob / length^L");
  app.add_option("--early-stopping", a.early_stopping, "beam search stopping rule, as in Hugging Face")
      ->check(CLI::IsMember({"true", "false", "never"}));
  app.footer("Options keep Hugging Face's names. Bad values exit with code 2 and a message on stderr.");
}

/// Derives the strategies' options from the parsed command line; `eos` ends a sequence.
inline void finish_decode_args(decode_args& a, bool saw_n, std::vector<itscale::token_id> eos) {
  a.strat = a.strategy_name == "sample" ? strategy::sample : a.strategy_name == "beam" ? strategy::beam : strategy::greedy;
  a.beam.early_stopping = a.early_stopping == "true"    ? itscale::early_stopping_mode::when_full
                          : a.early_stopping == "never" ? itscale::early_stopping_mode::never
                                                        : itscale::early_stopping_mode::heuristic;
  auto& s = a.sampling;
  s.stop.eos_token_id = std::move(eos);
  s.do_sample = a.strat == strategy::sample;
  s.num_return_sequences = a.n;
  // Greedy has one result; -n > 1 is left to validate() to reject with its own message.
  if (a.strat == strategy::greedy && !saw_n) s.num_return_sequences = 1;
  a.beam.num_return_sequences = a.n;
  a.beam.stop = s.stop;
  a.beam.repetition_penalty = s.repetition_penalty;
  a.beam.no_repeat_ngram_size = s.no_repeat_ngram_size;
}

/// The options of the chosen strategy, checked (`vocab` 0: only the rules without the vocabulary).
inline void validate_decode_args(const decode_args& a, std::size_t vocab = 0) {
  if (a.strat == strategy::beam) vocab ? a.beam.validate(vocab) : a.beam.validate();
  else vocab ? a.sampling.validate(vocab) : a.sampling.validate();
}

/// Runs the strategy on `source` from `prompt` and prints each result as `text_of(prompt,
/// generated)`, then tokens/s, the compute spent and the library's share of the time.
template <itscale::LogitSource S, class TextOf>
void run_decoding(S& source, std::span<const itscale::token_id> prompt, const decode_args& a, TextOf&& text_of) {
  itscale::compute_stats compute;  // filled by the library's own metering (compute_stats)
  std::size_t generated = 0;
  std::vector<std::string> lines;
  if (a.strat == strategy::beam) {
    const auto& b = a.beam;
    std::printf("strategy beam: num_beams %zu, length_penalty %g, num_return_sequences %zu, max_new_tokens %zu\n\n",
                b.num_beams, b.length_penalty, b.num_return_sequences, b.stop.max_new_tokens);
    const auto r = itscale::beam_search(source, prompt, b);
    compute = r.compute;
    for (std::size_t i = 0; i < r.size(); ++i) {
      const auto& h = r[i];
      generated += h.tokens.size();
      lines.push_back("[beam " + std::to_string(i) + "] score " + std::to_string(h.score) + ", " +
                      std::to_string(h.tokens.size()) + " tokens, " + itscale::to_string(h.stop) + "\n" +
                      text_of(prompt, h.tokens));
    }
  } else {
    const auto& s = a.sampling;
    if (s.do_sample)
      std::printf("strategy sample: seed %llu, n %zu, temperature %g, top_k %zu, top_p %g, min_p %g, typical_p %g, "
                  "repetition_penalty %g, max_new_tokens %zu\n\n",
                  static_cast<unsigned long long>(s.seed), s.num_return_sequences, static_cast<double>(s.temperature),
                  s.top_k, static_cast<double>(s.top_p), static_cast<double>(s.min_p), static_cast<double>(s.typical_p),
                  static_cast<double>(s.repetition_penalty), s.stop.max_new_tokens);
    else
      std::printf("strategy greedy: max_new_tokens %zu\n\n", s.stop.max_new_tokens);
    const auto gens = itscale::generate(source, prompt, s);
    compute = gens.compute;
    for (const auto& g : gens) {
      generated += g.tokens.size();
      lines.push_back("[" + std::string(s.do_sample ? "sample " : "greedy ") + std::to_string(g.sample) +
                      "] log-prob " + std::to_string(g.logprob_sum) + ", " + std::to_string(g.tokens.size()) +
                      " tokens, " + itscale::to_string(g.stop) + "\n" + text_of(prompt, g.tokens));
    }
  }
  for (const auto& l : lines) std::printf("%s\n\n", l.c_str());
  const double total = compute.wall_seconds, in_model = compute.source_seconds, lib = total - in_model;
  std::printf("generated %zu tokens in %.3f ms: %.0f tokens/s\n", generated, total * 1e3,
              total > 0 ? static_cast<double>(generated) / total : 0.0);
  std::printf("compute: %llu prefill tokens, %llu generated tokens (model rows), %llu source calls, peak %llu live "
              "handles\n",
              static_cast<unsigned long long>(compute.prefill_tokens),
              static_cast<unsigned long long>(compute.generated_tokens()),
              static_cast<unsigned long long>(compute.source_calls()),
              static_cast<unsigned long long>(compute.peak_live_handles));
  std::printf("time inside the model: %.3f ms; library (search, processors, bookkeeping): %.3f ms = %.1f%% of the total\n",
              in_model * 1e3, lib * 1e3, total > 0 ? 100.0 * lib / total : 0.0);
}

}  // namespace itscale_examples
