// Chain arithmetic on the real arith-1750 checkpoint (tests/data/models/README.md): the task header
// (generator, prompt encoding, calculator verifier, answer extraction), greedy against the README's
// sample completions, and verifier-guided step search against greedy on a fixed problem set.
// The checkpoints are read from ITSCALE_DATA_DIR/models; a missing one fails.

#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <itscale/backends/llama2c_model.hpp>
#include <itscale/backends/llama2c_tokenizer.hpp>
#include <itscale/decode/generate.hpp>
#include <itscale/steps/dvts.hpp>
#include <itscale/steps/rebase.hpp>
#include <itscale/steps/sampling_proposer.hpp>
#include <itscale/steps/step_beam_search.hpp>

#include "../../examples/arith/arith_task.hpp"

namespace {
namespace fs = std::filesystem;
using itscale::token_id;

const fs::path models_dir = fs::path(ITSCALE_DATA_DIR) / "models";

bool have(const char* file) {
  // The checkpoints are in the repository (tests/data/models): a missing one is a failure.
  REQUIRE_MESSAGE(fs::exists(models_dir / file), (models_dir / file).string() << " not found");
  REQUIRE_MESSAGE(fs::exists(models_dir / "arith-tok.bin"), "arith-tok.bin not found");
  return true;
}

struct arith_setup {
  itscale::llama2c_tokenizer tok = itscale::llama2c_tokenizer::load(models_dir / "arith-tok.bin");
  itscale::llama2c_model model;
  arith::calculator_verifier verifier{tok};
  token_id semi = tok.lookup(";");
  explicit arith_setup(const char* file) : model(itscale::llama2c_model::load(models_dir / file)) {}

  std::size_t context() const { return model.config().seq_len; }

  // Greedy completions (text) of every problem, in one batched decode; generated tokens in `spent`.
  std::vector<std::string> greedy(const std::vector<arith::problem>& ps, std::uint64_t& spent) {
    std::vector<std::vector<token_id>> prompts;
    std::size_t longest = 0;
    for (const auto& p : ps) {
      prompts.push_back(arith::encode_prompt(tok, p.prompt()));
      longest = std::max(longest, prompts.back().size());
    }
    const auto out = itscale::generate(
        model, prompts,
        itscale::sampling_options{.stop = {.max_new_tokens = context() - longest, .eos_token_id = {itscale::llama2c_tokenizer::eos}},
                                  .output_logprobs = false});
    spent = out.compute.generated_tokens();
    std::vector<std::string> texts;
    for (const auto& g : out) texts.push_back(verifier.text(g.tokens));
    return texts;
  }

  itscale::sampling_proposer_options proposer_options(std::uint64_t seed, float temperature) const {
    return {.sampling = {.do_sample = true, .seed = seed, .temperature = temperature},
            .delimiters = {{semi}},
            .eos_token_id = {itscale::llama2c_tokenizer::eos},
            .max_step_tokens = 24,
            .max_sequence_tokens = context()};
  }
};

bool solved(const arith_setup& s, const arith::problem& p, const itscale::step_search_result& r) {
  if (r.empty()) return false;
  const auto a = arith::extract_answer(s.verifier.text(r[0].tokens));
  return a && *a == p.answer();
}

// The fixed problem set: 30 problems, 6 each with 2, 3, 4, 5 and 6 operations.
std::vector<arith::problem> problem_set() { return arith::make_problems(2024, 30, 2, 6); }

struct tally {
  int solved = 0;
  std::uint64_t tokens = 0;
  double per_problem(std::size_t n) const { return static_cast<double>(tokens) / static_cast<double>(n); }
};
}  // namespace

