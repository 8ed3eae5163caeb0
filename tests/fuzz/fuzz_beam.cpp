// itscale_fuzz_beam: beam search's selection over arbitrary K x V blocks (search/beam_select.hpp
// over kernels/beam_select.hpp), against a brute-force ranking of every candidate, and
// beam_options validation with arbitrary values: validate() either throws invalid_option or
// accepts options under which the search's arithmetic stays finite (a bounded hypothesis count,
// a finite length normaliser); accepted small options then run a real beam search on the hash LM
// with rows the fuzz input shapes. Built with runtime dispatch (ITSCALE_ARCH picks the arch).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "fuzz_support.hpp"
#include "itscale/backends/function_source.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/search/beam_options.hpp"
#include "itscale/search/beam_search.hpp"
#include "itscale/search/beam_select.hpp"

using fuzz::check;
using itscale::token_id;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

// Every candidate scored as the library scores it, ranked by candidate_ranks_above, best m kept.
std::vector<itscale::beam_candidate> brute_force(std::span<const std::span<const float>> rows, std::span<const float> sub,
                                                 std::span<const float> base, std::size_t m) {
  std::vector<itscale::beam_candidate> all;
  for (std::size_t b = 0; b < rows.size(); ++b)
    for (std::size_t t = 0; t < rows[b].size(); ++t) {
      const float v = base[b] + (rows[b][t] - sub[b]);
      if (v > -inf) all.push_back({v, static_cast<std::uint32_t>(b), static_cast<token_id>(t)});
    }
  std::stable_sort(all.begin(), all.end(), itscale::candidate_ranks_above);
  if (all.size() > m) all.resize(m);
  return all;
}

void check_selection(FuzzedDataProvider& in) {
  const std::size_t beams = in.ConsumeIntegralInRange<std::size_t>(1, 8);
  const std::size_t vocab = in.ConsumeIntegralInRange<std::size_t>(1, 160);
  std::vector<std::vector<float>> data;
  for (std::size_t b = 0; b < beams; ++b) data.push_back(fuzz::any_row(in, vocab));
  std::vector<std::span<const float>> rows(data.begin(), data.end());
  std::vector<float> sub(beams), base(beams);
  const bool zero_sub = in.ConsumeBool();
  for (std::size_t b = 0; b < beams; ++b) {
    // Finite shifts (the documented precondition).
    sub[b] = zero_sub ? 0.0f : fuzz::any_float(in);
    base[b] = fuzz::any_float(in);
    if (!std::isfinite(sub[b])) sub[b] = 0.5f;
    if (!std::isfinite(base[b])) base[b] = -1.0f;
  }
  // Usually 2K; sometimes anything, the heap path (m > 1024) on small blocks included.
  const std::size_t m = in.ConsumeBool() ? 2 * beams
                                         : in.ConsumeIntegralInRange<std::size_t>(0, beams * vocab <= 256 ? 1100 : 64);
  std::vector<itscale::beam_candidate> out;
  if (zero_sub)
    itscale::select_beam_candidates(rows, base, m, out);
  else
    itscale::select_beam_candidates(rows, sub, base, m, out);
  const auto want = brute_force(rows, sub, base, m);
  check(out.size() == want.size(), "select_beam_candidates count == brute force");
  for (std::size_t j = 0; j < out.size(); ++j) {
    check(out[j].score == want[j].score && out[j].beam == want[j].beam && out[j].token == want[j].token,
          "select_beam_candidates == brute force");
    check(out[j].beam < beams && static_cast<std::size_t>(out[j].token) < vocab, "candidate inside the block");
    check(!std::isnan(out[j].score) && out[j].score > -inf, "no NaN or -inf candidate");
  }
  // Diverse beam search's penalised selection: penalties on a few tokens, the rest unchanged.
  std::vector<itscale::detail::token_penalty> pen;
  for (std::size_t j = in.ConsumeIntegralInRange<std::size_t>(0, 3); j > 0; --j)
    pen.push_back({static_cast<token_id>(in.ConsumeIntegralInRange<std::size_t>(0, vocab - 1)),
                   static_cast<float>(in.ConsumeIntegralInRange<int>(0, 40)) * 0.25f, 1});
  std::vector<itscale::beam_candidate> tmp;
  itscale::detail::select_penalised_candidates(rows, sub, base, m, pen, out, tmp);
  check(out.size() <= m, "penalised selection holds at most m");
  for (std::size_t j = 0; j < out.size(); ++j) {
    check(out[j].beam < beams && static_cast<std::size_t>(out[j].token) < vocab, "penalised candidate inside the block");
    check(!std::isnan(out[j].score) && out[j].score > -inf, "no NaN or -inf penalised candidate");
    if (j > 0) check(!itscale::candidate_ranks_above(out[j], out[j - 1]), "penalised selection sorted best first");
  }
}

