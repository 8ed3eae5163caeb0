#pragma once
/// \file generate.hpp
/// Greedy decoding and sampling over any `LogitSource`: all starts and all their samples advance
/// together with one batched `extend` per step; each sample's first step forks its start's handle.
/// A start is a prompt (prefilled here, released at the end) or a caller's `prefilled` sequence
/// (forked, never released). A sequence stops on any EOS id, on a stop sequence, at
/// `max_new_tokens`, or when the run's budget is reached or cancelled.
///
/// Per step and sequence: the source's row is checked (NaN or +inf is a `backend_error`), the
/// built-in logits processors run, then the caller's processor (if any), then the warpers (when
/// sampling); greedy takes the argmax (lowest id on ties), sampling inverts the CDF with one
/// uniform from the sample's counter-based stream (see `request`).
///
/// Per-step cost does not grow with the sequence: rows are read in place (a copy only for the
/// raw log-probs when processors change values and they are asked for), a sequence's tokens are
/// kept contiguous with its prompt only when a processor reads them, handles are released in
/// O(1) each, and the log-sum-exp is computed only when log-probs are asked for.

#include <algorithm>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/detail/handle_guard.hpp"
#include "itscale/core/detail/source_rows.hpp"
#include "itscale/core/detail/validate_tokens.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/live.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/metered_source.hpp"
#include "itscale/core/rng.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/decode/generation.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/sample.hpp"
#include "itscale/kernels/sparse.hpp"
#include "itscale/processors/chain.hpp"
#include "itscale/processors/sampling_chain.hpp"

ITSCALE_BEGIN_NAMESPACE

namespace detail {

/// Where a decode starts: a live handle (owned by the run or borrowed), its tokens and its
/// next-token row.
template <class H>
struct decode_start {
  H handle;
  std::span<const token_id> tokens;
  std::span<const float> row;
  std::uint32_t stream = 0;
  std::uint32_t first_sample = 0;
};

/// The decoding loop shared by every `generate` overload. `starts` hold live handles of the
/// source (the run's, owned by `guard`, or the caller's, which `guard` does not know and so never
/// releases).
template <LogitSource S, AnyLogitsProcessor P>
class decoder {
 public:
  using handle = handle_t<S>;

  decoder(S& source, metered_source<S>& metered, handle_guard<metered_source<S>>& guard, const sampling_options& opts,
          const P& user, const run_options& run, decode_result<S>& out)
      : source_(source), src_(metered), guard_(guard), opts_(opts), user_(user), run_(run), out_(out), chain_(opts),
        vocab_(source.vocab_size()) {
    ws_.reserve(vocab_);
    constexpr bool plain = std::is_same_v<P, logits_processor_archetype>;
    reads_tokens_ = chain_.reads_tokens() || !plain;
    changes_values_ = chain_.changes_values() || !plain;
    processors_change_values_ = chain_.processors_change_values() || !plain;
  }

  void run(std::span<const decode_start<handle>> starts, const stopwatch& clock) {
    starts_ = starts;
    begin();
    // Each sample needs its own writable copy of its start's row (processors work in place).
    std::vector<float> first(seqs_.size() * vocab_);
    for (std::size_t i = 0; i < seqs_.size(); ++i) {
      const auto r = starts_[seqs_[i].start].row;
      std::copy(r.begin(), r.end(), first.begin() + static_cast<std::ptrdiff_t>(i * vocab_));
      active_.push_back({i, i});
    }
    logits_view view{first.data(), seqs_.size(), vocab_};
    for (std::size_t step = 0; !active_.empty(); ++step) {
      queued_.clear();
      parents_.clear();
      next_.clear();
      for (const auto& [i, row] : active_) choose(i, view.row(row), step);
      const run_status limit = run_.budget.check(src_.stats(), clock.seconds());
      if (limit != run_status::completed && !queued_.empty()) cut(limit);
      stepped_.clear();
      for (const auto& a : active_) stepped_.push_back(seqs_[a.seq].h);
      view = advance(step);
      // The handles this step read from are done with (a start's handle once all its samples
      // forked; the caller's own are unknown to the guard and stay).
      for (handle h : stepped_) guard_.release(h);
    }
    for (auto& s : seqs_) out_.sequences.push_back(std::move(s.out));
  }

 private:
  using ustate = typename state_of<P>::type;
  struct sequence {
    std::size_t start;
    handle h;
    ustate state;
    counter_rng rng;
    std::vector<token_id> context;  // start tokens + generated, only when a processor reads them
    generation out;
    bool keep = false;              // finished; extended once more to hand its state back
  };
  struct slot {
    std::size_t seq;  // index into seqs_
    std::size_t row;  // its row in the current view
  };

