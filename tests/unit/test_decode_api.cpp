// The shared API of the decoders: sampling streams, compute accounting, budgets and cancellation,
// live starts and handed-back live sequences.

#include <doctest/doctest.h>

#include <cstdint>
#include <set>
#include <span>
#include <stop_token>
#include <vector>

#include <itscale/search.hpp>

#include "instrumented_source.hpp"

namespace {
using itscale::token_id;
using tokens = std::vector<token_id>;

itscale::sampling_options sampler(std::size_t n, std::size_t max_new = 8) {
  return {.stop = {.max_new_tokens = max_new}, .do_sample = true, .seed = 77, .num_return_sequences = n,
          .temperature = 2.0f};
}
}  // namespace

TEST_CASE("streams: no two samples of one call share randomness; repeated streams are rejected") {
  itscale::hash_lm lm(5000, 4);  // a wide, flat vocabulary: equal draws would give equal sequences
  const tokens prompt{3, 4};
  // Two requests with the same prompt, streams 0 and 1, four samples each: eight different
  // sequences. (Deriving sample j's stream as request id + j made request 1's samples 0..2 equal
  // request 0's samples 1..3.)
  const itscale::request reqs[] = {{prompt, 0}, {prompt, 1}};
  const auto out = itscale::generate(lm, std::span<const itscale::request>(reqs), sampler(4));
  REQUIRE(out.size() == 8);
  std::set<tokens> distinct;
  for (const auto& g : out) distinct.insert(g.tokens);
  CHECK(distinct.size() == 8);
  // Two requests left at the default stream would draw the same randomness: an error.
  const itscale::request same[] = {{prompt}, {prompt}};
  CHECK_THROWS_AS((void)itscale::generate(lm, std::span<const itscale::request>(same), sampler(2)), itscale::invalid_input);
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("streams: more samples later continue the same sequence of streams (first_sample)") {
  itscale::hash_lm lm(300, 9);
  const tokens prompt{7};
  const itscale::request all{prompt, 5};
  const auto four = itscale::generate(lm, std::span<const itscale::request>(&all, 1), sampler(4));
  const itscale::request first{prompt, 5, 0}, later{prompt, 5, 2};
  const auto a = itscale::generate(lm, std::span<const itscale::request>(&first, 1), sampler(2));
  const auto b = itscale::generate(lm, std::span<const itscale::request>(&later, 1), sampler(2));
  CHECK(a[0].tokens == four[0].tokens);
  CHECK(a[1].tokens == four[1].tokens);
  CHECK(b[0].tokens == four[2].tokens);
  CHECK(b[1].tokens == four[3].tokens);
  CHECK(b[1].sample == 3);
}

TEST_CASE("compute stats come from the metering wrapper and match what the source saw") {
  test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(40, 2));
  const std::vector<tokens> prompts{{1, 2, 3}, {4}};
  const auto out = itscale::generate(src, prompts, sampler(3, 6));
  const auto& c = out.compute;
  CHECK(c.prefill_calls == src.prefills);
  CHECK(c.prefill_tokens == 4);
  CHECK(c.prefill_tokens == src.prefill_tokens);
  CHECK(c.extend_calls == src.extends);
  CHECK(c.extend_rows == src.extend_rows);
  CHECK(c.generated_tokens() == src.extend_rows);
  CHECK(c.source_calls() == src.prefills + src.extends);
  CHECK(c.peak_live_handles == static_cast<std::uint64_t>(src.peak_live));
  CHECK(c.source_seconds <= c.wall_seconds);
  CHECK(c.wall_seconds > 0);
  CHECK(out.status == itscale::run_status::completed);
  // Without EOS every sample runs to max_new_tokens; its last token is chosen but never fed.
  CHECK(c.extend_rows == 6u * (6 - 1));
}

TEST_CASE("a budget ends the run cleanly with budget_exhausted; cancellation with cancelled") {
  test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(40, 2));
  const tokens prompt{1, 2};
  itscale::run_options run{.budget = {.max_generated_tokens = 10}};
  const auto out = itscale::generate(src, std::span<const token_id>(prompt), sampler(4, 50), run);
  CHECK(out.status == itscale::run_status::budget_exhausted);
  CHECK(out.compute.generated_tokens() >= 10);
  CHECK(out.compute.generated_tokens() < 10 + 4);  // at most one step past the limit
  for (const auto& g : out) {
    CHECK(g.stop == itscale::stop_reason::budget);
    CHECK(g.tokens.size() < 50);
  }
  CHECK(src.live == 0);

  std::stop_source stop;
  itscale::run_options cancel{.budget = {.stop = stop.get_token()}, .on_token = [&](const itscale::token_event& e) {
                                if (e.step == 3) stop.request_stop();
                              }};
  const auto c = itscale::generate(src, std::span<const token_id>(prompt), sampler(2, 50), cancel);
  CHECK(c.status == itscale::run_status::cancelled);
  for (const auto& g : c) {
    CHECK(g.stop == itscale::stop_reason::cancelled);
    CHECK(g.tokens.size() == 4);
  }
  CHECK(src.live == 0);
  CHECK_THROWS_AS((void)itscale::generate(src, std::span<const token_id>(prompt), sampler(1),
                                          {.budget = {.max_seconds = -1}}),
                  itscale::invalid_option);
}

