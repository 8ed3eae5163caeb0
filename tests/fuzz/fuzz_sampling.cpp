// itscale_fuzz_sampling: the runtime sampling chain as `generate` runs it
// (processors/sampling_chain.hpp built from sampling_options.hpp) on arbitrary rows and arbitrary
// options, through the public entry point over a function source. Invalid options must be an
// `invalid_option`, bad ids an `invalid_input`, a source row with NaN or +inf a `backend_error`, a
// row the processors mask entirely or leave with NaN / +inf a `search_error`; everything else must
// return valid tokens with log-probs <= 0 (never NaN). Any other exception, crash or sanitizer
// report is a finding. Built with runtime dispatch (ITSCALE_ARCH picks the kernels' arch).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <span>
#include <vector>

#include "fuzz_support.hpp"
#include "itscale/backends/function_source.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/decode/generate.hpp"
#include "itscale/kernels/reduce.hpp"

using fuzz::check;
using itscale::token_id;

namespace {


// An option value: usually in range, sometimes on or past its edge, sometimes NaN or +-inf.
float option_float(FuzzedDataProvider& in, float lo, float hi) {
  switch (in.ConsumeIntegralInRange<int>(0, 4)) {
    case 0: return lo;
    case 1: return hi;
    case 2: return fuzz::any_float(in);
    default: return lo + (hi - lo) * static_cast<float>(in.ConsumeIntegralInRange<int>(0, 1000)) / 1000.0f;
  }
}

token_id any_token(FuzzedDataProvider& in, std::size_t vocab) {
  // Mostly inside the vocabulary; sometimes just outside or negative.
  return static_cast<token_id>(in.ConsumeIntegralInRange<int>(-1, static_cast<int>(vocab)));
}

// A caller's processor: at one step it may overwrite entries with anything (NaN, +inf, -inf...).
struct wild_processor {
  std::vector<std::pair<std::size_t, float>> writes;
  std::size_t at_step;
  void apply(std::span<float> row, const itscale::step_context& ctx) const {
    if (ctx.generated() != at_step) return;
    for (const auto& [i, v] : writes) row[i % row.size()] = v;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const std::size_t vocab = in.ConsumeIntegralInRange<std::size_t>(1, 300);
  const std::vector<float> base = fuzz::any_row(in, vocab);

  itscale::sampling_options o;
  o.stop.max_new_tokens = in.ConsumeIntegralInRange<std::size_t>(0, 4);
  o.stop.min_new_tokens = in.ConsumeIntegralInRange<std::size_t>(0, 3);
  for (std::size_t j = in.ConsumeIntegralInRange<std::size_t>(0, 2); j > 0; --j) o.stop.eos_token_id.push_back(any_token(in, vocab));
  if (in.ConsumeIntegralInRange<int>(0, 7) == 0) o.stop.stop_sequences.push_back({any_token(in, vocab), any_token(in, vocab)});
  o.do_sample = in.ConsumeBool();
  o.seed = in.ConsumeIntegral<std::uint64_t>();
  o.num_return_sequences = in.ConsumeIntegralInRange<std::size_t>(0, 3);
  o.output_logprobs = in.ConsumeBool();
  o.output_model_logprobs = in.ConsumeBool();
  for (std::size_t j = in.ConsumeIntegralInRange<std::size_t>(0, 3); j > 0; --j)
    o.logit_bias.emplace_back(any_token(in, vocab), fuzz::any_float(in));
  if (in.ConsumeBool()) o.repetition_penalty = option_float(in, 0.0f, 3.0f);
  if (in.ConsumeBool()) o.presence_penalty = option_float(in, -2.0f, 2.0f);
  if (in.ConsumeBool()) o.frequency_penalty = option_float(in, -2.0f, 2.0f);
  o.no_repeat_ngram_size = in.ConsumeIntegralInRange<std::size_t>(0, 3);
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) {
    std::vector<token_id> w;
    for (std::size_t j = in.ConsumeIntegralInRange<std::size_t>(0, 3); j > 0; --j) w.push_back(any_token(in, vocab));
    o.bad_words_ids.push_back(w);
  }
  if (in.ConsumeIntegralInRange<int>(0, 5) == 0) {
    const std::uint32_t keep_mask = in.ConsumeIntegral<std::uint32_t>();
    o.allowed_tokens = [keep_mask](std::span<const token_id>, std::size_t, std::span<std::uint32_t> allowed) {
      if (!allowed.empty()) allowed[0] &= keep_mask;
    };
  }
  if (in.ConsumeBool()) o.temperature = option_float(in, 0.0f, 4.0f);
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) o.top_h = option_float(in, 0.0f, 1.0f);
  if (in.ConsumeBool()) o.top_k = in.ConsumeIntegralInRange<std::size_t>(0, vocab + 1);
  if (in.ConsumeBool()) o.top_p = static_cast<double>(option_float(in, 0.0f, 1.0f));
  if (in.ConsumeBool()) o.min_p = option_float(in, 0.0f, 1.0f);
  if (in.ConsumeIntegralInRange<int>(0, 2) == 0) o.typical_p = option_float(in, 0.0f, 1.0f);
  if (in.ConsumeIntegralInRange<int>(0, 2) == 0) o.epsilon_cutoff = option_float(in, 0.0f, 1.0f);
  if (in.ConsumeIntegralInRange<int>(0, 2) == 0) o.eta_cutoff = option_float(in, 0.0f, 1.0f);
  o.min_tokens_to_keep = in.ConsumeIntegralInRange<std::size_t>(0, 3);