  void begin() {
    const std::size_t per = opts_.num_return_sequences;
    seqs_.reserve(starts_.size() * per);
    for (std::size_t r = 0; r < starts_.size(); ++r) {
      ustate st{};
      if constexpr (StatefulLogitsProcessor<P>) st = user_.start(starts_[r].tokens);
      for (std::size_t j = 0; j < per; ++j) {
        sequence s{r, starts_[r].handle, st,
                   counter_rng(opts_.seed, sample_stream(starts_[r].stream, starts_[r].first_sample + j)), {}, {}};
        if (reads_tokens_) {
          s.context.reserve(starts_[r].tokens.size() + opts_.stop.max_new_tokens);
          s.context.assign(starts_[r].tokens.begin(), starts_[r].tokens.end());
        }
        s.out.request = r;
        s.out.sample = starts_[r].first_sample + j;
        seqs_.push_back(std::move(s));
      }
    }
    if (run_.keep_handles) out_.live.resize(seqs_.size());
  }

  // Processes one sequence's row at `step`: picks its token, records it, queues its child.
  void choose(std::size_t i, std::span<float> row, std::size_t step) {
    sequence& s = seqs_[i];
    const bool raw_needed = opts_.output_model_logprobs && changes_values_;
    if (raw_needed) raw_.assign(row.begin(), row.end());
    const step_context ctx = reads_tokens_ ? step_context{s.context, starts_[s.start].tokens.size(), &ws_}
                                           : step_context{s.out.tokens, 0, &ws_};
    chain_.apply_processors(row, ctx);
    if constexpr (StatefulLogitsProcessor<P>)
      user_.apply(row, ctx, s.state);
    else
      user_.apply(row, ctx);
    // The source's row was checked; a processor can still write NaN or overflow to +inf, and
    // argmax / sampling would then return an arbitrary token (skipped when nothing can change values).
    if (processors_change_values_) detail::check_processed_row(row, {}, "a logits processor", where(s, step));
    // After a top-k the warpers list the few tokens left: draw and normalise over those only.
    const live_set live = chain_.apply_warpers(row, ctx);
    if (opts_.do_sample && chain_.warpers_scale_values())
      detail::check_processed_row(row, live, "temperature", where(s, step));
    const double u = opts_.do_sample ? s.rng.uniform(static_cast<std::uint32_t>(step)) : 0.0;
    const std::size_t pick = !opts_.do_sample ? kernels::argmax(row)
                             : live.known    ? kernels::sample_inverse_cdf(row, live.ids, u)
                                             : kernels::sample_inverse_cdf(row, u);
    if (pick == kernels::npos || row[pick] == masked_logit)
      throw search_error("itscale: every token is masked " + where(s, step));
    const auto t = static_cast<token_id>(pick);
    const float lp = record(s, t, row, live, raw_needed);
    if (reads_tokens_) s.context.push_back(t);
    if constexpr (StatefulLogitsProcessor<P>) user_.advance(s.state, t);
    if (run_.on_token) run_.on_token(token_event{s.out.request, s.out.sample, step, t, lp});
    const bool done = finished(s);
    s.keep = done && run_.keep_handles;
    if (!done || s.keep) queue(i, t);
  }

  // "at step 2 of request 0, sample 1", for error messages.
  static std::string where(const sequence& s, std::size_t step) {
    return "at step " + std::to_string(step) + " of request " + std::to_string(s.out.request) + ", sample " +
           std::to_string(s.out.sample);
  }

  // Appends `t` and, when asked, its log-probs; returns the processed log-prob (0 if not computed).
  float record(sequence& s, token_id t, std::span<const float> row, const live_set& live, bool raw_needed) {
    const auto pick = static_cast<std::size_t>(t);
    float lp = 0;
    if (opts_.output_logprobs || (opts_.output_model_logprobs && !raw_needed)) {
      lp = row[pick] - (live.known ? kernels::logsumexp(row, live.ids) : kernels::logsumexp(row));
      if (opts_.output_logprobs) {
        s.out.logprobs.push_back(lp);
        s.out.logprob_sum += lp;
        s.out.score = s.out.logprob_sum;
      }
    }
    if (opts_.output_model_logprobs) {
      // A token the source masked (a processor unmasked it) is impossible under the model: -inf,
      // not -inf - logsumexp, which is NaN when the source masked its whole row.
      const float model_lp = !raw_needed                ? lp
                             : raw_[pick] == masked_logit ? masked_logit
                                                          : raw_[pick] - kernels::logsumexp(std::span<const float>(raw_));
      s.out.model_logprobs.push_back(model_lp);
    }
    s.out.tokens.push_back(t);
    return lp;
  }