TEST_CASE("arith task: generator rules, prompts, the calculator verifier and answer extraction") {
  // The README's example.
  const auto p = arith::problem::parse("37+45-18+9=");
  REQUIRE(p);
  CHECK(p->answer() == 73);
  CHECK(p->completion() == "37+45=82;82-18=64;64+9=73;#73");
  CHECK(p->prompt() == "37+45-18+9=");
  CHECK(!arith::problem::parse("37+45"));
  CHECK(!arith::problem::parse("37*4="));
  // The verifier: every completed step right and continuing the problem; the answer when complete.
  CHECK(arith::score_text(*p, "", false) == 1);
  CHECK(arith::score_text(*p, "37+45=82;", false) == 1);
  CHECK(arith::score_text(*p, "37+45=82;82-18=6", false) == 1);  // the unfinished tail is not judged
  CHECK(arith::score_text(*p, "37+45=83;", false) == 0);         // wrong result
  CHECK(arith::score_text(*p, "37+45=82;82+18=100;", false) == 0);  // wrong operation
  CHECK(arith::score_text(*p, "37+45=82;81-18=63;", false) == 0);   // does not continue
  CHECK(arith::score_text(*p, "37+5=42;", false) == 0);              // operand copied wrong
  CHECK(arith::score_text(*p, "37+45=82;82-18=64;64+9=73;64+9=73;", false) == 0);  // too many steps
  CHECK(arith::score_text(*p, "37+45=82;82-18=64;64+9=73;#73", true) == 1);
  CHECK(arith::score_text(*p, "37+45=82;82-18=64;64+9=73;#74", true) == 0);
  CHECK(arith::score_text(*p, "37+45=82;82-18=64;#64", true) == 0);  // an operation skipped
  CHECK(arith::score_text(*p, "37+45=82;82-18=64;64+9=73;", true) == 0);  // finished without an answer
  CHECK(arith::extract_answer("1+2=3;#3") == 3);
  CHECK(arith::extract_answer("1+2=3;#") == std::nullopt);
  CHECK(arith::extract_answer("1+2=3;") == std::nullopt);
  CHECK(arith::extract_answer("#12#34") == 34);
  // The generator: seeded, the README's ranges and sign rules.
  const auto ps = arith::make_problems(7, 500, 1, 6);
  CHECK(arith::make_problems(7, 500, 1, 6)[123].prompt() == ps[123].prompt());
  int small = 0;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    CHECK(ps[i].ops.size() == 1 + i % 6);
    CHECK((ps[i].first >= 10 && ps[i].first <= 99));
    int total = ps[i].first;
    for (const auto& [op, y] : ps[i].ops) {
      CHECK((y >= 1 && y <= 99));
      small += y < 10;
      total = op == '+' ? total + y : total - y;
      CHECK((total >= 0 && total <= 999));
    }
    CHECK(arith::score_text(ps[i], ps[i].completion(), true) == 1);
    CHECK(arith::problem::parse(ps[i].prompt())->prompt() == ps[i].prompt());
  }
  CHECK((small > 150 && small < 370));  // about 15 % of 1750 operands
  REQUIRE(fs::exists(models_dir / "arith-tok.bin"));
  // Prompt encoding: BOS, the dummy space, one token per character; the verifier reads it back.
  const auto tok = itscale::llama2c_tokenizer::load(models_dir / "arith-tok.bin");
  const auto ids = arith::encode_prompt(tok, "37+45=");
  REQUIRE(ids.size() == 8);
  CHECK(ids[0] == itscale::llama2c_tokenizer::bos);
  CHECK(ids[1] == 259);
  CHECK(ids[2] == tok.lookup("3"));
  arith::calculator_verifier v(tok);
  CHECK(v.name() == "arith_calculator");
  CHECK(v.problem_of(ids)->prompt() == "37+45=");
  const auto good = arith::encode_prompt(tok, "37+45=82;#82");
  const itscale::verify_item items[] = {
      {ids, std::span<const token_id>(good).subspan(2), true},
      {ids, std::span<const token_id>(good).subspan(2, 9), false},
      {ids, std::span<const token_id>(good).subspan(2, 8), true},
  };
  CHECK(v.verify(items) == std::vector<double>{1, 1, 0});
}

TEST_CASE("arith-1750: greedy completions of the README's sample problems") {
  if (!have("arith-1750.bin")) return;
  arith_setup s("arith-1750.bin");
  const std::vector<std::pair<std::string, std::string>> table = {
      {"91+45+23=", "91+45=136;136+23=159;#159"},
      {"85+13+74-93=", "85+13=98;98+74=172;172-93=79;#79"},
      {"38+45-30+29+6=", "38+45=83;83-30=53;53+29=82;82+6=88;#88"},
      {"21+55-15+58-90+18=", "21+55=76;76-15=61;61+58=119;119-90=29;29+18=47;#47"},
      {"94+47-2-91+55+99+31=", "94+47=141;141-2=139;139-91=48;48+55=103;103+99=202;202+31=233;#233"},
      {"30+44+17=", "30+44=74;74+17=91;#91"},
      {"14+61+82-73=", "14+61=75;75+82=157;157-73=84;#84"},
      {"92+43-81+64-27=", "92+43=135;135-81=54;54+64=118;118-27=91;#91"},
      {"21+24+97-59-69+1=", "21+24=45;45+97=142;142-59=83;83-69=14;14+11=25;#25"},
      {"97-5+65+43-23+74+30=", "97-5=92;92+65=157;157+43=200;200-23=177;177+74=251;251+30=281;#281"},
      {"86+12+5=", "86+12=98;98+5=103;#103"},
      {"17+82+72+9=", "17+82=99;99+72=171;171+9=180;#180"},
  };
  std::vector<arith::problem> ps;
  for (const auto& [prompt, completion] : table) ps.push_back(*arith::problem::parse(prompt));
  std::uint64_t spent = 0;
  const auto texts = s.greedy(ps, spent);
  int right = 0;
  for (std::size_t i = 0; i < table.size(); ++i) {
    CHECK(texts[i] == table[i].second);
    const bool ok = arith::extract_answer(texts[i]) == ps[i].answer();
    CHECK(ok == (arith::score_text(ps[i], texts[i], true) == 1));
    right += ok;
  }
  CHECK(right == 11);  // the README's table: all but 21+24+97-59-69+1 (1 copied as 11)
  CHECK(s.model.live_handles() == 0);
}

