// itscale_generate: text generation with the in-tree llama2.c model (llama2c_model) and any of the
// token-level decoders: greedy, sampling, beam search. Prints the decoded text of each result,
// tokens/s, and the library's share of the time (everything but the model's forward passes).
//
//   itscale_generate [--model FILE] [--tokenizer FILE] [--prompt TEXT] [--strategy greedy|sample|beam]
//                    [-n N] [--seed N] [--threads N] [HF-named options...]
//
// Options keep Hugging Face's names: --max-new-tokens --min-new-tokens --temperature --top-k
// --top-p --min-p --typical-p --repetition-penalty --no-repeat-ngram-size --num-beams
// --length-penalty --early-stopping true|false|never --num-return-sequences (= -n).
// Bad options exit with code 2 and the library's own validation message; so do unreadable files
// (the loader's format_error message).

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <itscale/search.hpp>

namespace {

#ifdef ITSCALE_SHARED_DIR
const std::filesystem::path models_dir = std::filesystem::path(ITSCALE_SHARED_DIR) / "models";
#else
const std::filesystem::path models_dir = "../shared/models";
#endif

/// A bad command line (as opposed to a bad option value, which the library's validate() reports).
struct usage_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

enum class strategy { greedy, sample, beam };

struct args {
  std::filesystem::path model = models_dir / "aidreams260K.bin";
  std::filesystem::path tokenizer = models_dir / "aidreams-tok512.bin";
  std::string prompt = "";
  strategy strat = strategy::greedy;
  std::size_t n = 1;  // -n / --num-return-sequences
  std::size_t threads = 1;
  bool show_help = false;
  // The options common to all strategies are kept in `sampling` and copied to `beam`.
  itscale::sampling_options sampling{.max_new_tokens = 64, .eos_token_id = {itscale::llama2c_tokenizer::eos}};
  itscale::beam_options beam{.num_beams = 4,
                             .stop = {.max_new_tokens = 64, .eos_token_id = {itscale::llama2c_tokenizer::eos}}};
};

const char* usage_text =
    "usage: itscale_generate [options]\n"
    "  --model FILE              llama2.c checkpoint (default: shared/models/aidreams260K.bin)\n"
    "  --tokenizer FILE          llama2.c tokenizer (default: shared/models/aidreams-tok512.bin)\n"
    "  --prompt TEXT             text to continue (default: empty, i.e. BOS only)\n"
    "  --strategy S              greedy | sample | beam (default greedy)\n"
    "  -n N                      samples (sample) or returned beams (beam); = --num-return-sequences\n"
    "  --seed N                  sampling seed (default 0)\n"
    "  --threads N               model worker threads (default 1; results do not depend on it)\n"
    "  --max-new-tokens N  --min-new-tokens N  --temperature T  --top-k K  --top-p P  --min-p P\n"
    "  --typical-p P  --repetition-penalty R  --no-repeat-ngram-size N\n"
    "  --num-beams K  --length-penalty L  --early-stopping true|false|never\n";

template <class T>
T parse_number(const std::string& opt, const std::string& v) {
  T x{};
  const char* end = v.data() + v.size();
  const auto [p, ec] = std::from_chars(v.data(), end, x);
  if (ec != std::errc{} || p != end || v.empty())
    throw usage_error(opt + ": '" + v + "' is not a valid " +
                      (std::is_floating_point_v<T> ? "number" : "non-negative integer"));
  return x;
}

args parse(int argc, char** argv) {
  args a;
  bool saw_n = false;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "-h" || k == "--help") {
      a.show_help = true;
      continue;
    }
    if (i + 1 >= argc) throw usage_error("missing value after " + k);
    const std::string v = argv[++i];
    auto& s = a.sampling;
    if (k == "--model") a.model = v;
    else if (k == "--tokenizer") a.tokenizer = v;
    else if (k == "--prompt") a.prompt = v;
    else if (k == "--strategy") {
      if (v == "greedy") a.strat = strategy::greedy;
      else if (v == "sample") a.strat = strategy::sample;
      else if (v == "beam") a.strat = strategy::beam;
      else throw usage_error("--strategy: '" + v + "' is not one of greedy, sample, beam");
    } else if (k == "-n" || k == "--num-return-sequences") {
      a.n = parse_number<std::size_t>(k, v);
      saw_n = true;
    } else if (k == "--seed") s.seed = parse_number<std::uint64_t>(k, v);
    else if (k == "--threads") a.threads = parse_number<std::size_t>(k, v);
    else if (k == "--max-new-tokens") s.max_new_tokens = parse_number<std::size_t>(k, v);
    else if (k == "--min-new-tokens") s.min_new_tokens = parse_number<std::size_t>(k, v);
    else if (k == "--temperature") s.temperature = parse_number<float>(k, v);
    else if (k == "--top-k") s.top_k = parse_number<std::size_t>(k, v);
    else if (k == "--top-p") s.top_p = parse_number<double>(k, v);
    else if (k == "--min-p") s.min_p = parse_number<float>(k, v);
    else if (k == "--typical-p") s.typical_p = parse_number<float>(k, v);
    else if (k == "--repetition-penalty") s.repetition_penalty = parse_number<float>(k, v);
    else if (k == "--no-repeat-ngram-size") s.no_repeat_ngram_size = parse_number<std::size_t>(k, v);
    else if (k == "--num-beams") a.beam.num_beams = parse_number<std::size_t>(k, v);
    else if (k == "--length-penalty") a.beam.length_penalty = parse_number<double>(k, v);
    else if (k == "--early-stopping") {
      if (v == "false") a.beam.early_stopping = itscale::early_stopping_mode::heuristic;
      else if (v == "true") a.beam.early_stopping = itscale::early_stopping_mode::when_full;
      else if (v == "never") a.beam.early_stopping = itscale::early_stopping_mode::never;
      else throw usage_error("--early-stopping: '" + v + "' is not one of true, false, never");
    } else
      throw usage_error("unknown option " + k + " (--help lists them)");
  }
  auto& s = a.sampling;
  s.do_sample = a.strat == strategy::sample;
  s.num_return_sequences = a.n;
  // Greedy has one result; -n > 1 is left to validate() to reject with its own message.
  if (a.strat == strategy::greedy && !saw_n) s.num_return_sequences = 1;
  a.beam.num_return_sequences = a.n;
  a.beam.stop = s.stop;
  a.beam.repetition_penalty = s.repetition_penalty;
  a.beam.no_repeat_ngram_size = s.no_repeat_ngram_size;
  return a;
}