  // Sets the stop reason; true if the sequence ends with this token.
  bool finished(sequence& s) const noexcept {
    const auto gen = std::span<const token_id>(s.out.tokens);
    if (opts_.stop.is_eos(gen.back())) s.out.stop = stop_reason::eos;
    else if (opts_.stop.ends_with_stop(gen)) s.out.stop = stop_reason::stop_sequence;
    else if (gen.size() >= opts_.stop.max_new_tokens) s.out.stop = stop_reason::max_new_tokens;
    else return false;
    return true;
  }

  void queue(std::size_t i, token_id t) {
    parents_.push_back(seqs_[i].h);
    next_.push_back(t);
    queued_.push_back(i);
  }

  // The budget ran out or the run was cancelled: nothing queued is extended.
  void cut(run_status why) {
    out_.status = why;
    for (std::size_t i : queued_) {
      sequence& s = seqs_[i];
      if (!s.keep) s.out.stop = why == run_status::cancelled ? stop_reason::cancelled : stop_reason::budget;
      s.keep = false;
    }
    queued_.clear();
    parents_.clear();
    next_.clear();
  }

  // One batched extend for the queued children. Sequences kept for the caller take their child
  // and row and leave; the others form the next step's active set.
  logits_view advance(std::size_t step) {
    active_.clear();
    if (parents_.empty()) return {};
    children_.assign(parents_.size(), handle{});
    guard_.reserve(children_.size());
    src_.extend(parents_, next_, children_);
    for (handle c : children_) guard_.adopt(c);
    const logits_view view = src_.logits();
    check_source_rows(view, children_.size(), vocab_, step + 1);
    for (std::size_t k = 0; k < queued_.size(); ++k) {
      sequence& s = seqs_[queued_[k]];
      s.h = children_[k];
      if (s.keep)
        hand_back(s, queued_[k], view.row(k));
      else
        active_.push_back({queued_[k], k});
    }
    return view;
  }

  void hand_back(sequence& s, std::size_t i, std::span<const float> row) {
    prefilled<S>& p = out_.live[i];
    p.tokens.reserve(starts_[s.start].tokens.size() + s.out.tokens.size());
    p.tokens.assign(starts_[s.start].tokens.begin(), starts_[s.start].tokens.end());
    p.tokens.insert(p.tokens.end(), s.out.tokens.begin(), s.out.tokens.end());
    p.logits.assign(row.begin(), row.end());
    guard_.disown(s.h);
    p.handle = owned_handle<S>(source_, s.h);
  }

  S& source_;
  metered_source<S>& src_;
  handle_guard<metered_source<S>>& guard_;
  const sampling_options& opts_;
  const P& user_;
  const run_options& run_;
  decode_result<S>& out_;
  sampling_chain chain_;
  std::size_t vocab_;
  bool reads_tokens_ = false, changes_values_ = false, processors_change_values_ = false;
  std::span<const decode_start<handle>> starts_;
  workspace ws_;
  std::vector<sequence> seqs_;
  std::vector<slot> active_;
  std::vector<float> raw_;
  std::vector<handle> parents_, children_, stepped_;
  std::vector<token_id> next_;
  std::vector<std::size_t> queued_;
};

/// Validates, meters and runs one decode; `prepare(src, guard, starts, rows)` fills the starts
/// (prefilling through the metered source when they are prompts).
template <LogitSource S, AnyLogitsProcessor P, class Prepare>
decode_result<S> run_decode(S& source, const sampling_options& opts, const P& user, const run_options& run,
                            Prepare&& prepare) {
  const stopwatch clock;
  opts.validate(source.vocab_size());
  run.budget.validate();
  decode_result<S> out;
  {
    metered_source<S> src(source, out.compute);
    handle_guard<metered_source<S>> guard(src);
    std::vector<decode_start<handle_t<S>>> starts;
    std::vector<float> rows;
    prepare(src, guard, starts, rows);
    decoder<S, P> d(source, src, guard, opts, user, run, out);
    d.run(starts, clock);
  }
  out.compute.wall_seconds = clock.seconds();
  return out;
}

}  // namespace detail

