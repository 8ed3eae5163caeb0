#pragma once
// Bit-for-bit comparison of two searches' results (hypotheses and traces), for tests that run the
// same search two ways (fused vs written log-probs) and expect no difference at all.
#include <doctest/doctest.h>

#include <cstddef>

namespace itscale_test {

/// Checks that two results of beam_search / diverse_beam_search are identical: every prompt's
/// hypotheses (tokens, log-probs, sum and score) and every traced candidate.
template <class Results>
void check_same_search(const Results& a, const Results& b) {
  REQUIRE(a.prompts.size() == b.prompts.size());
  for (std::size_t p = 0; p < a.prompts.size(); ++p) {
    const auto ha = a.hypotheses(p), hb = b.hypotheses(p);
    REQUIRE(ha.size() == hb.size());
    for (std::size_t j = 0; j < ha.size(); ++j) {
      CHECK(ha[j].tokens == hb[j].tokens);
      CHECK(ha[j].logprobs == hb[j].logprobs);
      CHECK(ha[j].logprob_sum == hb[j].logprob_sum);
      CHECK(ha[j].score == hb[j].score);
    }
    CHECK(a.prompts[p].steps == b.prompts[p].steps);
    REQUIRE(a.prompts[p].trace.size() == b.prompts[p].trace.size());
    for (std::size_t st = 0; st < a.prompts[p].trace.size(); ++st) {
      CHECK(a.prompts[p].trace[st].group == b.prompts[p].trace[st].group);
      const auto& ca = a.prompts[p].trace[st].candidates;
      const auto& cb = b.prompts[p].trace[st].candidates;
      REQUIRE(ca.size() == cb.size());
      for (std::size_t c = 0; c < ca.size(); ++c) {
        CHECK(ca[c].token == cb[c].token);
        CHECK(ca[c].logprob == cb[c].logprob);
        CHECK(ca[c].score == cb[c].score);
      }
    }
  }
}

}  // namespace itscale_test
