// itscale demo: greedy and sampled continuations from the deterministic hash language model,
// with the options used printed. Every option is optional; --help lists them:
//   --vocab N  --model-seed N  --prompt "1 2 3"  --max-new-tokens N  --samples N  --seed N
//   --temperature T  --top-k K  --top-p P  --min-p P  --repetition-penalty R
// A malformed command line exits with code 2 and CLI11's message; a value the library rejects
// exits with code 2 and the library's own validation message.

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include <itscale/search.hpp>

#include "cli.hpp"

namespace {

struct demo_args {
  std::size_t vocab = 64;
  std::uint64_t model_seed = 11;
  std::vector<itscale::token_id> prompt{3, 9, 3};
  itscale::sampling_options sampling{.stop = {.max_new_tokens = 16, .eos_token_id = {0}}, .do_sample = true, .seed = 42,
                                     .num_return_sequences = 4, .output_model_logprobs = true, .temperature = 0.8f,
                                     .top_k = 20, .top_p = 0.95};
};

void add_options(CLI::App& app, demo_args& a) {
  using itscale_examples::non_negative_integer;
  auto& s = a.sampling;
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(32);
  app.add_option("--vocab", a.vocab, "vocabulary size of the hash language model")->transform(non_negative_integer);
  app.add_option("--model-seed", a.model_seed, "seed of the hash language model")->transform(non_negative_integer);
  app.add_option("--prompt", a.prompt, "token ids, e.g. \"3 9 3\"")->delimiter(' ')->transform(non_negative_integer);
  app.add_option("--max-new-tokens", s.stop.max_new_tokens, "tokens generated at most")->transform(non_negative_integer);
  app.add_option("--samples", s.num_return_sequences, "sampled continuations")->transform(non_negative_integer);
  app.add_option("--seed", s.seed, "sampling seed")->transform(non_negative_integer);
  app.add_option("--temperature", s.temperature, "sampling temperature");
  app.add_option("--top-k", s.top_k, "0 = off")->transform(non_negative_integer);
  app.add_option_function<double>("--top-p", [&s](double p) { s.top_p = p; }, "1 = off (default)");
  app.add_option("--min-p", s.min_p, "0 = off");
  app.add_option("--repetition-penalty", s.repetition_penalty, "1 = off");
}

void print(const char* label, const itscale::generation& g) {
  std::printf("  %-10s", label);
  for (auto t : g.tokens) std::printf(" %3d", t);
  const char* why = itscale::to_string(g.stop);
  std::printf("   (log-prob %.3f, model log-prob %.3f, %s)\n", g.logprob_sum,
              [&] {
                double s = 0;
                for (float x : g.model_logprobs) s += x;
                return s;
              }(),
              why);
}

}  // namespace

int main(int argc, char** argv) {
  demo_args parsed;
  CLI::App app{"itscale demo: greedy and sampled continuations from a deterministic hash language model.",
               "itscale_demo"};
  add_options(app, parsed);
  if (const int rc = itscale_examples::parse_command_line(app, argc, argv); rc >= 0) return rc;
  const demo_args& a = parsed;
  try {
    a.sampling.validate(a.vocab);  // report bad options before printing anything
    itscale::hash_lm lm(a.vocab, a.model_seed);
    std::printf("itscale %s demo: hash language model, vocab %zu, model seed %llu\nprompt:", itscale::version_string,
                a.vocab, static_cast<unsigned long long>(a.model_seed));
    for (auto t : a.prompt) std::printf(" %d", t);
    std::printf("\n\ngreedy (max_new_tokens %zu, eos_token_id 0):\n", a.sampling.stop.max_new_tokens);
    auto greedy_opts = a.sampling;
    greedy_opts.do_sample = false;
    greedy_opts.num_return_sequences = 1;
    print("greedy", itscale::generate(lm, std::span<const itscale::token_id>(a.prompt), greedy_opts)[0]);

    const auto& s = a.sampling;
    std::printf("\nsampling (seed %llu, temperature %g, top_k %zu, top_p %g, min_p %g, repetition_penalty %g):\n",
                static_cast<unsigned long long>(s.seed), static_cast<double>(s.temperature), s.top_k,
                static_cast<double>(s.top_p), static_cast<double>(s.min_p), static_cast<double>(s.repetition_penalty));
    const auto samples = itscale::generate(lm, std::span<const itscale::token_id>(a.prompt), s);
    for (const auto& g : samples) print(("sample " + std::to_string(g.sample)).c_str(), g);
    const auto& c = samples.compute;
    std::printf("\ncompute: %llu prefill tokens, %llu generated tokens, %llu source calls, peak %llu live handles, "
                "%.3f ms (%.3f ms in the source)\n",
                static_cast<unsigned long long>(c.prefill_tokens), static_cast<unsigned long long>(c.generated_tokens()),
                static_cast<unsigned long long>(c.source_calls()), static_cast<unsigned long long>(c.peak_live_handles),
                c.wall_seconds * 1e3, c.source_seconds * 1e3);
    std::printf("\nlive handles after decoding: %zu\n", lm.live_handles());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "itscale_demo: %s\n", e.what());
    return 2;
  }
}
