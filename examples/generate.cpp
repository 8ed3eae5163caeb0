// itscale_generate: text generation with the in-tree llama2.c model (llama2c_model) and any of the
// token-level decoders: greedy, sampling, beam search. Prints the decoded text of each result,
// tokens/s, and the library's share of the time (everything but the model's forward passes).
//
//   itscale_generate [--model FILE] [--tokenizer FILE] [--prompt TEXT] [--strategy greedy|sample|beam]
//                    [-n N] [--seed N] [--threads N] [HF-named options...]
//
// Options keep Hugging Face's names: --max-new-tokens --min-new-tokens --temperature --top-k
// --top-p --min-p --typical-p --repetition-penalty --no-repeat-ngram-size --num-beams
// --length-penalty --early-stopping true|false|never --num-return-sequences (= -n); --help lists
// them. The command line is parsed by CLI11: unknown options and malformed values exit with code 2
// and CLI11's message; values out of the library's rules exit with code 2 and the library's own
// validation message; so do unreadable files (the loader's format_error message).

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <itscale/search.hpp>

#include "cli.hpp"

namespace {

#ifdef ITSCALE_DATA_DIR
const std::filesystem::path models_dir = std::filesystem::path(ITSCALE_DATA_DIR) / "models";
#else
const std::filesystem::path models_dir = "tests/data/models";  // from the top of the repo
#endif

/// A run that cannot go ahead for a reason no option check sees (the prompt does not fit).
struct usage_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

enum class strategy { greedy, sample, beam };

struct args {
  std::string model = (models_dir / "aidreams260K.bin").string();
  std::string tokenizer = (models_dir / "aidreams-tok512.bin").string();
  std::string prompt = "";
  std::string strategy_name = "greedy";  // greedy | sample | beam
  std::string early_stopping = "false";  // true | false | never (HF's values)
  strategy strat = strategy::greedy;     // from strategy_name
  std::size_t n = 1;  // -n / --num-return-sequences
  std::size_t threads = 1;
  // The options common to all strategies are kept in `sampling` and copied to `beam`.
  itscale::sampling_options sampling{.stop = {.max_new_tokens = 64, .eos_token_id = {itscale::llama2c_tokenizer::eos}}};
  itscale::beam_options beam{.num_beams = 4,
                             .stop = {.max_new_tokens = 64, .eos_token_id = {itscale::llama2c_tokenizer::eos}}};
};

/// The options, with their --help text. Integers are checked here (digits only); values the
/// library validates (top_p's range, num_beams vs -n, threads, ...) are left to its validate(),
/// whose messages name the broken rule.
void add_options(CLI::App& app, args& a) {
  using itscale_examples::non_negative_integer;
  auto& s = a.sampling;
  auto& b = a.beam;
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(34);
  app.add_option("--model", a.model, "llama2.c checkpoint");
  app.add_option("--tokenizer", a.tokenizer, "llama2.c tokenizer");
  app.add_option("--prompt", a.prompt, "text to continue (empty: BOS only)");
  app.add_option("--strategy", a.strategy_name, "decoding strategy")->check(CLI::IsMember({"greedy", "sample", "beam"}));
  app.add_option("-n,--num-return-sequences", a.n, "samples (sample) or returned beams (beam)")
      ->transform(non_negative_integer);
  app.add_option("--seed", s.seed, "sampling seed")->transform(non_negative_integer);
  app.add_option("--threads", a.threads, "model worker threads (results do not depend on it)")
      ->transform(non_negative_integer);
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

/// Derives the strategies' options from the parsed command line.
void finish(args& a, bool saw_n) {
  a.strat = a.strategy_name == "sample" ? strategy::sample : a.strategy_name == "beam" ? strategy::beam : strategy::greedy;
  a.beam.early_stopping = a.early_stopping == "true"    ? itscale::early_stopping_mode::when_full
                          : a.early_stopping == "never" ? itscale::early_stopping_mode::never
                                                        : itscale::early_stopping_mode::heuristic;
  auto& s = a.sampling;
  s.do_sample = a.strat == strategy::sample;
  s.num_return_sequences = a.n;
  // Greedy has one result; -n > 1 is left to validate() to reject with its own message.
  if (a.strat == strategy::greedy && !saw_n) s.num_return_sequences = 1;
  a.beam.num_return_sequences = a.n;
  a.beam.stop = s.stop;
  a.beam.repetition_penalty = s.repetition_penalty;
  a.beam.no_repeat_ngram_size = s.no_repeat_ngram_size;
}

/// The text of prompt + generated, as llama2.c prints it (BOS/EOS are not text).
std::string text_of(const itscale::llama2c_tokenizer& tok, const std::vector<itscale::token_id>& prompt,
                    const std::vector<itscale::token_id>& generated) {
  std::vector<itscale::token_id> all = prompt;
  all.insert(all.end(), generated.begin(), generated.end());
  return tok.decode(all);
}

}  // namespace

int main(int argc, char** argv) {
  args parsed;
  CLI::App app{"Text generation with itscale's llama2.c model: greedy, sampling or beam search.", "itscale_generate"};
  add_options(app, parsed);
  if (const int rc = itscale_examples::parse_command_line(app, argc, argv); rc >= 0) return rc;
  finish(parsed, app.count("--num-return-sequences") > 0);
  const args& a = parsed;
  try {
    // Options first (the library's messages), then files (the loaders' messages).
    const itscale::llama2c_model_options model_opts{.threads = a.threads};
    model_opts.validate();
    if (a.strat == strategy::beam) a.beam.validate();
    else a.sampling.validate();

    auto model = itscale::llama2c_model::load(a.model, model_opts);
    const auto tok = itscale::llama2c_tokenizer::load(a.tokenizer);
    itscale::check_vocab_match(tok, model.vocab_size());
    if (a.strat == strategy::beam) a.beam.validate(model.vocab_size());
    else a.sampling.validate(model.vocab_size());

    const std::vector<itscale::token_id> prompt = tok.encode(a.prompt, /*add_bos=*/true);
    const std::size_t ctx = model.config().seq_len;
    if (prompt.size() + a.sampling.stop.max_new_tokens > ctx)
      throw usage_error("the prompt (" + std::to_string(prompt.size()) + " tokens with BOS) plus --max-new-tokens " +
                        std::to_string(a.sampling.stop.max_new_tokens) + " exceeds the model's context of " +
                        std::to_string(ctx) + " tokens");

    const auto& c = model.config();
    std::printf("model %s: dim %zu, layers %zu, heads %zu/%zu kv, vocab %zu, context %zu; threads %zu\n",
                std::filesystem::path(a.model).filename().string().c_str(), c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                c.seq_len, a.threads);
    std::printf("prompt: \"%s\" (%zu tokens with BOS)\n", a.prompt.c_str(), prompt.size());

    itscale::compute_stats compute;  // filled by the library's own metering (compute_stats)
    std::size_t generated = 0;
    std::vector<std::string> lines;
    if (a.strat == strategy::beam) {
      const auto& b = a.beam;
      std::printf("strategy beam: num_beams %zu, length_penalty %g, num_return_sequences %zu, max_new_tokens %zu\n\n",
                  b.num_beams, b.length_penalty, b.num_return_sequences, b.stop.max_new_tokens);
      const auto r = itscale::beam_search(model, std::span<const itscale::token_id>(prompt), b);
      compute = r.compute;
      for (std::size_t i = 0; i < r.size(); ++i) {
        const auto& h = r[i];
        generated += h.tokens.size();
        lines.push_back("[beam " + std::to_string(i) + "] score " + std::to_string(h.score) + ", " +
                        std::to_string(h.tokens.size()) + " tokens, " + itscale::to_string(h.stop) + "\n" +
                        text_of(tok, prompt, h.tokens));
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
      const auto gens = itscale::generate(model, std::span<const itscale::token_id>(prompt), s);
      compute = gens.compute;
      for (const auto& g : gens) {
        generated += g.tokens.size();
        lines.push_back("[" + std::string(s.do_sample ? "sample " : "greedy ") + std::to_string(g.sample) +
                        "] log-prob " + std::to_string(g.logprob_sum) + ", " + std::to_string(g.tokens.size()) +
                        " tokens, " + itscale::to_string(g.stop) + "\n" + text_of(tok, prompt, g.tokens));
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
    std::printf("live handles after decoding: %zu\n", model.live_handles());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "itscale_generate: %s\n", e.what());
    return 2;
  }
}
