// The remote backends against a real llama-server (built from the llama.cpp sources of the npm
// package, tests/remote/build_llama_server.sh) serving arith-1750.gguf on 127.0.0.1: greedy
// through remote_source = greedy through the in-process llama.cpp backend; self-consistency, step
// beam search and MCTS through remote_proposer (with the calculator as a local verifier and as a
// reward model on its own HTTP server); a server killed mid-search. Case names start "[server]".

#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <itscale/backends/llama_cpp_source.hpp>
#include <itscale/backends/remote/http_verifier.hpp>
#include <itscale/backends/remote/remote_proposer.hpp>
#include <itscale/backends/remote/remote_source.hpp>
#include <itscale/search.hpp>

#include "../../examples/arith/arith_task.hpp"
#include "mock_server.hpp"
#include "server_process.hpp"

using namespace std::chrono_literals;
using itscale::token_id;

namespace {

std::string model_file(const char* name) { return std::string(ITSCALE_DATA_DIR) + "/models/" + name; }

// One server for the cases that do not kill theirs: 8 slots, so 8 samples of a node are one request.
remote_test::llama_server& server() {
  static remote_test::llama_server s(ITSCALE_LLAMA_SERVER_EXE, model_file("arith-1750.gguf"),
                                     {"--parallel", "8", "-c", "4096", "--threads", "1", "--seed", "1"});
  return s;
}

const itscale::llama2c_tokenizer& tok() {
  static const auto t = itscale::llama2c_tokenizer::load(model_file("arith-tok.bin"));
  return t;
}

std::vector<arith::problem> problems() { return arith::make_problems(2026, 6, 2, 4); }

itscale::remote_proposer_options arith_steps(const std::string& url, std::uint64_t seed) {
  // llama-server's native API: its /v1/completions drops one log-prob too many after a stop string
  // with this dummy-prefix tokenizer (see remote_api).
  return {.http = {.base_url = url, .timeout = 30000ms},
          .api = itscale::remote_api::llama_server,
          .delimiters = {";"},
          .eos_token_id = {itscale::llama2c_tokenizer::eos},
          .temperature = 0.8f,
          .seed = seed,
          .max_step_tokens = 16,
          .max_sequence_tokens = 128,
          .max_samples_per_request = 8};
}

}  // namespace

TEST_CASE("[server] /tokenize gives our ids; greedy through remote_source = greedy through the in-process llama.cpp backend") {
  itscale::http_client c({.base_url = server().url()});
  auto model = itscale::load_llama_cpp_model(model_file("arith-1750.gguf"));
  itscale::remote_source remote({.http = {.base_url = server().url()}, .top_k = 4});
  CHECK(remote.vocab_size() == 275);
  std::size_t tokens = 0;
  for (const auto& p : problems()) {
    CAPTURE(p.prompt());
    const auto prompt = arith::encode_prompt(tok(), p.prompt());
    const auto t = c.call({"/tokenize", nlohmann::json{{"content", p.prompt()}, {"add_special", true}}.dump()});
    CHECK(t.at("tokens").get<std::vector<token_id>>() == prompt);  // BOS and the dummy space included

    itscale::llama_cpp_source local(model, {.n_seq_max = 4, .n_ctx = 512});
    const itscale::sampling_options greedy{.stop = {.max_new_tokens = 60, .eos_token_id = {itscale::llama2c_tokenizer::eos}}};
    const auto want = itscale::generate(local, std::span<const token_id>(prompt), greedy);
    const auto got = itscale::generate(remote, std::span<const token_id>(prompt), greedy);
    CHECK(got[0].tokens == want[0].tokens);
    tokens += got[0].tokens.size();
  }
  CHECK(remote.live_handles() == 0);
  MESSAGE("greedy, " << problems().size() << " problems, " << tokens << " tokens: remote = in-process llama.cpp; "
                     << remote.usage().requests << " requests, " << remote.usage().cached_tokens << " of "
                     << remote.usage().prompt_tokens << " prompt tokens from the server's prefix cache");
  CHECK(remote.usage().cached_tokens > remote.usage().prompt_tokens / 2);  // children reuse their parent's prefix
}