  wild_processor user{{}, in.ConsumeIntegralInRange<std::size_t>(0, 4)};
  for (std::size_t j = in.ConsumeIntegralInRange<std::size_t>(0, 3); j > 0; --j)
    user.writes.emplace_back(in.ConsumeIntegral<std::uint16_t>(), fuzz::any_float(in));

  std::vector<token_id> prompt;
  for (std::size_t j = in.ConsumeIntegralInRange<std::size_t>(0, 3); j > 0; --j) prompt.push_back(any_token(in, vocab));
  // The source: the base row, rotated by the prefix length so that steps differ.
  bool source_row_invalid = false;
  auto src = itscale::from_function(vocab, [&](std::span<const token_id> prefix, std::span<float> row) {
    for (std::size_t i = 0; i < row.size(); ++i) row[i] = base[(i + prefix.size()) % base.size()];
    if (itscale::kernels::find_invalid(row) != itscale::kernels::npos) source_row_invalid = true;
  });

  const std::vector<itscale::request> reqs{{.prompt = prompt}};
  try {
    const auto r = itscale::generate(src, reqs, o, user, {});
    check(!source_row_invalid, "a source row with NaN or +inf was accepted (must be a backend_error)");
    check(r.sequences.size() == o.num_return_sequences, "one generation per sample");
    for (const auto& g : r.sequences) {
      check(!g.tokens.empty() && g.tokens.size() <= o.stop.max_new_tokens, "between 1 and max_new_tokens tokens");
      for (token_id t : g.tokens) check(t >= 0 && static_cast<std::size_t>(t) < vocab, "generated token inside the vocabulary");
      for (float lp : g.logprobs) check(!std::isnan(lp) && lp <= 1e-4f, "processed log-prob is no NaN and <= 0");
      if (std::getenv("ITSCALE_FUZZ_DEBUG") != nullptr) {
        std::fprintf(stderr, "vocab %zu sample %d tokens:", vocab, o.do_sample ? 1 : 0);
        for (std::size_t j = 0; j < g.tokens.size(); ++j)
          std::fprintf(stderr, " %d (lp %g, model %g)", g.tokens[j], j < g.logprobs.size() ? static_cast<double>(g.logprobs[j]) : 0.0,
                       j < g.model_logprobs.size() ? static_cast<double>(g.model_logprobs[j]) : 0.0);
        std::fprintf(stderr, "\nsource row:");
        for (float x : base) std::fprintf(stderr, " %g", static_cast<double>(x));
        std::fprintf(stderr, "\n");
      }
      for (float lp : g.model_logprobs) check(!std::isnan(lp) && lp <= 1e-4f, "model log-prob is no NaN and <= 0");
    }
    check(src.live_handles() == 0, "no handle left live");
  } catch (const itscale::invalid_option&) {
  } catch (const itscale::invalid_input&) {
  } catch (const itscale::backend_error&) {
    check(source_row_invalid, "backend_error without a bad source row");
  } catch (const itscale::search_error&) {
  }
  check(src.live_handles() == 0, "no handle left live after an exception");
  return 0;
}