/// Decodes every request with `opts`, applying `user` (a processor of either form) between the
/// built-in logits processors and the warpers. Each prompt is prefilled once and its samples fork
/// it. Returns the sequences ordered by request, then sample, with the compute spent. Throws
/// `invalid_option` / `invalid_input` for bad options, prompts or repeated streams (before touching
/// the source), `backend_error` for unusable logits, `search_error` when every token of a row is
/// masked; exceptions of the source, the processor or `on_token` propagate. Every handle created
/// is released on every path (except those handed back with `keep_handles`).
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] decode_result<S> generate(S& source, std::span<const request> requests, const sampling_options& opts,
                                        const P& user, const run_options& run = {}) {
  const std::size_t vocab = source.vocab_size();
  detail::check_requests(requests, vocab, opts.num_return_sequences, "generate");
  return detail::run_decode(source, opts, user, run, [&](auto& src, auto& guard, auto& starts, auto& rows) {
    rows.resize(requests.size() * vocab);  // spans into it stay valid: no reallocation after this
    for (std::size_t r = 0; r < requests.size(); ++r) {
      guard.reserve(1);
      const auto h = src.prefill(requests[r].prompt);
      guard.adopt(h);
      const logits_view v = src.logits();
      detail::check_source_rows(v, 1, vocab, 0);
      const auto row = std::span<float>(rows).subspan(r * vocab, vocab);
      std::copy(v.data, v.data + vocab, row.begin());
      starts.push_back({h, requests[r].prompt, row, requests[r].stream, requests[r].first_sample});
    }
  });
}

/// Decodes from the caller's live sequences (each `prefilled` is forked, never released: several
/// decodes and searches can share one prefill). Otherwise as the request overload.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] decode_result<S> generate(S& source, std::span<const live_request<S>> requests,
                                        const sampling_options& opts, const P& user, const run_options& run = {}) {
  const std::size_t vocab = source.vocab_size();
  if (requests.empty()) throw invalid_input("itscale: generate needs at least one request");
  std::vector<std::uint32_t> streams, firsts;
  for (std::size_t r = 0; r < requests.size(); ++r) {
    detail::check_prefilled(requests[r].start, r, vocab);
    if (requests[r].start->handle.source() != &source)
      throw invalid_input("itscale: live request " + std::to_string(r) + " belongs to another source");
    streams.push_back(requests[r].stream);
    firsts.push_back(requests[r].first_sample);
  }
  detail::check_streams(streams, firsts, opts.num_return_sequences);
  return detail::run_decode(source, opts, user, run, [&](auto&, auto&, auto& starts, auto&) {
    for (const auto& r : requests)
      starts.push_back({r.start->handle.get(), r.start->tokens, r.start->logits, r.stream, r.first_sample});
  });
}

/// `generate` with the built-in processors only.
template <LogitSource S>
[[nodiscard]] decode_result<S> generate(S& source, std::span<const request> requests, const sampling_options& opts,
                                        const run_options& run = {}) {
  return generate(source, requests, opts, logits_processor_archetype{}, run);
}

/// From live sequences, with the built-in processors only.
template <LogitSource S>
[[nodiscard]] decode_result<S> generate(S& source, std::span<const live_request<S>> requests,
                                        const sampling_options& opts, const run_options& run = {}) {
  return generate(source, requests, opts, logits_processor_archetype{}, run);
}

/// One live sequence (stream 0).
template <LogitSource S>
[[nodiscard]] decode_result<S> generate(S& source, const prefilled<S>& start, const sampling_options& opts,
                                        const run_options& run = {}) {
  const live_request<S> r{&start};
  return generate(source, std::span<const live_request<S>>(&r, 1), opts, run);
}

/// One prompt (stream 0).
template <LogitSource S>
[[nodiscard]] decode_result<S> generate(S& source, std::span<const token_id> prompt, const sampling_options& opts,
                                        const run_options& run = {}) {
  const request req{prompt};
  return generate(source, std::span<const request>(&req, 1), opts, run);
}

/// Several prompts; prompt i uses stream i, so its samples are those of decoding it alone with
/// `request{prompt, i}`.
template <LogitSource S>
[[nodiscard]] decode_result<S> generate(S& source, const std::vector<std::vector<token_id>>& prompts,
                                        const sampling_options& opts, const run_options& run = {}) {
  std::vector<request> reqs;
  reqs.reserve(prompts.size());
  for (std::size_t i = 0; i < prompts.size(); ++i) reqs.push_back({prompts[i], static_cast<std::uint32_t>(i)});
  return generate(source, std::span<const request>(reqs), opts, run);
}

ITSCALE_END_NAMESPACE
