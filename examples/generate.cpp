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

#include "decode_cli.hpp"

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

struct args {
  std::string model = (models_dir / "aidreams260K.bin").string();
  std::string tokenizer = (models_dir / "aidreams-tok512.bin").string();
  std::string prompt = "";
  itscale_examples::decode_args decode;  // strategy, -n, --threads and the HF-named options
};

/// The options, with their --help text (decode_cli.hpp adds the decoding ones).
void add_options(CLI::App& app, args& a) {
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(34);
  app.add_option("--model", a.model, "llama2.c checkpoint");
  app.add_option("--tokenizer", a.tokenizer, "llama2.c tokenizer");
  app.add_option("--prompt", a.prompt, "text to continue (empty: BOS only)");
  itscale_examples::add_decode_options(app, a.decode, "model worker threads (results do not depend on it)");
}

/// The text of prompt + generated, as llama2.c prints it (BOS/EOS are not text).
std::string text_of(const itscale::llama2c_tokenizer& tok, std::span<const itscale::token_id> prompt,
                    const std::vector<itscale::token_id>& generated) {
  std::vector<itscale::token_id> all(prompt.begin(), prompt.end());
  all.insert(all.end(), generated.begin(), generated.end());
  return tok.decode(all);
}

}  // namespace

int main(int argc, char** argv) {
  args parsed;
  CLI::App app{"Text generation with itscale's llama2.c model: greedy, sampling or beam search.", "itscale_generate"};
  add_options(app, parsed);
  if (const int rc = itscale_examples::parse_command_line(app, argc, argv); rc >= 0) return rc;
  itscale_examples::finish_decode_args(parsed.decode, app.count("--num-return-sequences") > 0,
                                       {itscale::llama2c_tokenizer::eos});
  const args& a = parsed;
  const itscale_examples::decode_args& d = a.decode;
  try {
    // Options first (the library's messages), then files (the loaders' messages).
    const itscale::llama2c_model_options model_opts{.threads = d.threads};
    model_opts.validate();
    itscale_examples::validate_decode_args(d);

    auto model = itscale::llama2c_model::load(a.model, model_opts);
    const auto tok = itscale::llama2c_tokenizer::load(a.tokenizer);
    itscale::check_vocab_match(tok, model.vocab_size());
    itscale_examples::validate_decode_args(d, model.vocab_size());

    const std::vector<itscale::token_id> prompt = tok.encode(a.prompt, /*add_bos=*/true);
    const std::size_t ctx = model.config().seq_len;
    if (prompt.size() + d.sampling.stop.max_new_tokens > ctx)
      throw usage_error("the prompt (" + std::to_string(prompt.size()) + " tokens with BOS) plus --max-new-tokens " +
                        std::to_string(d.sampling.stop.max_new_tokens) + " exceeds the model's context of " +
                        std::to_string(ctx) + " tokens");

    const auto& c = model.config();
    std::printf("model %s: dim %zu, layers %zu, heads %zu/%zu kv, vocab %zu, context %zu; threads %zu\n",
                std::filesystem::path(a.model).filename().string().c_str(), c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                c.seq_len, d.threads);
    std::printf("prompt: \"%s\" (%zu tokens with BOS)\n", a.prompt.c_str(), prompt.size());
    itscale_examples::run_decoding(model, std::span<const itscale::token_id>(prompt), d,
                                   [&](std::span<const itscale::token_id> p, const std::vector<itscale::token_id>& generated) {
                                     return text_of(tok, p, generated);
                                   });
    std::printf("live handles after decoding: %zu\n", model.live_handles());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "itscale_generate: %s\n", e.what());
    return 2;
  }
}
