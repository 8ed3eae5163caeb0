// The remote step proposer against a local llama-server (tests/remote/build_llama_server.sh;
// ITSCALE_REMOTE=ON) serving arith-1750.gguf with 16 slots, one server thread:
//
//   proposals/in_flight:F   one `propose` over 16 nodes (16 arith problems), 4 samples each: 16
//                           requests with at most F open at once (http_options.max_in_flight =
//                           1, 4, 16). Counters: proposals_s (sampled steps per second of wall
//                           time), requests_s, and itscale_share: the part of the wall time spent
//                           outside the HTTP calls (building requests, parsing answers, merging).
//
// The server batches the requests that are open together, so more in flight = more steps per
// second until its slots or cores are full.

#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <itscale/backends/remote/remote_proposer.hpp>

#include "../examples/arith/arith_task.hpp"
#include "../tests/remote/server_process.hpp"

namespace {

using itscale::token_id;
const std::string models = std::string(ITSCALE_DATA_DIR) + "/models/";

struct fixture {
  remote_test::llama_server server{ITSCALE_LLAMA_SERVER_EXE, models + "arith-1750.gguf",
                                   {"--parallel", "16", "-c", "8192", "--threads", "1", "--threads-batch", "1"}};
  itscale::llama2c_tokenizer tok = itscale::llama2c_tokenizer::load(models + "arith-tok.bin");
  std::vector<std::vector<token_id>> prompts;
  fixture() {
    for (const auto& p : arith::make_problems(99, 16, 2, 5)) prompts.push_back(arith::encode_prompt(tok, p.prompt()));
  }
};

fixture& env() {
  static fixture f;
  return f;
}

void proposals(benchmark::State& st) {
  auto& f = env();
  itscale::remote_proposer p({.http = {.base_url = f.server.url(), .max_in_flight = static_cast<std::size_t>(st.range(0))},
                              .delimiters = {";"},
                              .delimiter_tokens = {{f.tok.lookup(";")}},
                              .eos_token_id = {itscale::llama2c_tokenizer::eos},
                              .temperature = 0.8f,
                              .max_step_tokens = 16,
                              .max_samples_per_request = 16});
  std::vector<std::vector<token_id>> nodes = f.prompts;
  std::uint32_t round = 0;
  double steps = 0, requests = 0, wall = 0, in_http = 0;
  for (auto _ : st) {
    std::vector<itscale::propose_item<std::vector<token_id>>> batch;
    for (std::uint32_t i = 0; i < nodes.size(); ++i) batch.push_back({&nodes[i], i, round * 4, 4});
    const double http0 = p.stats().source_seconds;
    const auto t0 = std::chrono::steady_clock::now();
    const auto out = p.propose(std::span<const itscale::propose_item<std::vector<token_id>>>(batch), 4);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st.SetIterationTime(secs);
    for (const auto& c : out)
      for (const auto& s : c) steps += static_cast<double>(s.count);
    requests += static_cast<double>(batch.size());
    wall += secs;
    in_http += p.stats().source_seconds - http0;
    ++round;  // new samples each time (the same prompts: their prefixes stay cached)
  }
  st.counters["proposals_s"] = wall > 0 ? steps / wall : 0;
  st.counters["requests_s"] = wall > 0 ? requests / wall : 0;
  st.counters["itscale_share"] = wall > 0 ? (wall - in_http) / wall : 0;
}
BENCHMARK(proposals)->ArgName("in_flight")->Arg(1)->Arg(4)->Arg(16)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
