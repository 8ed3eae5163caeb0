// itscale_llama_cpp_generate: itscale's decoders on any GGUF model through llama.cpp
// (itscale/backends/llama_cpp_source.hpp): greedy, sampling or beam search -- the search beam
// search users of llama.cpp were told to write themselves on its KV-cache API. Same options as
// itscale_generate (decode_cli.hpp); the text is llama.cpp's own tokenization of --prompt.
//
//   itscale_llama_cpp_generate [--model FILE.gguf] [--prompt TEXT] [--strategy greedy|sample|beam]
//                              [--n-seq-max N] [--n-ctx N] [-n N] [--seed N] [--threads N] [HF-named options...]
//
// Built with -DITSCALE_LLAMA_CPP=ON (llama.cpp's prebuilt libraries, fetched with npm).

#include <cstdio>
#include <exception>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <itscale/backends/llama_cpp_source.hpp>
#include <itscale/search.hpp>

#include "decode_cli.hpp"

namespace {

#ifdef ITSCALE_DATA_DIR
const std::filesystem::path models_dir = std::filesystem::path(ITSCALE_DATA_DIR) / "models";
#else
const std::filesystem::path models_dir = "tests/data/models";
#endif

struct args {
  std::string model = (models_dir / "aidreams260K.gguf").string();
  std::string prompt = "I dreamed";
  std::string backends = "";  // directory of libggml-cpu-*.so ("" = the build's, or ggml's default search)
  std::size_t n_seq_max = 64, n_ctx = 4096;
  bool verbose = false;
  itscale_examples::decode_args decode;
};

/// llama.cpp's tokenization of `text` (with its BOS when the model asks for one).
std::vector<itscale::token_id> tokenize(const llama_vocab* vocab, const std::string& text) {
  const auto len = static_cast<std::int32_t>(text.size());
  std::int32_t n = -llama_tokenize(vocab, text.data(), len, nullptr, 0, true, false);
  std::vector<llama_token> out(static_cast<std::size_t>(n > 0 ? n : 0));
  n = llama_tokenize(vocab, text.data(), len, out.data(), static_cast<std::int32_t>(out.size()), true, false);
  if (n < 0) throw std::runtime_error("llama_tokenize failed on the prompt");
  out.resize(static_cast<std::size_t>(n));
  return {out.begin(), out.end()};
}

/// The text of `tokens` by llama.cpp's detokenizer (special tokens removed).
std::string detokenize(const llama_vocab* vocab, std::span<const itscale::token_id> tokens) {
  std::vector<llama_token> t(tokens.begin(), tokens.end());
  std::string s(t.size() * 16 + 16, '\0');
  std::int32_t n = llama_detokenize(vocab, t.data(), static_cast<std::int32_t>(t.size()), s.data(),
                                    static_cast<std::int32_t>(s.size()), true, false);
  if (n < 0) {  // too small: -n is the size needed
    s.resize(static_cast<std::size_t>(-n));
    n = llama_detokenize(vocab, t.data(), static_cast<std::int32_t>(t.size()), s.data(), static_cast<std::int32_t>(s.size()),
                         true, false);
  }
  s.resize(static_cast<std::size_t>(n > 0 ? n : 0));
  // After BOS, SentencePiece's decoder drops the first word's leading space (llama2.c does too);
  // this model's GGUF does not tell llama.cpp to.
  if (!t.empty() && t.front() == llama_vocab_bos(vocab) && !s.empty() && s.front() == ' ') s.erase(0, 1);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  args parsed;
  CLI::App app{"itscale's decoders on a GGUF model through llama.cpp: greedy, sampling or beam search.",
               "itscale_llama_cpp_generate"};
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(34);
  app.add_option("--model", parsed.model, "GGUF model");
  app.add_option("--prompt", parsed.prompt, "text to continue (llama.cpp's tokenizer, BOS added if the model wants it)");
  app.add_option("--backends", parsed.backends, "directory of llama.cpp's CPU backends (libggml-cpu-*.so)");
  app.add_option("--n-seq-max", parsed.n_seq_max, "llama.cpp sequence slots (live handles)")
      ->transform(itscale_examples::non_negative_integer);
  app.add_option("--n-ctx", parsed.n_ctx, "KV cells shared by all sequences")->transform(itscale_examples::non_negative_integer);
  app.add_flag("--verbose", parsed.verbose, "keep llama.cpp's log");
  itscale_examples::add_decode_options(app, parsed.decode, "llama.cpp threads");
  if (const int rc = itscale_examples::parse_command_line(app, argc, argv); rc >= 0) return rc;
  const args& a = parsed;
  if (!a.verbose)
    llama_log_set(
        [](ggml_log_level level, const char* text, void*) {
          if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
        },
        nullptr);
  try {
    const itscale::llama_cpp_source_options opts{.n_seq_max = a.n_seq_max, .n_ctx = a.n_ctx, .threads = a.decode.threads};
    opts.validate();
#ifdef ITSCALE_LLAMA_CPP_BACKEND_DIR
    itscale::llama_cpp_init(a.backends.empty() ? ITSCALE_LLAMA_CPP_BACKEND_DIR : a.backends);
#else
    itscale::llama_cpp_init(a.backends);
#endif
    auto model = itscale::load_llama_cpp_model(a.model);
    const llama_vocab* vocab = llama_model_get_vocab(model.get());
    std::vector<itscale::token_id> eos;
    for (llama_token t = 0; t < llama_vocab_n_tokens(vocab); ++t)
      if (llama_vocab_is_eog(vocab, t)) eos.push_back(t);
    itscale_examples::finish_decode_args(parsed.decode, app.count("--num-return-sequences") > 0, eos);
    const itscale_examples::decode_args& d = parsed.decode;
    itscale::llama_cpp_source src(model, opts);
    itscale_examples::validate_decode_args(d, src.vocab_size());

    const auto prompt = tokenize(vocab, a.prompt);
    if (prompt.empty()) throw std::invalid_argument("the prompt has no tokens (and the model adds no BOS): give --prompt");
    const std::size_t ctx = src.capacity().max_context;
    if (prompt.size() + d.sampling.stop.max_new_tokens > ctx)
      throw std::invalid_argument("the prompt (" + std::to_string(prompt.size()) + " tokens) plus --max-new-tokens " +
                                  std::to_string(d.sampling.stop.max_new_tokens) + " exceeds the context of " +
                                  std::to_string(ctx) + " tokens");
    char desc[256];
    llama_model_desc(model.get(), desc, sizeof desc);
    std::printf("model %s (%s): vocab %zu, context %zu; n_seq_max %zu, n_ctx %zu, threads %zu\n",
                std::filesystem::path(a.model).filename().string().c_str(), desc, src.vocab_size(), ctx,
                src.capacity().max_live_sequences, src.n_ctx(), d.threads);
    std::printf("prompt: \"%s\" (%zu tokens)\n", a.prompt.c_str(), prompt.size());
    itscale_examples::run_decoding(src, std::span<const itscale::token_id>(prompt), d,
                                   [&](std::span<const itscale::token_id> p, const std::vector<itscale::token_id>& generated) {
                                     std::vector<itscale::token_id> all(p.begin(), p.end());
                                     all.insert(all.end(), generated.begin(), generated.end());
                                     return detokenize(vocab, all);
                                   });
    std::printf("live handles after decoding: %zu\n", src.live_handles());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "itscale_llama_cpp_generate: %s\n", e.what());
    return 2;
  }
}