void check_options(FuzzedDataProvider& in) {
  itscale::beam_options o;
  o.num_beams = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::size_t>(0, 6) : in.ConsumeIntegral<std::size_t>();
  const double lp[] = {1.0, 0.0, -1.0, 2.5, 26.0, 27.0, 1e6, -1e6, 1e300, std::nan(""), HUGE_VAL, -HUGE_VAL};
  o.length_penalty = in.ConsumeBool() ? lp[in.ConsumeIntegralInRange<std::size_t>(0, std::size(lp) - 1)]
                                      : static_cast<double>(fuzz::any_float(in));
  o.early_stopping = static_cast<itscale::early_stopping_mode>(in.ConsumeIntegralInRange<int>(0, 3));
  o.num_return_sequences = in.ConsumeIntegralInRange<std::size_t>(0, 7);
  o.stop.max_new_tokens = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::size_t>(0, 5) : in.ConsumeIntegral<std::size_t>();
  o.stop.min_new_tokens = in.ConsumeIntegralInRange<std::size_t>(0, 3);
  for (std::size_t j = in.ConsumeIntegralInRange<std::size_t>(0, 2); j > 0; --j)
    o.stop.eos_token_id.push_back(in.ConsumeIntegralInRange<token_id>(-1, 12));
  o.no_repeat_ngram_size = in.ConsumeIntegralInRange<std::size_t>(0, 3);
  o.repetition_penalty = in.ConsumeBool() ? 1.0f : fuzz::any_float(in);
  const double pat[] = {1.0, 0.5, 2.0, 1e-300, 524288.0, 1e300, std::nan(""), HUGE_VAL, -1.0, 0.0};
  o.patience = in.ConsumeBool() ? pat[in.ConsumeIntegralInRange<std::size_t>(0, std::size(pat) - 1)]
                                : static_cast<double>(fuzz::any_float(in));
  const std::size_t vocab = in.ConsumeIntegralInRange<std::size_t>(1, 12);
  try {
    o.validate(vocab);
  } catch (const itscale::invalid_option&) {
    return;
  }
  // Accepted: the hypothesis count is bounded and the length normaliser finite and non-zero.
  check(o.finished_capacity() >= 1 && o.finished_capacity() <= itscale::max_finished_hypotheses,
        "accepted options keep round(num_beams * patience) within the cap");
  for (std::size_t len : {std::size_t{1}, o.stop.max_new_tokens}) {
    const float norm = itscale::detail::length_normaliser(len, o.length_penalty);
    check(std::isfinite(norm) && norm > 0.0f, "accepted options keep L^length_penalty finite and > 0");
  }
  // Run small accepted searches for real, over rows the input shapes (finite, some masked).
  if (o.num_beams > 6 || o.stop.max_new_tokens > 5) return;
  std::vector<float> shape = fuzz::any_row(in, vocab);
  for (float& x : shape)
    if (!std::isfinite(x) || std::fabs(x) > 1e30f) x = -inf;
  auto src = itscale::from_function(vocab, [&](std::span<const token_id> prefix, std::span<float> row) {
    for (std::size_t i = 0; i < row.size(); ++i) row[i] = shape[(i + prefix.size()) % shape.size()];
  });
  const std::vector<token_id> prompt{0};
  try {
    const auto r = itscale::beam_search(src, std::span<const token_id>(prompt), o);
    check(r.sequences.size() <= o.num_return_sequences, "at most num_return_sequences hypotheses");
    for (const auto& g : r.sequences) {
      check(!std::isnan(g.score), "hypothesis score is no NaN");
      for (token_id t : g.tokens) check(t >= 0 && static_cast<std::size_t>(t) < vocab, "hypothesis token inside the vocabulary");
    }
  } catch (const itscale::search_error&) {
    // Every candidate masked (the rows may be all -inf).
  }
  check(src.live_handles() == 0, "no handle left live");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  if (in.ConsumeBool())
    check_selection(in);
  else
    check_options(in);
  return 0;
}