/// A LogitSource adapter that measures the time spent inside the wrapped source.
template <itscale::LogitSource S>
class timed_source {
 public:
  using handle = itscale::handle_t<S>;
  using clock = std::chrono::steady_clock;

  explicit timed_source(S& s) : s_(s) {}
  [[nodiscard]] std::size_t vocab_size() const { return s_.vocab_size(); }
  handle prefill(std::span<const itscale::token_id> prompt) {
    const auto t0 = clock::now();
    struct add_on_exit {
      timed_source& self;
      clock::time_point t0;
      ~add_on_exit() { self.spent_ += clock::now() - t0; }
    } guard{*this, t0};
    ++calls_;
    return s_.prefill(prompt);
  }
  void extend(std::span<const handle> parents, std::span<const itscale::token_id> tokens, std::span<handle> children) {
    const auto t0 = clock::now();
    struct add_on_exit {
      timed_source& self;
      clock::time_point t0;
      ~add_on_exit() { self.spent_ += clock::now() - t0; }
    } guard{*this, t0};
    ++calls_;
    rows_ += parents.size();
    s_.extend(parents, tokens, children);
  }
  itscale::logits_view logits() { return s_.logits(); }
  void release(handle h) noexcept { s_.release(h); }

  [[nodiscard]] double seconds() const { return std::chrono::duration<double>(spent_).count(); }
  [[nodiscard]] std::size_t calls() const { return calls_; }
  [[nodiscard]] std::size_t extended_rows() const { return rows_; }

 private:
  S& s_;
  clock::duration spent_{};
  std::size_t calls_ = 0, rows_ = 0;
};

