#pragma once
// Bit-for-bit comparison of two searches' results (hypotheses and traces), for tests that run the
// same search two ways (fused vs written log-probs) and expect no difference at all.
#include <doctest/doctest.h>

#include <cstddef>

namespace itscale_test {

/// Checks that two results of beam_search / diverse_beam_search (one per prompt) are identical:
/// every hypothesis's tokens, log-probs and score, and every traced candidate.
template <class Results>
void check_same_search(const Results& a, const Results& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t p = 0; p < a.size(); ++p) {
    REQUIRE(a[p].hypotheses.size() == b[p].hypotheses.size());
    for (std::size_t j = 0; j < a[p].hypotheses.size(); ++j) {
      CHECK(a[p].hypotheses[j].tokens == b[p].hypotheses[j].tokens);
      CHECK(a[p].hypotheses[j].logprobs == b[p].hypotheses[j].logprobs);
      CHECK(a[p].hypotheses[j].score == b[p].hypotheses[j].score);
    }
    REQUIRE(a[p].trace.size() == b[p].trace.size());
    for (std::size_t st = 0; st < a[p].trace.size(); ++st) {
      const auto& ca = a[p].trace[st].candidates;
      const auto& cb = b[p].trace[st].candidates;
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
