#pragma once
/// \file generate.hpp
/// Greedy decoding and sampling over any `LogitSource`: all prompts and all their samples advance
/// together with one batched `extend` per step; each sample's first step forks the prompt's
/// handle. A sequence stops on any EOS id, on a stop sequence, or at `max_new_tokens`, and its
/// handle is released at once.
///
/// Per step and sequence: the source's row is checked (NaN or +inf is a `backend_error`), the
/// built-in logits processors run, then the caller's processor (if any), then the warpers (when
/// sampling); greedy takes the argmax (lowest id on ties), sampling inverts the CDF with one
/// uniform from the sequence's counter-based stream.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/rng.hpp"
#include "itscale/decode/generation.hpp"
#include "itscale/core/detail/handle_guard.hpp"
#include "itscale/core/detail/source_rows.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/sample.hpp"
#include "itscale/kernels/sparse.hpp"
#include "itscale/processors/chain.hpp"
#include "itscale/processors/sampling_chain.hpp"
#include "itscale/core/detail/validate_tokens.hpp"

namespace itscale {
inline namespace v0 {


/// Decodes every request with `opts`, applying `user` (a processor of either form) between the
/// built-in logits processors and the warpers. Returns the sequences ordered by request, then
/// sample. Throws `invalid_option` / `invalid_input` for bad options or prompts (before touching
/// the source), `backend_error` for unusable logits, `search_error` when every token of a row is
/// masked; exceptions of the source, the processor or `on_token` propagate. Every handle created
/// is released on every path.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] std::vector<generation> generate(S& source, std::span<const decode_request> requests,
                                               const sampling_options& opts, const P& user,
                                               const token_callback& on_token = {}) {
  const std::size_t vocab = source.vocab_size();
  opts.validate(vocab);
  if (requests.empty()) throw invalid_input("itscale: generate needs at least one request");
  for (std::size_t r = 0; r < requests.size(); ++r) {
    if (requests[r].prompt.empty())
      throw invalid_input("itscale: request " + std::to_string(r) + " has an empty prompt");
    detail::check_tokens(requests[r].prompt, vocab, "prompt");
  }
  const sampling_chain chain(opts);
  workspace ws;
  ws.reserve(vocab);

  using handle = handle_t<S>;
  using ustate = typename detail::state_of<P>::type;
  struct sequence {
    std::size_t request, sample;
    std::vector<token_id> tokens;  // prompt + generated
    std::size_t prompt_length;
    handle h;
    ustate state;
    counter_rng rng;
    generation out;
  };
  const std::size_t per = opts.num_return_sequences;
  std::vector<sequence> seqs;
  seqs.reserve(requests.size() * per);
  detail::handle_guard<S> guard(source);

  // Step 0: prefill each prompt once; its samples fork from the same handle.
  std::vector<float> rows(requests.size() * per * vocab);
  for (std::size_t r = 0; r < requests.size(); ++r) {
    const auto prompt = requests[r].prompt;
    guard.reserve(1);
    const handle h = source.prefill(prompt);
    guard.adopt(h);
    const logits_view v = source.logits();
    detail::check_source_rows(v, 1, vocab, 0);
    ustate st{};
    if constexpr (StatefulLogitsProcessor<P>) st = user.start(prompt);
    for (std::size_t j = 0; j < per; ++j) {
      std::copy(v.data, v.data + vocab, rows.begin() + static_cast<std::ptrdiff_t>(seqs.size() * vocab));
      generation g;
      g.request = r;
      g.sample = j;
      seqs.push_back(sequence{r, j, std::vector<token_id>(prompt.begin(), prompt.end()), prompt.size(), h, st,
                              counter_rng(opts.seed, requests[r].sequence_id + j), std::move(g)});
    }
  }

  std::vector<std::size_t> active(seqs.size());
  for (std::size_t i = 0; i < active.size(); ++i) active[i] = i;
  std::vector<float> raw(vocab);
  std::vector<handle> parents, children;
  std::vector<token_id> next;
  std::vector<std::size_t> still;
  logits_view view{rows.data(), seqs.size(), vocab};

  for (std::size_t step = 0; !active.empty(); ++step) {
    parents.clear();
    next.clear();
    still.clear();
    for (std::size_t a = 0; a < active.size(); ++a) {
      sequence& s = seqs[active[a]];
      const auto row = view.row(a);
      std::copy(row.begin(), row.end(), raw.begin());
      const step_context ctx{s.tokens, s.prompt_length, &ws};
      chain.apply_processors(row, ctx);
      if constexpr (StatefulLogitsProcessor<P>)
        user.apply(row, ctx, s.state);
      else
        user.apply(row, ctx);
      // After a top-k the warpers list the few tokens left: draw and normalise over those only.
      const live_set live = chain.apply_warpers(row, ctx);
      const double u = opts.do_sample ? s.rng.uniform(static_cast<std::uint32_t>(step)) : 0.0;
      const std::size_t pick = !opts.do_sample ? kernels::argmax(row)
                               : live.known    ? kernels::sample_inverse_cdf(row, live.ids, u)
                                               : kernels::sample_inverse_cdf(row, u);
      if (pick == kernels::npos || row[pick] == masked_logit)
        throw search_error("itscale: every token is masked at step " + std::to_string(step) + " of request " +
                           std::to_string(s.request) + ", sample " + std::to_string(s.sample));
      const auto t = static_cast<token_id>(pick);
      const float lp = row[pick] - (live.known ? kernels::logsumexp(row, live.ids) : kernels::logsumexp(row));
      s.tokens.push_back(t);
      s.out.tokens.push_back(t);
      s.out.logprobs.push_back(lp);
      s.out.model_logprobs.push_back(raw[pick] - kernels::logsumexp(raw));
      s.out.logprob_sum += lp;
      if constexpr (StatefulLogitsProcessor<P>) user.advance(s.state, t);
      if (on_token) on_token(token_event{s.request, s.sample, step, t, lp});

      const auto gen = std::span<const token_id>(s.out.tokens);
      bool done = true;
      if (std::find(opts.eos_token_id.begin(), opts.eos_token_id.end(), t) != opts.eos_token_id.end())
        s.out.stop = stop_reason::eos;
      else if (std::any_of(opts.stop_sequences.begin(), opts.stop_sequences.end(),
                           [&](const auto& stop) { return detail::ends_with(gen, stop); }))
        s.out.stop = stop_reason::stop_sequence;
      else if (gen.size() >= opts.max_new_tokens)
        s.out.stop = stop_reason::max_new_tokens;
      else
        done = false;
      if (!done) {
        parents.push_back(s.h);
        next.push_back(t);
        still.push_back(active[a]);
      }
    }

    // The handles of this step are no longer needed once the survivors' children exist.
    std::vector<handle> old;
    old.reserve(active.size());
    for (std::size_t i : active)
      if (std::find(old.begin(), old.end(), seqs[i].h) == old.end()) old.push_back(seqs[i].h);
    if (!still.empty()) {
      children.assign(still.size(), handle{});
      guard.reserve(children.size());
      source.extend(parents, next, children);
      for (handle c : children) guard.adopt(c);
      view = source.logits();
      detail::check_source_rows(view, still.size(), vocab, step + 1);
      for (std::size_t k = 0; k < still.size(); ++k) seqs[still[k]].h = children[k];
    }
    for (handle h : old) guard.release(h);
    active.swap(still);
  }

  std::vector<generation> out;
  out.reserve(seqs.size());
  for (auto& s : seqs) out.push_back(std::move(s.out));
  return out;
}

/// `generate` with the built-in processors only.
template <LogitSource S>
[[nodiscard]] std::vector<generation> generate(S& source, std::span<const decode_request> requests,
                                               const sampling_options& opts, const token_callback& on_token = {}) {
  return generate(source, requests, opts, logits_processor_archetype{}, on_token);
}

/// One prompt (sequence_id 0).
template <LogitSource S>
[[nodiscard]] std::vector<generation> generate(S& source, std::span<const token_id> prompt,
                                               const sampling_options& opts, const token_callback& on_token = {}) {
  const decode_request req{prompt, 0};
  return generate(source, std::span<const decode_request>(&req, 1), opts, on_token);
}

/// Several prompts; prompt i gets sequence_id i * num_return_sequences, so its samples are those
/// of decoding it alone with that sequence_id.
template <LogitSource S>
[[nodiscard]] std::vector<generation> generate(S& source, const std::vector<std::vector<token_id>>& prompts,
                                               const sampling_options& opts, const token_callback& on_token = {}) {
  std::vector<decode_request> reqs;
  reqs.reserve(prompts.size());
  for (std::size_t i = 0; i < prompts.size(); ++i) reqs.push_back({prompts[i], i * opts.num_return_sequences});
  return generate(source, std::span<const decode_request>(reqs), opts, on_token);
}

}  // namespace v0
}  // namespace itscale