const char* stop_name(itscale::stop_reason r) {
  switch (r) {
    case itscale::stop_reason::eos: return "eos";
    case itscale::stop_reason::stop_sequence: return "stop sequence";
    case itscale::stop_reason::max_new_tokens: return "max_new_tokens";
  }
  return "?";
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
  try {
    const args a = parse(argc, argv);
    if (a.show_help) {
      std::fputs(usage_text, stdout);
      return 0;
    }
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
    if (prompt.size() + a.sampling.max_new_tokens > ctx)
      throw usage_error("the prompt (" + std::to_string(prompt.size()) + " tokens with BOS) plus --max-new-tokens " +
                        std::to_string(a.sampling.max_new_tokens) + " exceeds the model's context of " +
                        std::to_string(ctx) + " tokens");

    const auto& c = model.config();
    std::printf("model %s: dim %zu, layers %zu, heads %zu/%zu kv, vocab %zu, context %zu; threads %zu\n",
                a.model.filename().string().c_str(), c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                c.seq_len, a.threads);
    std::printf("prompt: \"%s\" (%zu tokens with BOS)\n", a.prompt.c_str(), prompt.size());

    timed_source<itscale::llama2c_model> src(model);
    std::size_t generated = 0;
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::string> lines;
    if (a.strat == strategy::beam) {
      const auto& b = a.beam;
      std::printf("strategy beam: num_beams %zu, length_penalty %g, num_return_sequences %zu, max_new_tokens %zu\n\n",
                  b.num_beams, b.length_penalty, b.num_return_sequences, b.stop.max_new_tokens);
      const auto r = itscale::beam_search(src, std::span<const itscale::token_id>(prompt), b);
      for (std::size_t i = 0; i < r.size(); ++i) {
        const auto& h = r[i];
        generated += h.tokens.size();
        lines.push_back("[beam " + std::to_string(i) + "] score " + std::to_string(h.score) + ", " +
                        std::to_string(h.tokens.size()) + " tokens, " + stop_name(h.stop) + "\n" +
                        text_of(tok, prompt, h.tokens));
      }
    } else {
      const auto& s = a.sampling;
      if (s.do_sample)
        std::printf("strategy sample: seed %llu, n %zu, temperature %g, top_k %zu, top_p %g, min_p %g, typical_p %g, "
                    "repetition_penalty %g, max_new_tokens %zu\n\n",
                    static_cast<unsigned long long>(s.seed), s.num_return_sequences, static_cast<double>(s.temperature),
                    s.top_k, s.top_p, static_cast<double>(s.min_p), static_cast<double>(s.typical_p),
                    static_cast<double>(s.repetition_penalty), s.max_new_tokens);
      else
        std::printf("strategy greedy: max_new_tokens %zu\n\n", s.max_new_tokens);
      const auto gens = itscale::generate(src, std::span<const itscale::token_id>(prompt), s);
      for (const auto& g : gens) {
        generated += g.tokens.size();
        lines.push_back("[" + std::string(s.do_sample ? "sample " : "greedy ") + std::to_string(g.sample) +
                        "] log-prob " + std::to_string(g.logprob_sum) + ", " + std::to_string(g.tokens.size()) +
                        " tokens, " + stop_name(g.stop) + "\n" + text_of(tok, prompt, g.tokens));
      }
    }
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const auto& l : lines) std::printf("%s\n\n", l.c_str());
    const double in_model = src.seconds();
    const double lib = total - in_model;
    std::printf("generated %zu tokens in %.3f ms: %.0f tokens/s (%zu model calls, %zu extended rows)\n", generated,
                total * 1e3, total > 0 ? static_cast<double>(generated) / total : 0.0, src.calls(),
                src.extended_rows());
    std::printf("time inside the model: %.3f ms; library (search, processors, bookkeeping): %.3f ms = %.1f%% of the total\n",
                in_model * 1e3, lib * 1e3, total > 0 ? 100.0 * lib / total : 0.0);
    std::printf("live handles after decoding: %zu\n", model.live_handles());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "itscale_generate: %s\n", e.what());
    return 2;
  }
}