TEST_CASE("[server] self-consistency, step beam search and MCTS through the remote proposer run end to end and report their compute") {
  const arith::calculator_verifier calc(tok());
  // The same calculator as a reward model on its own server (http_verifier's wire format).
  remote_test::mock_server rm([&](const remote_test::mock_request& r) {
    const auto j = nlohmann::json::parse(r.body);
    nlohmann::json scores = nlohmann::json::array();
    for (const auto& it : j.at("items")) {
      const auto pi = it.at("prompt_ids").get<std::vector<token_id>>();
      const auto si = it.at("response_ids").get<std::vector<token_id>>();
      const itscale::verify_item one{pi, si, it.at("complete").get<bool>()};
      scores.push_back(calc.verify(std::span<const itscale::verify_item>(&one, 1))[0]);
    }
    return remote_test::mock_reply{200, nlohmann::json{{"scores", scores}}.dump()};
  });
  itscale::http_verifier prm({.http = {.base_url = rm.url()}, .name = "calculator-over-http"});
  std::size_t sc_right = 0, beam_right = 0, mcts_right = 0, n = 0;
  itscale::compute_stats sc_c, beam_c, mcts_c;
  for (const auto& p : problems()) {
    const auto prompt = arith::encode_prompt(tok(), p.prompt());
    const std::span<const token_id> P(prompt);
    const auto answer = [&](std::span<const token_id> t) { return arith::extract_answer(calc.text(t)); };
    itscale::remote_proposer prop(arith_steps(server().url(), 7 + n));

    const auto sc = itscale::self_consistency(prop, P, answer, {.samples = 8, .max_steps = 8});
    REQUIRE(sc[0].samples.size() == 8);
    sc_right += sc[0].vote.answer == std::optional<long>(p.answer());
    sc_c += sc.compute;

    const auto sb = itscale::step_beam_search(prop, prm, P, {.num_candidates = 8, .expansions = 4});
    REQUIRE(!sb.sequences.empty());
    beam_right += answer(sb.sequences[0].tokens) == std::optional<long>(p.answer());
    beam_c += sb.compute;

    auto local = calc;
    const auto mc = itscale::mcts_search(prop, local, P, {.simulations = 16, .leaves_per_round = 4, .samples_per_expansion = 4});
    REQUIRE(!mc.sequences.empty());
    mcts_right += answer(mc.sequences[0].tokens) == std::optional<long>(p.answer());
    mcts_c += mc.compute;
    ++n;
  }
  for (const auto* c : {&sc_c, &beam_c, &mcts_c}) {
    CHECK(c->prefill_calls > 0);          // requests
    CHECK(c->generated_tokens() > 0);     // the server's completion tokens
    CHECK(c->source_seconds > 0);
  }
  CHECK(beam_c.verifier_calls > 0);
  CHECK(mcts_c.verifier_calls > 0);
  MESSAGE("on " << n << " problems: self-consistency@8 " << sc_right << " right (" << sc_c.prefill_calls << " requests, "
                << sc_c.generated_tokens() << " tokens); step beam 8/4 with the calculator over HTTP " << beam_right << " ("
                << beam_c.prefill_calls << " requests, " << beam_c.verifier_calls << " verifier calls); MCTS 16 "
                << mcts_right << " (" << mcts_c.prefill_calls << " requests)");
  CHECK(beam_right >= n / 2);  // the verifier-guided search solves most of them (greedy: see the models README)
}

TEST_CASE("[server] a server killed mid-search gives a clean error and no hang") {
  remote_test::llama_server doomed(ITSCALE_LLAMA_SERVER_EXE, model_file("arith-1750.gguf"),
                                   {"--parallel", "4", "-c", "2048", "--threads", "1"});
  const auto p = problems()[0];
  const auto prompt = arith::encode_prompt(tok(), p.prompt());
  auto opts = arith_steps(doomed.url(), 3);
  opts.http.max_retries = 2;
  opts.http.backoff = 50ms;
  itscale::remote_proposer prop(opts);
  const arith::calculator_verifier calc(tok());
  std::atomic<bool> killed{false};
  std::thread killer([&] {
    std::this_thread::sleep_for(300ms);
    doomed.kill();
    killed = true;
  });
  std::string what;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    // Far more work than 300 ms: the kill lands mid-search.
    for (int round = 0; round < 1000; ++round) {
      auto v = calc;
      (void)itscale::mcts_search(prop, v, std::span<const token_id>(prompt), {.simulations = 64, .leaves_per_round = 4});
    }
  } catch (const itscale::remote_error& e) {
    what = e.what();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  killer.join();
  CHECK(killed);
  CHECK(what.find(doomed.url()) != std::string::npos);
  CHECK(what.find("/completion") != std::string::npos);
  CHECK(prop.client().running() == 0);
  CHECK(secs < 10.0);
  MESSAGE("killed after 300 ms; the search ended " << secs << " s in with: " << what);
}

TEST_CASE("[server] the example itscale_remote_generate pointed at the server: greedy, sampling and beam search") {
  const auto run = [](const std::string& args) {
    const std::string cmd = std::string(ITSCALE_REMOTE_GENERATE_EXE) + " --server " + server().url() + " " + args + " 2>&1";
    std::string out;
    FILE* f = ::popen(cmd.c_str(), "r");
    REQUIRE(f != nullptr);
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
    CHECK(::pclose(f) == 0);
    return out;
  };
  const auto p = problems()[0];
  const auto greedy = run("--prompt " + p.prompt() + " --strategy greedy --max-new-tokens 60");
  MESSAGE(greedy);
  CHECK(greedy.find("[greedy 0]") != std::string::npos);
  CHECK(greedy.find(p.completion()) != std::string::npos);  // arith-1750 solves this one greedily (checked above)
  CHECK(greedy.find("live handles after decoding: 0") != std::string::npos);
  const auto sample = run("--prompt " + p.prompt() + " --strategy sample -n 3 --top-k 5 --seed 3 --max-new-tokens 60");
  CHECK(sample.find("[sample 2]") != std::string::npos);
  const auto beam = run("--prompt " + p.prompt() + " --strategy beam --num-beams 3 -n 2 --max-new-tokens 60");
  CHECK(beam.find("[beam 1] score") != std::string::npos);
  CHECK(beam.find("rest of the mass spread") != std::string::npos);
}
