// itscale's decoders (greedy, sampling, beam search) on a model served by an OpenAI-compatible
// server: the search runs here, the model runs there (`remote_source` over /v1/completions).
// Tokenization is the server's (/tokenize and /detokenize, as llama-server serves them).
//
//   llama-server -m model.gguf --port 8080 --parallel 8 &
//   itscale_remote_generate --server http://127.0.0.1:8080 --prompt "Once upon a time" --strategy beam
//
// Exit code 2 with a message on stderr for a bad command line or a failed request.

#include <cstdio>
#include <exception>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <itscale/backends/remote/remote_source.hpp>
#include <itscale/search.hpp>

#include "decode_cli.hpp"

namespace {

struct args {
  std::string server = "http://127.0.0.1:8080";
  std::string api_key;
  std::string model;
  std::string prompt = "I dreamed";
  std::size_t top_logprobs = 0;  // 0: what the strategy needs
  std::size_t in_flight = 16;
  itscale_examples::decode_args decode;
};

std::vector<itscale::token_id> tokenize(itscale::http_client& c, const std::string& text) {
  const auto j = c.call({"/tokenize", nlohmann::json{{"content", text}, {"add_special", true}}.dump()});
  if (!j.contains("tokens")) throw itscale::backend_error("/tokenize answered without \"tokens\": " + j.dump());
  return j.at("tokens").get<std::vector<itscale::token_id>>();
}

std::string detokenize(itscale::http_client& c, std::span<const itscale::token_id> tokens) {
  const auto j = c.call({"/detokenize", nlohmann::json{{"tokens", std::vector<itscale::token_id>(tokens.begin(), tokens.end())}}.dump()});
  if (!j.contains("content")) throw itscale::backend_error("/detokenize answered without \"content\": " + j.dump());
  return j.at("content").get<std::string>();
}

// Log-probs per row the strategy needs: beam search 2K, sampling its top-k (20 without one), greedy 1.
std::size_t needed_top_k(const itscale_examples::decode_args& d) {
  if (d.strat == itscale_examples::strategy::beam) return 2 * d.beam.num_beams;
  if (!d.sampling.do_sample) return 1;
  return d.sampling.top_k ? d.sampling.top_k : 20;
}

}  // namespace

int main(int argc, char** argv) {
  args parsed;
  CLI::App app{"itscale's decoders on a model behind an OpenAI-compatible server (llama-server, vLLM, SGLang).",
               "itscale_remote_generate"};
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(34);
  app.add_option("--server", parsed.server, "the server's root URL");
  app.add_option("--api-key", parsed.api_key, "sent as Authorization: Bearer (default: none)");
  app.add_option("--model-name", parsed.model, "the request's \"model\" (vLLM needs it)");
  app.add_option("--prompt", parsed.prompt, "text to continue (the server's tokenizer, BOS as the server adds it)");
  app.add_option("--top-logprobs", parsed.top_logprobs, "log-probs per row (0: what the strategy needs)")
      ->transform(itscale_examples::non_negative_integer);
  app.add_option("--in-flight", parsed.in_flight, "requests open at once")->transform(itscale_examples::non_negative_integer);
  itscale_examples::add_decode_options(app, parsed.decode, "unused here (the server's threads)");
  if (const int rc = itscale_examples::parse_command_line(app, argc, argv); rc >= 0) return rc;
  try {
    args& a = parsed;
    const itscale::http_options http{.base_url = a.server, .api_key = a.api_key, .max_in_flight = a.in_flight};
    itscale::http_client text(http);
    itscale_examples::finish_decode_args(a.decode, app.count("--num-return-sequences") > 0, {});
    const auto& d = a.decode;
    const bool beam = d.strat == itscale_examples::strategy::beam;
    itscale::remote_source src({.http = http,
                                .top_k = a.top_logprobs ? a.top_logprobs : needed_top_k(d),
                                .model = a.model,
                                .rest = beam ? itscale::remote_rest::spread : itscale::remote_rest::masked});
    // EOS: llama-server's /props names its text, /tokenize (special tokens parsed) gives its id;
    // elsewhere max-new-tokens ends every sequence.
    std::vector<itscale::token_id> eos;
    if (const auto p = text.call({"/props", {}}); p.contains("eos_token") && p.at("eos_token").is_string()) {
      const auto t = text.call({"/tokenize", nlohmann::json{{"content", p.at("eos_token")}, {"add_special", false},
                                                            {"parse_special", true}}.dump()});
      if (t.contains("tokens") && t.at("tokens").size() == 1) eos.push_back(t.at("tokens")[0].get<itscale::token_id>());
    }
    itscale_examples::finish_decode_args(a.decode, app.count("--num-return-sequences") > 0, eos);
    itscale_examples::validate_decode_args(d, src.vocab_size());
    const auto prompt = tokenize(text, a.prompt);
    if (prompt.empty()) throw std::invalid_argument("the prompt has no tokens: give --prompt");
    std::printf("server %s: vocab %zu, %zu log-probs per row (%s)\n", a.server.c_str(), src.vocab_size(),
                a.top_logprobs ? a.top_logprobs : needed_top_k(d), beam ? "rest of the mass spread" : "rest masked");
    std::printf("prompt: \"%s\" (%zu tokens)\n", a.prompt.c_str(), prompt.size());
    itscale_examples::run_decoding(src, std::span<const itscale::token_id>(prompt), d,
                                   [&](std::span<const itscale::token_id> p, const std::vector<itscale::token_id>& generated) {
                                     std::vector<itscale::token_id> all(p.begin(), p.end());
                                     all.insert(all.end(), generated.begin(), generated.end());
                                     return detokenize(text, all);
                                   });
    const auto& u = src.usage();
    std::printf("server: %llu requests, %llu prompt tokens of which %llu from its prefix cache\n",
                static_cast<unsigned long long>(u.requests), static_cast<unsigned long long>(u.prompt_tokens),
                static_cast<unsigned long long>(u.cached_tokens));
    std::printf("live handles after decoding: %zu\n", src.live_handles());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "itscale_remote_generate: %s\n", e.what());
    return 2;
  }
}