TEST_CASE("two searches share one prefilled prompt: no second prefill, same results as from the prompt") {
  itscale::hash_lm lm(60, 5);
  const tokens prompt{9, 8, 7};
  auto p = itscale::prefill(lm, prompt);
  CHECK(lm.live_handles() == 1);
  const auto sampled = itscale::generate(lm, p, sampler(3));
  const auto greedy = itscale::generate(lm, p, {.stop = {.max_new_tokens = 8}});
  CHECK(sampled.compute.prefill_calls == 0);
  CHECK(greedy.compute.prefill_calls == 0);
  CHECK(lm.live_handles() == 1);  // the caller's handle stays alive
  const auto sampled_ref = itscale::generate(lm, std::span<const token_id>(prompt), sampler(3));
  const auto greedy_ref = itscale::generate(lm, std::span<const token_id>(prompt), {.stop = {.max_new_tokens = 8}});
  for (std::size_t j = 0; j < 3; ++j) CHECK(sampled[j].tokens == sampled_ref[j].tokens);
  CHECK(greedy[0].tokens == greedy_ref[0].tokens);
  CHECK(greedy[0].logprobs == greedy_ref[0].logprobs);
  p.handle.reset();
  CHECK(lm.live_handles() == 0);
  // A prefilled of another source, or an empty one, is rejected.
  itscale::hash_lm other(60, 5);
  auto q = itscale::prefill(other, prompt);
  CHECK_THROWS_AS((void)itscale::generate(lm, q, sampler(1)), itscale::invalid_input);
  itscale::prefilled<itscale::hash_lm> empty;
  CHECK_THROWS_AS((void)itscale::generate(lm, empty, sampler(1)), itscale::invalid_input);
}

TEST_CASE("keep_handles hands back each sequence's full state; continuing from it equals one long run") {
  itscale::hash_lm lm(50, 12);
  const tokens prompt{4, 4};
  itscale::sampling_options first{.stop = {.max_new_tokens = 5}};
  auto head = itscale::generate(lm, std::span<const token_id>(prompt), first, {.keep_handles = true});
  REQUIRE(head.live.size() == 1);
  const auto& live = head.live[0];
  REQUIRE(live.handle);
  tokens expect = prompt;
  expect.insert(expect.end(), head[0].tokens.begin(), head[0].tokens.end());
  CHECK(live.tokens == expect);
  // The handed-back row is the next-token row of the whole sequence.
  std::vector<float> ref(50);
  lm.fill(lm.state_of(expect), ref);
  CHECK(live.logits == ref);
  const auto tail = itscale::generate(lm, live, first);
  const auto whole = itscale::generate(lm, std::span<const token_id>(prompt), {.stop = {.max_new_tokens = 10}});
  tokens joined = head[0].tokens;
  joined.insert(joined.end(), tail[0].tokens.begin(), tail[0].tokens.end());
  CHECK(joined == whole[0].tokens);
  CHECK(head.compute.extend_rows == 5);  // four continuing rows + the one that makes the state whole
  head.live.clear();
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("log-prob outputs cost only what is asked: off, greedy is an argmax") {
  itscale::hash_lm lm(80, 3);
  const tokens prompt{1};
  const auto none = itscale::generate(lm, std::span<const token_id>(prompt),
                                      {.stop = {.max_new_tokens = 6}, .output_logprobs = false});
  CHECK(none[0].logprobs.empty());
  CHECK(none[0].model_logprobs.empty());
  CHECK(none[0].logprob_sum == 0);
  const auto both = itscale::generate(lm, std::span<const token_id>(prompt),
                                      {.stop = {.max_new_tokens = 6}, .output_model_logprobs = true});
  CHECK(both[0].tokens == none[0].tokens);
  CHECK(both[0].model_logprobs == both[0].logprobs);  // no processor: the same distribution
}
