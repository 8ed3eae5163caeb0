#pragma once
/// \file live.hpp
/// Live sequences a caller holds across searches: `owned_handle` (RAII, move-only: the handle is
/// released when it goes out of scope) and `prefilled` (a prompt already evaluated: its handle,
/// its tokens and its next-token logits), so several searches can start from one prefill, and a
/// tree search can continue a sequence without evaluating its prefix again.
///
///     auto p = itscale::prefill(model, prompt);          // one prefill
///     auto a = itscale::generate(model, p, sample_opts);  // both fork p's handle
///     auto b = itscale::beam_search(model, p, beam_opts);

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/detail/source_rows.hpp"
#include "itscale/core/detail/validate_tokens.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Owns one live handle of a source: releases it on destruction. Move-only.
template <LogitSource S>
class owned_handle {
 public:
  using handle = handle_t<S>;

  owned_handle() noexcept = default;
  /// Takes ownership of `h`, a live handle of `source`.
  owned_handle(S& source, handle h) noexcept : source_(&source), h_(h) {}
  owned_handle(owned_handle&& o) noexcept : source_(std::exchange(o.source_, nullptr)), h_(o.h_) {}
  owned_handle& operator=(owned_handle&& o) noexcept {
    if (this != &o) {
      reset();
      source_ = std::exchange(o.source_, nullptr);
      h_ = o.h_;
    }
    return *this;
  }
  owned_handle(const owned_handle&) = delete;
  owned_handle& operator=(const owned_handle&) = delete;
  ~owned_handle() { reset(); }

  /// The handle (precondition: owns one).
  [[nodiscard]] handle get() const noexcept { return h_; }
  [[nodiscard]] explicit operator bool() const noexcept { return source_ != nullptr; }
  [[nodiscard]] S* source() const noexcept { return source_; }

  /// Gives up ownership without releasing; the caller must release the returned handle.
  [[nodiscard]] handle release() noexcept {
    source_ = nullptr;
    return h_;
  }

  /// Releases the handle now (no-op if empty).
  void reset() noexcept {
    if (source_ != nullptr) std::exchange(source_, nullptr)->release(h_);
  }

 private:
  S* source_ = nullptr;
  handle h_{};
};

/// A sequence already evaluated by a source: what a decoder or search needs to start from it
/// without calling the source. Searches given a `prefilled` fork its handle and never release it.
template <LogitSource S>
struct prefilled {
  owned_handle<S> handle;       ///< the sequence's state
  std::vector<token_id> tokens; ///< the tokens the handle holds (the prompt of later searches)
  std::vector<float> logits;    ///< next-token logits after `tokens` (vocab_size() entries)
};

/// A request that starts from a caller's `prefilled` sequence instead of a prompt (its handle is
/// forked, never released). `stream` and `first_sample` as in `request`.
template <LogitSource S>
struct live_request {
  const prefilled<S>* start = nullptr;
  std::uint32_t stream = 0;
  std::uint32_t first_sample = 0;
};

namespace detail {

/// Checks that a caller's `prefilled` start is usable with a source of `vocab` tokens.
template <LogitSource S>
void check_prefilled(const prefilled<S>* p, std::size_t i, std::size_t vocab) {
  const std::string at = "itscale: live request " + std::to_string(i) + ": ";
  if (p == nullptr || !p->handle) throw invalid_input(at + "holds no live handle");
  if (p->tokens.empty()) throw invalid_input(at + "has no tokens");
  if (p->logits.size() != vocab)
    throw invalid_input(at + "has " + std::to_string(p->logits.size()) + " logits, expected vocab size " +
                        std::to_string(vocab));
  check_tokens(p->tokens, vocab, "prefilled tokens");
}

}  // namespace detail

/// Prefills `prompt` (non-empty, ids inside the vocabulary) and keeps its handle and next-token
/// row. Throws `invalid_input` for a bad prompt, `backend_error` for unusable logits; the handle is
/// released on every error path.
template <LogitSource S>
[[nodiscard]] prefilled<S> prefill(S& source, std::span<const token_id> prompt) {
  const std::size_t vocab = source.vocab_size();
  if (prompt.empty()) throw invalid_input("itscale: prefill needs a non-empty prompt");
  detail::check_tokens(prompt, vocab, "prompt");
  prefilled<S> p;
  p.handle = owned_handle<S>(source, source.prefill(prompt));
  const logits_view v = source.logits();
  detail::check_source_rows(v, 1, vocab, 0);
  p.tokens.assign(prompt.begin(), prompt.end());
  p.logits.assign(v.data, v.data + vocab);
  return p;
}

ITSCALE_END_NAMESPACE
