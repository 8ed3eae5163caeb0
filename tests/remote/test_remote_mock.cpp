// The remote backends against an in-process HTTP server (mock_server.hpp): the transport's
// failure handling (retries, timeouts, cancellation, a server that is gone, bounded requests in
// flight, the API key), and remote_source / remote_proposer / http_verifier against a fake model
// (fake_lm.hpp: hash_lm served as llama-server serves it), whose results must equal hash_lm's in
// process. Case names start with their ctest group ("[transport] ...").

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <itscale/backends/remote/http_verifier.hpp>
#include <itscale/backends/remote/remote_proposer.hpp>
#include <itscale/backends/remote/remote_source.hpp>
#include <itscale/search.hpp>
#include <itscale/testing/source_suite.hpp>

#include "fake_lm.hpp"
#include "mock_server.hpp"

using namespace remote_test;
using namespace std::chrono_literals;

namespace {

itscale::http_options fast(const mock_server& s) {
  return {.base_url = s.url(), .connect_timeout = 2000ms, .timeout = 5000ms, .max_retries = 2, .backoff = 10ms};
}

template <class F>
std::string what_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

double seconds_of(auto&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

const std::vector<token_id> prompt{1, 7, 9};

}  // namespace

TEST_CASE("[transport] a 5xx is retried with backoff, then reported with the status and the server's message") {
  mock_server s([](const mock_request&) { return mock_reply{503, R"({"error":{"code":503,"message":"Loading model"}})"}; });
  itscale::http_client c(fast(s));
  long status = 0;
  std::string what;
  try {
    (void)c.call({"/v1/models", {}});
  } catch (const itscale::remote_error& e) {
    status = e.status();
    what = e.what();
  }
  CHECK(status == 503);
  CHECK(what.find("GET " + s.url() + "/v1/models: HTTP 503: Loading model (after 2 retries)") != std::string::npos);
  CHECK(s.requests().size() == 3);
  CHECK(c.stats().retries == 2);
  CHECK(c.running() == 0);
}

TEST_CASE("[transport] a 429 is retried and the call succeeds; a 400 is not retried") {
  std::atomic<int> calls{0};
  mock_server s([&](const mock_request& r) {
    if (r.path == "/bad") return mock_reply{400, R"({"error":{"message":"bad prompt"}})"};
    return ++calls <= 2 ? mock_reply{429, R"({"error":"slow down"})"} : mock_reply{200, R"({"ok":true})"};
  });
  itscale::http_client c(fast(s));
  CHECK(c.call({"/x", "{}"})["ok"] == true);
  CHECK(c.stats().retries == 2);
  const auto w = what_of([&] { (void)c.call({"/bad", "{}"}); });
  CHECK(w.find("POST " + s.url() + "/bad: HTTP 400: bad prompt") != std::string::npos);
  CHECK(w.find("retries") == std::string::npos);
}

TEST_CASE("[transport] garbage JSON and a slow answer past the timeout are clear errors") {
  mock_server s([](const mock_request& r) {
    if (r.path == "/slow") return mock_reply{200, "{}", 3000};
    return mock_reply{200, "<html>not json"};
  });
  itscale::http_options o = fast(s);
  o.timeout = 300ms;
  itscale::http_client c(o);
  CHECK(what_of([&] { (void)c.call({"/garbage", "{}"}); }).find("the server's answer is not JSON: <html>not json") != std::string::npos);
  std::string w;
  const double t = seconds_of([&] { w = what_of([&] { (void)c.call({"/slow", "{}"}); }); });
  CHECK(w.find("(http_options.timeout = 300 ms)") != std::string::npos);
  CHECK(t < 2.0);  // not retried: a timeout means slow, not gone
  CHECK(c.running() == 0);
}

TEST_CASE("[transport] a server that is gone: refused and dropped connections end in an error, no hang") {
  int port = 0;
  {
    mock_server s([](const mock_request&) { return mock_reply{}; });
    port = std::stoi(s.url().substr(s.url().rfind(':') + 1));
  }  // closed: nothing listens there now
  itscale::http_client c({.base_url = "http://127.0.0.1:" + std::to_string(port), .max_retries = 2, .backoff = 10ms});
  const auto w = what_of([&] { (void)c.call({"/v1/models", {}}); });
  CHECK(w.find("/v1/models: ") != std::string::npos);
  CHECK(w.find("after 2 retries") != std::string::npos);

  mock_server dying([](const mock_request&) { return mock_reply{.hang_up = true}; });
  itscale::http_client d(fast(dying));
  CHECK(what_of([&] { (void)d.call({"/v1/completions", "{}"}); }).find("after 2 retries") != std::string::npos);
  CHECK(dying.requests().size() == 3);
}

TEST_CASE("[transport] at most max_in_flight requests at once; the API key is sent; keep-alive reuses connections") {
  mock_server s([](const mock_request&) { return mock_reply{200, "{}", 30}; });
  itscale::http_options o = fast(s);
  o.max_in_flight = 4;
  o.api_key = "sk-test-123";
  itscale::http_client c(o);
  std::vector<itscale::http_request> reqs(20, {"/x", "{}"});
  const double t = seconds_of([&] { (void)c.send(reqs); });
  CHECK(s.most_busy() == 4);
  CHECK(t < 20 * 0.030);  // concurrent, not one after the other
  const auto seen = s.requests();
  REQUIRE(seen.size() == 20);
  for (const auto& r : seen) CHECK(r.headers.find("Authorization: Bearer sk-test-123") != std::string::npos);
  (void)c.send(reqs);
  CHECK(s.most_open() <= 4);  // the second batch rode the first batch's connections
}

TEST_CASE("[transport] cancelling through the stop_token aborts the requests in flight") {
  mock_server s([](const mock_request&) { return mock_reply{200, "{}", 10000}; });
  std::stop_source stop;
  itscale::http_options o = fast(s);
  o.timeout = 60000ms;
  o.stop = stop.get_token();
  itscale::http_client c(o);
  std::thread t([&] {
    std::this_thread::sleep_for(200ms);
    stop.request_stop();
  });
  std::vector<itscale::http_request> reqs(3, {"/x", "{}"});
  bool cancelled = false;
  const double secs = seconds_of([&] {
    try {
      (void)c.send(reqs);
    } catch (const itscale::request_cancelled&) {
      cancelled = true;
    }
  });
  t.join();
  CHECK(cancelled);
  CHECK(secs < 2.0);
  CHECK(c.running() == 0);
  for (int i = 0; i < 100 && s.busy_now() > 0; ++i) std::this_thread::sleep_for(10ms);
  CHECK(s.busy_now() == 0);  // the server saw the connections go: nothing of the call is left running
}

TEST_CASE("[source] greedy, sampling and beam search over remote_source = over the model in process") {
  const fake_lm fake;
  mock_server s(std::cref(fake));
  itscale::hash_lm local = fake.lm;
  const std::span<const token_id> P(prompt);

  itscale::remote_source greedy_src({.http = fast(s), .top_k = 1});
  CHECK(greedy_src.vocab_size() == 64);  // from /v1/models
  const auto want = itscale::generate(local, P, {.stop = {.max_new_tokens = 20}});
  const auto got = itscale::generate(greedy_src, P, {.stop = {.max_new_tokens = 20}});
  CHECK(got[0].tokens == want[0].tokens);

  // Sampling with top-k 5 needs rows of at least 5 log-probs.
  itscale::remote_source src({.http = fast(s), .top_k = 8});
  const itscale::sampling_options so{.stop = {.max_new_tokens = 12}, .do_sample = true, .seed = 11, .num_return_sequences = 4,
                                     .temperature = 0.9f, .top_k = 5};
  const auto ws = itscale::generate(local, P, so);
  const auto gs = itscale::generate(src, P, so);
  REQUIRE(gs.size() == ws.size());
  for (std::size_t i = 0; i < gs.size(); ++i) CHECK(gs[i].tokens == ws[i].tokens);
  CHECK(src.live_handles() == 0);

  // Beam search K = 3 needs 2K log-probs per row and scores comparable across rows (spread).
  itscale::remote_source beam_src({.http = fast(s), .top_k = 6, .rest = itscale::remote_rest::spread});
  const itscale::beam_options bo{.num_beams = 3, .num_return_sequences = 3, .stop = {.max_new_tokens = 8}};
  const auto wb = itscale::beam_search(local, P, bo);
  const auto gb = itscale::beam_search(beam_src, P, bo);
  REQUIRE(gb.size() == wb.size());
  for (std::size_t i = 0; i < gb.size(); ++i) {
    CHECK(gb[i].tokens == wb[i].tokens);
    CHECK(std::abs(gb[i].score - wb[i].score) < 1e-4);
  }
  CHECK(beam_src.live_handles() == 0);
  CHECK(beam_src.usage().requests > 0);
  CHECK(beam_src.usage().prompt_tokens > beam_src.usage().requests);  // the usage answers are read
}

TEST_CASE("[source] remote_source passes the concept suite") {
  const fake_lm fake;
  mock_server s(std::cref(fake));
  // Masked rows hold the top 64 = the whole vocabulary: the suite compares full rows.
  itscale::testing::check_logit_source([&] { return itscale::remote_source({.http = fast(s), .top_k = 64}); }, {.tolerance = 1e-5f});
}

TEST_CASE("[source] unusable answers are errors and create no handle; a batch's rows are fetched concurrently") {
  std::atomic<int> mode{0};
  const fake_lm fake;
  mock_server s([&](const mock_request& r) {
    switch (mode.load()) {
      case 1: return mock_reply{200, R"({"choices":[{"logprobs":{"content":[{"id":99,"logprob":-1,"top_logprobs":[{"id":99,"logprob":-1}]}]}}]})"};
      case 2: return mock_reply{200, R"({"choices":[{"text":"x","logprobs":null}]})"};
      case 3: return mock_reply{200, R"({"choices":[{"logprobs":{"tokens":["a"],"top_logprobs":[{"a":-0.1}]}}]})"};
      case 4: return mock_reply{200, R"({"choices":[{"logprobs":{"content":[{"id":1,"logprob":0.5,"top_logprobs":[{"id":1,"logprob":0.5}]}]}}]})"};
      case 5: return mock_reply{500, R"({"error":{"message":"out of memory"}})"};
      default: {
        auto a = fake(r);
        a.delay_ms = 40;
        return a;
      }
    }
  });
  itscale::http_options o = fast(s);
  o.max_retries = 0;
  itscale::remote_source src({.http = o, .top_k = 4});
  const std::span<const token_id> P(prompt);
  const auto h = src.prefill(P);
  const std::vector<itscale::remote_source::handle> parents(8, h);
  std::vector<token_id> toks{1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<itscale::remote_source::handle> kids(8);
  const double t = seconds_of([&] { src.extend(parents, toks, kids); });
  CHECK(s.most_busy() >= 4);
  CHECK(t < 8 * 0.040);
  for (auto k : kids) src.release(k);

  const std::pair<int, const char*> bad[] = {{1, "token 99 is outside the vocabulary [0, 64)"},
                                             {2, "the answer has no logprobs"},
                                             {3, "a token is given as text, not as an id"},
                                             {4, "log-prob 0.5"},
                                             {5, "HTTP 500: out of memory"}};
  for (const auto& b : bad) {
    const char* needle = b.second;  // not a structured binding: clang 14 cannot capture those
    const int m = b.first;
    CAPTURE(needle);
    mode = m;
    CHECK(what_of([&] { src.extend(std::span(parents).first(2), std::span<const token_id>(toks).first(2), std::span(kids).first(2)); })
              .find(needle) != std::string::npos);
    CHECK(src.live_handles() == 1);  // only the prompt's
  }
  src.release(h);
  CHECK(src.live_handles() == 0);
  CHECK_THROWS_AS((void)itscale::remote_source({.http = {.base_url = "localhost:8080"}}), itscale::invalid_option);
  CHECK_THROWS_AS((void)itscale::remote_source({.http = o, .top_k = 0}), itscale::invalid_option);
}

namespace {

itscale::remote_proposer_options proposer_opts(const mock_server& s) {
  return {.http = fast(s), .delimiters = {";"}, .delimiter_tokens = {{3}}, .eos_token_id = {2}, .seed = 42, .max_step_tokens = 6,
          .max_sequence_tokens = 40};
}

// The mock's reward model: a score in [0, 1] from the response's ids.
mock_reply score_items(const mock_request& r) {
  const auto j = json::parse(r.body);
  json scores = json::array();
  for (const auto& it : j.at("items")) {
    std::uint64_t h = 7;
    for (token_id t : it.at("response_ids").get<std::vector<token_id>>()) h = itscale::hash_lm::advance(h, t);
    scores.push_back(static_cast<double>(h >> 11) * 0x1.0p-53);
  }
  return {200, json{{"scores", scores}}.dump()};
}

}  // namespace

TEST_CASE("[proposer] steps from the server: delimiter appended, EOS terminal, merged counts, batch-independent seeds") {
  const fake_lm fake;
  mock_server s(std::cref(fake));
  itscale::remote_proposer p(proposer_opts(s));
  using item = itscale::propose_item<itscale::remote_proposer::state>;
  auto root = p.root(prompt);
  auto other = p.root(std::vector<token_id>{1, 8});
  const std::vector<item> alone{{&root, 0, 0, 12}};
  const std::vector<item> both{{&other, 1, 0, 12}, {&root, 0, 0, 12}};
  const auto a = p.propose(alone, 0);
  const auto b = p.propose(both, 0);
  REQUIRE(a[0].size() == b[1].size());
  std::size_t total = 0, delimited = 0, eos = 0;
  for (std::size_t i = 0; i < a[0].size(); ++i) {
    const auto& c = a[0][i];
    CHECK(c.tokens == b[1][i].tokens);
    CHECK(c.count == b[1][i].count);
    total += c.count;
    CHECK(c.state.size() == prompt.size() + c.tokens.size());
    if (c.stop == itscale::stop_reason::stop_sequence) {
      ++delimited;
      CHECK(c.tokens.back() == 3);
      CHECK_FALSE(c.terminal);
    }
    if (c.stop == itscale::stop_reason::eos) {
      ++eos;
      CHECK(c.terminal);
    }
    // The server leaves the delimiter out of its log-probs: a step of the delimiter alone has none.
    const bool only_delimiter = c.stop == itscale::stop_reason::stop_sequence && c.tokens.size() == 1;
    if (only_delimiter) CHECK(c.model_logprob == 0);
    else CHECK(c.model_logprob < 0);
  }
  CHECK(total == 12);
  // llama-server's native API (ids of every token, the delimiter's included): the same steps.
  auto no = proposer_opts(s);
  no.api = itscale::remote_api::llama_server;
  no.delimiter_tokens.clear();
  itscale::remote_proposer native(no);
  const auto n = native.propose(alone, 0);
  REQUIRE(n[0].size() == a[0].size());
  for (std::size_t i = 0; i < a[0].size(); ++i) {
    CHECK(n[0][i].tokens == a[0][i].tokens);
    CHECK(n[0][i].count == a[0][i].count);
    CHECK(n[0][i].stop == a[0][i].stop);
    CHECK(n[0][i].model_logprob == a[0][i].model_logprob);
  }
  std::size_t sampled_tokens = 0;
  for (const auto& c : a[0]) sampled_tokens += c.count * c.tokens.size();
  CHECK(native.stats().extend_rows == sampled_tokens);  // per-sample usage, added up
  CHECK(s.requests().back().path == "/completion");
  CHECK(delimited > 0);
  CHECK(eos > 0);
  CHECK(p.stats().prefill_calls == 3);
  CHECK(p.stats().extend_rows > 0);
  MESSAGE(a[0].size() << " distinct steps of 12 samples; " << delimited << " delimited, " << eos << " EOS");
}

TEST_CASE("[proposer] self-consistency, step beam search and MCTS run end to end through the remote proposer and verifier") {
  const fake_lm fake;
  mock_server s(std::cref(fake));
  mock_server rm(score_items);
  itscale::remote_proposer p(proposer_opts(s));
  itscale::http_verifier v({.http = fast(rm), .name = "mock-prm", .max_batch = 5});
  const std::span<const token_id> P(prompt);

  const auto first = [](std::span<const token_id> t) -> std::optional<token_id> {
    return t.empty() ? std::nullopt : std::optional<token_id>(t.front());
  };
  const auto sc = itscale::self_consistency(p, P, first, {.samples = 16, .max_steps = 8});
  CHECK(sc[0].samples.size() == 16);
  CHECK(sc[0].vote.answer.has_value());
  CHECK(sc.compute.prefill_calls > 0);
  CHECK(sc.compute.source_seconds > 0);

  const auto sb = itscale::step_beam_search(p, v, P, {.num_candidates = 6, .expansions = 2, .num_return_sequences = 2});
  CHECK(!sb.sequences.empty());
  CHECK(sb.compute.verifier_calls > 0);
  CHECK(sb.compute.prefill_calls > 0);

  const auto mc = itscale::mcts_search(p, v, P, {.simulations = 12, .leaves_per_round = 3, .samples_per_expansion = 3});
  CHECK(!mc.sequences.empty());
  CHECK(mc.compute.verifier_calls > 0);
  CHECK(mc.compute.generated_tokens() > 0);
  MESSAGE("self-consistency: " << sc.compute.prefill_calls << " requests; step beam: " << sb.compute.prefill_calls
                               << " requests, " << sb.compute.verifier_calls << " verifier calls; MCTS: "
                               << mc.compute.prefill_calls << " requests");
}

TEST_CASE("[verifier] http_verifier: scores in order across concurrent chunks; wrong answers are errors naming it") {
  std::atomic<int> mode{0};
  mock_server rm([&](const mock_request& r) {
    if (mode == 1) return mock_reply{200, R"({"scores":[0.5]})"};
    if (mode == 2) return mock_reply{200, R"({"rewards":[0.5]})"};
    if (mode == 3) return mock_reply{200, R"({"scores":[2.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]})"};
    return score_items(r);
  });
  itscale::http_verifier v({.http = fast(rm), .name = "prm", .max_batch = 3,
                            .text = [](std::span<const token_id> t) { return std::to_string(t.size()) + " tokens"; }});
  std::vector<std::vector<token_id>> seqs;
  std::vector<itscale::verify_item> batch;
  for (token_id i = 0; i < 7; ++i) seqs.push_back({i, static_cast<token_id>(i + 1)});
  for (const auto& q : seqs) batch.push_back({prompt, q, true});
  itscale::compute_stats st;
  const auto scores = itscale::verify(v, batch, st);
  REQUIRE(scores.size() == 7);
  for (std::size_t i = 0; i < 7; ++i) {
    const auto want = json::parse(score_items({"POST", "/score", "", json{{"items", {{{"response_ids", seqs[i]}}}}}.dump()}).body);
    CHECK(scores[i] == want["scores"][0].get<double>());
  }
  CHECK(rm.requests().size() == 3);  // 3 + 3 + 1
  CHECK(rm.requests()[0].body.find(R"("response":"2 tokens")") != std::string::npos);
  CHECK(st.verifier_calls == 1);
  mode = 1;
  CHECK(what_of([&] { (void)itscale::verify(v, batch, st); }).find("returned 1 scores for a batch of 3") != std::string::npos);
  mode = 2;
  CHECK(what_of([&] { (void)itscale::verify(v, batch, st); }).find("verifier 'prm'") != std::string::npos);
  mode = 3;
  itscale::http_verifier whole({.http = fast(rm), .name = "prm"});  // one request of 7
  CHECK(what_of([&] { (void)itscale::verify(whole, batch, st); }).find("outside its declared range [0, 1]") != std::string::npos);
}
