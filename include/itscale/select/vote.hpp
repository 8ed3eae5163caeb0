#pragma once
/// \file vote.hpp
/// Vote counting over the answers of several samples: majority vote and weighted vote, with one
/// deterministic tie rule shared by every selection method (self-consistency, adaptive
/// consistency, weighted best-of-N).
///
/// Tie rule: among answers of equal total weight (exactly equal, as doubles), the answer seen
/// first wins, i.e. the one whose lowest sample index is lowest. This is the rule of the
/// reference evaluation of the arithmetic models (`models/README.md`: "majority vote ignores
/// samples without an answer, ties to the answer seen first") and of Python's
/// `Counter.most_common` on insertion-ordered dicts.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE

/// What an answer key must support: copies and `==`. Keys with a `std::hash` specialisation are
/// counted through a hash map, others by comparison with each distinct answer seen so far.
template <class A>
concept AnswerKey = std::copy_constructible<A> && std::equality_comparable<A>;

namespace detail {
template <class T>
struct optional_value {};
template <class T>
struct optional_value<std::optional<T>> {
  using type = T;
};
}  // namespace detail

/// A caller's answer extractor: `extract(tokens) -> std::optional<A>` (none: the sample has no
/// answer and casts no vote). It may throw; the exception propagates to the caller of the
/// selection method, after every handle the method created is released.
template <class F>
concept AnswerExtractor = std::invocable<F&, std::span<const token_id>> && requires {
  typename detail::optional_value<std::remove_cvref_t<std::invoke_result_t<F&, std::span<const token_id>>>>::type;
} && AnswerKey<typename detail::optional_value<std::remove_cvref_t<std::invoke_result_t<F&, std::span<const token_id>>>>::type>;

/// The answer key type of an extractor.
template <AnswerExtractor F>
using answer_of =
    typename detail::optional_value<std::remove_cvref_t<std::invoke_result_t<F&, std::span<const token_id>>>>::type;

/// One distinct answer and the votes behind it.
template <AnswerKey A>
struct answer_votes {
  A answer;
  double weight = 0;                 ///< sum of its samples' weights (their count in a majority vote)
  std::size_t count = 0;             ///< number of samples with this answer
  std::vector<std::size_t> samples;  ///< indices of those samples, ascending (`samples.front()` = first seen)
};

/// The outcome of a vote.
template <AnswerKey A>
struct vote_tally {
  std::optional<A> answer;                      ///< the winner; none when no sample has an answer
  std::vector<answer_votes<A>> distribution;    ///< every distinct answer, best first (weight descending, then first seen)
  double confidence = 0;                        ///< winner's weight / total weight of the answered samples (0 if that total is 0)
  double total_weight = 0;                      ///< over the answered samples
  std::size_t answered = 0;                     ///< samples with an answer
  std::size_t samples = 0;                      ///< samples counted (with or without an answer)

  /// The winner's entry (precondition: `answer` holds a value).
  [[nodiscard]] const answer_votes<A>& winner() const noexcept { return distribution.front(); }
};

namespace detail {

template <class A>
concept hashable_key = requires(const A& a) {
  { std::hash<A>{}(a) } -> std::convertible_to<std::size_t>;
};

/// Maps answers to dense ids in order of first appearance: by hash when the key is hashable,
/// else by comparison with the distinct answers seen so far.
template <AnswerKey A>
class answer_index {
 public:
  static constexpr std::size_t none = static_cast<std::size_t>(-1);

  /// The id of `a`, adding it if new.
  std::size_t id(const A& a) {
    if constexpr (hashable_key<A>) {
      const auto [it, added] = ids_.try_emplace(a, keys_.size());
      if (added) keys_.push_back(a);
      return it->second;
    } else {
      for (std::size_t i = 0; i < keys_.size(); ++i)
        if (keys_[i] == a) return i;
      keys_.push_back(a);
      return keys_.size() - 1;
    }
  }
  [[nodiscard]] const std::vector<A>& keys() const noexcept { return keys_; }
  [[nodiscard]] std::size_t size() const noexcept { return keys_.size(); }

 private:
  std::vector<A> keys_;
  struct no_map {};
  std::conditional_t<hashable_key<A>, std::unordered_map<A, std::size_t>, no_map> ids_;
};

/// Checks a weight of sample `i` for a weighted vote: finite and >= 0.
inline void check_vote_weight(double w, std::size_t i) {
  if (!std::isfinite(w) || w < 0)
    throw invalid_input("itscale: vote weight of sample " + std::to_string(i) + " is " + num(w) +
                        "; weights must be finite and >= 0");
}

}  // namespace detail

/// Counts a vote. `answers[i]` is sample `i`'s answer (none: no vote); `weights`, if not empty,
/// has one finite weight >= 0 per sample (a majority vote when empty: every answer weighs 1).
/// Returns the distribution best first and the winner under the tie rule of the file comment.
/// Throws `invalid_input` for a weights span of another length or a negative / non-finite weight.
template <AnswerKey A>
[[nodiscard]] vote_tally<A> tally_votes(std::span<const std::optional<A>> answers, std::span<const double> weights = {}) {
  if (!weights.empty() && weights.size() != answers.size())
    throw invalid_input("itscale: tally_votes: " + std::to_string(weights.size()) + " weights for " +
                        std::to_string(answers.size()) + " answers");
  vote_tally<A> t;
  t.samples = answers.size();
  detail::answer_index<A> index;
  std::vector<answer_votes<A>> votes;
  for (std::size_t i = 0; i < answers.size(); ++i) {
    const double w = weights.empty() ? 1.0 : weights[i];
    if (!weights.empty()) detail::check_vote_weight(w, i);
    if (!answers[i]) continue;
    const std::size_t k = index.id(*answers[i]);
    if (k == votes.size()) votes.push_back({*answers[i], 0.0, 0, {}});
    votes[k].weight += w;
    ++votes[k].count;
    votes[k].samples.push_back(i);
    t.total_weight += w;
    ++t.answered;
  }
  // Ids are in order of first appearance, so a stable sort by weight keeps the tie rule.
  std::stable_sort(votes.begin(), votes.end(),
                   [](const answer_votes<A>& a, const answer_votes<A>& b) { return a.weight > b.weight; });
  t.distribution = std::move(votes);
  if (!t.distribution.empty()) {
    t.answer = t.distribution.front().answer;
    t.confidence = t.total_weight > 0 ? t.distribution.front().weight / t.total_weight : 0.0;
  }
  return t;
}

/// `tally_votes` over a vector of answers.
template <AnswerKey A>
[[nodiscard]] vote_tally<A> tally_votes(const std::vector<std::optional<A>>& answers, std::span<const double> weights = {}) {
  return tally_votes(std::span<const std::optional<A>>(answers), weights);
}

ITSCALE_END_NAMESPACE
