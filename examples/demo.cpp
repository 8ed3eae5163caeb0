// itscale demo: greedy and sampled continuations from the deterministic hash language model,
// with the options used printed. Options (all optional):
//   --vocab N  --model-seed N  --prompt "1 2 3"  --max-new-tokens N  --samples N  --seed N
//   --temperature T  --top-k K  --top-p P  --min-p P  --repetition-penalty R
// Bad options are reported with the library's own validation message.

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include <itscale/search.hpp>

namespace {

struct demo_args {
  std::size_t vocab = 64;
  std::uint64_t model_seed = 11;
  std::vector<itscale::token_id> prompt{3, 9, 3};
  itscale::sampling_options sampling{.max_new_tokens = 16, .eos_token_id = {0}, .do_sample = true, .seed = 42,
                                     .num_return_sequences = 4, .temperature = 0.8f, .top_k = 20, .top_p = 0.95};
};

demo_args parse(int argc, char** argv) {
  demo_args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + k);
    const std::string v = argv[++i];
    if (k == "--vocab") a.vocab = std::stoul(v);
    else if (k == "--model-seed") a.model_seed = std::stoull(v);
    else if (k == "--prompt") {
      a.prompt.clear();
      std::istringstream in(v);
      for (long t; in >> t;) a.prompt.push_back(static_cast<itscale::token_id>(t));
    } else if (k == "--max-new-tokens") a.sampling.max_new_tokens = std::stoul(v);
    else if (k == "--samples") a.sampling.num_return_sequences = std::stoul(v);
    else if (k == "--seed") a.sampling.seed = std::stoull(v);
    else if (k == "--temperature") a.sampling.temperature = std::stof(v);
    else if (k == "--top-k") a.sampling.top_k = std::stoul(v);
    else if (k == "--top-p") a.sampling.top_p = std::stod(v);
    else if (k == "--min-p") a.sampling.min_p = std::stof(v);
    else if (k == "--repetition-penalty") a.sampling.repetition_penalty = std::stof(v);
    else throw std::invalid_argument("unknown option " + k);
  }
  return a;
}

void print(const char* label, const itscale::generation& g) {
  std::printf("  %-10s", label);
  for (auto t : g.tokens) std::printf(" %3d", t);
  const char* why = g.stop == itscale::stop_reason::eos ? "eos" : g.stop == itscale::stop_reason::stop_sequence ? "stop" : "length";
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
  try {
    const auto a = parse(argc, argv);
    a.sampling.validate(a.vocab);  // report bad options before printing anything
    itscale::hash_lm lm(a.vocab, a.model_seed);
    std::printf("itscale %s demo: hash language model, vocab %zu, model seed %llu\nprompt:", itscale::version_string,
                a.vocab, static_cast<unsigned long long>(a.model_seed));
    for (auto t : a.prompt) std::printf(" %d", t);
    std::printf("\n\ngreedy (max_new_tokens %zu, eos_token_id 0):\n", a.sampling.max_new_tokens);
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
    std::printf("\nlive handles after decoding: %zu\n", lm.live_handles());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "itscale_demo: %s\n", e.what());
    return 2;
  }
}
