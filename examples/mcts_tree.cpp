// A small MCTS on one chain-arithmetic problem (arith-1750.bin, the calculator verifier), printed
// as a Graphviz tree: each box is a step with its visits N, mean value Q and prior P; answers are
// filled red (wrong) to green (right); the chosen path is bold. The summary goes to stderr.
//
//     itscale_mcts_tree > tree.dot && dot -Tsvg tree.dot -o examples/mcts_tree.svg
//
// made examples/mcts_tree.svg (defaults: the README's problem 21+24+97-59-69+1=, whose greedy
// completion copies the 1 as 11; 24 simulations, 4 leaves a round, 4 samples an expansion,
// temperature 1). Options: --model FILE --tokenizer FILE --prompt TEXT --simulations N --seed S
// --widening C (progressive widening ceil(C sqrt(N)); default 0: off).

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <itscale/backends/llama2c_model.hpp>
#include <itscale/backends/llama2c_tokenizer.hpp>
#include <itscale/decode/generate.hpp>
#include <itscale/steps/sampling_proposer.hpp>
#include <itscale/tree/mcts.hpp>
#include <string>
#include <vector>

#include "arith/arith_task.hpp"

int main(int argc, char** argv) try {
  const std::filesystem::path models = std::filesystem::path(ITSCALE_DATA_DIR) / "models";
  std::string model_path = (models / "arith-1750.bin").string(), tok_path = (models / "arith-tok.bin").string();
  std::string prompt_text = "21+24+97-59-69+1=";
  std::size_t simulations = 24;
  std::uint64_t seed = 3;
  double widening = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--model")
      model_path = v;
    else if (k == "--tokenizer")
      tok_path = v;
    else if (k == "--prompt")
      prompt_text = v;
    else if (k == "--simulations")
      simulations = std::stoul(v);
    else if (k == "--seed")
      seed = std::stoull(v);
    else if (k == "--widening")
      widening = std::stod(v);
    else {
      std::cerr << "unknown option " << k << "\n";
      return 2;
    }
  }
  const auto tok = itscale::llama2c_tokenizer::load(tok_path);
  auto model = itscale::llama2c_model::load(model_path);
  itscale::check_vocab_match(tok, model.vocab_size());
  const arith::calculator_verifier calc(tok);
  const auto prompt = arith::encode_prompt(tok, prompt_text);

  const auto greedy = itscale::generate(model, std::span<const itscale::token_id>(prompt),
                                        {.stop = {.max_new_tokens = 90, .eos_token_id = {2}}});
  itscale::sampling_proposer prop(model, {.sampling = {.do_sample = true, .seed = seed, .temperature = 1.0f},
                                          .delimiters = {{tok.lookup(";")}},
                                          .eos_token_id = {2},
                                          .max_step_tokens = 20,
                                          .max_sequence_tokens = 128});
  itscale::mcts search(prop, calc, prompt,
                       {.simulations = simulations,
                        .leaves_per_round = 4,
                        .samples_per_expansion = 4,
                        .widening = {.c = widening, .alpha = 0.5}});
  const auto r = search.search();

  std::cout << search.to_dot(
      {.detokenize = [&](std::span<const itscale::token_id> step) { return calc.text(step); }, .highlight = r.path});
  std::cerr << "prompt   " << prompt_text << "\ngreedy   " << calc.text(greedy[0].tokens) << "\nmcts     "
            << (r.sequences.empty() ? std::string("(none)") : calc.text(r.sequences[0].tokens)) << "\n"
            << r.simulations << " simulations, " << r.nodes << " nodes, " << r.compute.generated_tokens()
            << " generated tokens, " << r.compute.extend_calls << " extend calls, " << r.compute.verifier_calls
            << " verifier calls\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