TEST_CASE("arith-1750: step beam search with the calculator solves clearly more problems than greedy") {
  if (!have("arith-1750.bin")) return;
  arith_setup s("arith-1750.bin");
  const auto ps = problem_set();
  std::uint64_t greedy_tokens = 0;
  const auto texts = s.greedy(ps, greedy_tokens);
  int greedy = 0;
  for (std::size_t i = 0; i < ps.size(); ++i) greedy += arith::extract_answer(texts[i]) == ps[i].answer();
  tally beam;
  itscale::sampling_proposer prop(s.model, s.proposer_options(1, 0.7f));
  for (const auto& p : ps) {
    const auto prompt = arith::encode_prompt(s.tok, p.prompt());
    const auto r = itscale::step_beam_search(prop, s.verifier, prompt,
                                             {.num_candidates = 8, .expansions = 4, .max_steps = 10, .stop_at_score = 1});
    beam.solved += solved(s, p, r);
    beam.tokens += r.compute.generated_tokens();
  }
  MESSAGE("arith-1750, 30 problems (2-6 operations): greedy " << greedy << "/30 (" << static_cast<double>(greedy_tokens) / 30.0
                                                               << " tokens/problem); step beam N=8 M=4 T=0.7: "
                                                               << beam.solved << "/30 (" << beam.per_problem(ps.size())
                                                               << " generated tokens/problem)");
  CHECK(beam.solved >= greedy + 4);
  CHECK(s.model.live_handles() == 0);
}

namespace {
// Greedy's count on the problem set, and each problem's search result counted by `run`.
template <class Run>
std::pair<int, tally> against_greedy(arith_setup& s, Run&& run) {
  const auto ps = problem_set();
  std::uint64_t greedy_tokens = 0;
  const auto texts = s.greedy(ps, greedy_tokens);
  int greedy = 0;
  for (std::size_t i = 0; i < ps.size(); ++i) greedy += arith::extract_answer(texts[i]) == ps[i].answer();
  tally t;
  itscale::sampling_proposer prop(s.model, s.proposer_options(1, 0.7f));
  for (const auto& p : ps) {
    const auto r = run(prop, arith::encode_prompt(s.tok, p.prompt()));
    t.solved += solved(s, p, r);
    t.tokens += r.compute.generated_tokens();
  }
  return {greedy, t};
}
}  // namespace

TEST_CASE("arith-1750: REBASE with the calculator solves clearly more problems than greedy") {
  if (!have("arith-1750.bin")) return;
  arith_setup s("arith-1750.bin");
  const auto [greedy, reb] = against_greedy(s, [&](auto& prop, const std::vector<token_id>& prompt) {
    return itscale::rebase(prop, s.verifier, prompt, {.width = 8, .temperature = 0.1, .max_steps = 10, .stop_at_score = 1});
  });
  MESSAGE("arith-1750, 30 problems: greedy " << greedy << "/30; REBASE N=8 T=0.1: " << reb.solved << "/30 ("
                                             << reb.per_problem(30) << " generated tokens/problem)");
  CHECK(reb.solved >= greedy + 4);
  CHECK(s.model.live_handles() == 0);
}

TEST_CASE("arith-1750: DVTS with the calculator does not fall below greedy") {
  if (!have("arith-1750.bin")) return;
  arith_setup s("arith-1750.bin");
  const auto [greedy, dv] = against_greedy(s, [&](auto& prop, const std::vector<token_id>& prompt) {
    return itscale::dvts(prop, s.verifier, prompt, {.num_candidates = 8, .expansions = 4, .max_steps = 10, .stop_at_score = 1});
  });
  MESSAGE("arith-1750, 30 problems: greedy " << greedy << "/30; DVTS N=8 M=4: " << dv.solved << "/30 ("
                                             << dv.per_problem(30) << " generated tokens/problem)");
  CHECK(dv.solved >= greedy + 2);
  CHECK(s.model.live_handles() == 0);
}
