#pragma once
/// \file ensemble_source.hpp
/// An ensemble of `LogitSource`s over one vocabulary that is itself a `LogitSource`, so every
/// decoder and search runs on it unchanged:
///
///     itscale::hash_lm a(64, 1), b(64, 2);
///     auto both = itscale::make_ensemble({.mode = itscale::ensemble_mode::mixture, .weights = {2, 1}}, a, b);
///     auto out = itscale::generate(both, prompts, opts);
///
/// Rows (w_k = the weights divided by their sum, lp_k = log_softmax of member k's row):
/// - `ensemble_mode::log_prob` (product of experts): `log_softmax(sum_k w_k lp_k)`. The weighted
///   mean alone has the same argmax; the rows are renormalised so that they are log-probs. Since
///   each member's normaliser is one constant per row, this is the log-softmax of the weighted
///   sum of the raw rows (one SIMD log-softmax per row, whatever the number of members). A token
///   any member with a positive weight masks (-inf) is masked.
/// - `ensemble_mode::mixture`: `log(sum_k w_k softmax_k)`, the log-probs of the mixture. Computed
///   from the SIMD softmax of each member and one log per entry; the rare entries whose mixture
///   probability is below 2^-100 (where the float softmax loses them) are recomputed as the
///   log-sum-exp of `log w_k + lp_k`, so no finite log-prob is lost. A token is masked only when
///   every member with a positive weight masks it; a member whose whole row is masked has no mass
///   to give (the row then sums to less than 1).
///
/// Members: an lvalue argument is borrowed (it must outlive the ensemble), an rvalue is moved in
/// and owned; one object may appear several times. Each ensemble handle holds one handle per
/// member, forked and released with it: one `prefill` / `extend` / `extend_span` on the ensemble
/// is exactly one call of the same kind per member, in member order (members with weight 0
/// included). Calls are all-or-nothing: if member k throws, or returns NaN or +inf
/// (`backend_error`), the handles members 0..k created in that call are released. To count each
/// member's work, pass it wrapped in a `metered_source`. Capabilities: `extend_span` when every
/// member has it (one `extend_span` per member), `capacity()` when a member declares limits (the
/// shortest context; the fewest live handles a member object holds, divided by the number of
/// members that are that object), `live_handles()` (the ensemble's own handles), `member<K>()`.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/backends/support/member_set.hpp"
#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/softmax.hpp"

ITSCALE_BEGIN_NAMESPACE

/// How an ensemble combines its members' distributions.
enum class ensemble_mode : std::uint8_t {
  log_prob,  ///< weighted mean of log-probs, renormalised (product of experts)
  mixture,   ///< weighted mean of probabilities (mixture of experts)
};

/// Options of `ensemble_source`. Designated initialisers:
///
///     itscale::ensemble_options{.mode = itscale::ensemble_mode::mixture, .weights = {0.7, 0.3}}
struct ensemble_options {
  ensemble_mode mode = ensemble_mode::log_prob;
  /// One weight per member, finite and >= 0, not all 0; only their ratios matter. Empty: equal.
  std::vector<double> weights = {};

  /// Throws `invalid_option` unless the weights suit an ensemble of `members` sources.
  void validate(std::size_t members) const {
    const auto fail = [](const std::string& what) { throw invalid_option("itscale: ensemble_options." + what); };
    if (mode != ensemble_mode::log_prob && mode != ensemble_mode::mixture) fail("mode is not an ensemble_mode");
    if (weights.empty()) return;
    if (weights.size() != members)
      fail("weights has " + std::to_string(weights.size()) + " entries for " + std::to_string(members) + " members");
    double sum = 0;
    for (std::size_t k = 0; k < weights.size(); ++k) {
      if (!std::isfinite(weights[k]) || weights[k] < 0)
        fail("weights[" + std::to_string(k) + "] = " + detail::num(weights[k]) + " must be finite and >= 0");
      sum += weights[k];
    }
    if (sum == 0) fail("weights are all 0: at least one must be positive");
    if (!std::isfinite(sum)) fail("weights sum to infinity: scale them down");
  }
};

/// An ensemble of sources as a `LogitSource`. See the file comment. Build it with `make_ensemble`.
template <CombinatorMember... Ms>
class ensemble_source : public detail::combined_source<ensemble_source<Ms...>, Ms...> {
  static_assert(sizeof...(Ms) >= 1, "an ensemble needs at least one member");
  using base = detail::combined_source<ensemble_source<Ms...>, Ms...>;
  friend base;

 public:
  static constexpr const char* name = "ensemble_source";
  static constexpr std::size_t members = sizeof...(Ms);

  /// Throws `invalid_option` for bad options (see `ensemble_options`), `invalid_input` when the
  /// members' vocabulary sizes differ.
  template <class... Args>
    requires(sizeof...(Args) == sizeof...(Ms))
  explicit ensemble_source(ensemble_options opts, Args&&... ms)
      : base(std::forward<Args>(ms)...), opts_((opts.validate(sizeof...(Ms)), std::move(opts))) {
    std::vector<double> w = opts_.weights.empty() ? std::vector<double>(members, 1.0) : opts_.weights;
    double sum = 0;
    for (double x : w) sum += x;
    for (std::size_t k = 0; k < members; ++k) {
      weight_[k] = static_cast<float>(w[k] / sum);
      log_weight_[k] = w[k] > 0 ? static_cast<float>(std::log(w[k] / sum)) : masked_logit;
    }
    const std::size_t top = static_cast<std::size_t>(std::max_element(w.begin(), w.end()) - w.begin());
    for (std::size_t k = 0; k < members; ++k) scale_[k] = static_cast<float>(w[k] / w[top]);
    log_top_ = log_weight_[top];
  }
  ensemble_source(ensemble_source&&) = default;

  [[nodiscard]] const ensemble_options& options() const noexcept { return opts_; }
  /// The normalised weights (summing to 1), in member order.
  [[nodiscard]] std::span<const float> weights() const noexcept { return weight_; }

 private:
  void begin_rows(std::span<float> out, std::size_t n) {
    const std::size_t vocab = this->vocab_size();
    scratch_.resize(vocab);
    std::fill(out.begin(), out.end(), 0.0f);
    if (opts_.mode == ensemble_mode::mixture) {
      raw_.resize(members * n * vocab);
      lse_.resize(members * n);
    }
    rows_ = n;
  }

  void fold(std::size_t k, const logits_view& v, std::span<float> out) noexcept {
    const std::size_t vocab = v.vocab;
    for (std::size_t r = 0; r < rows_; ++r) {
      const std::span<const float> in = v.row(r);
      float* acc = out.data() + r * vocab;
      if (opts_.mode == ensemble_mode::log_prob) {
        // sum_k w_k lp_k = sum_k w_k x_k - sum_k w_k lse_k: the normalisers are one constant per
        // row, which the final log-softmax removes, so the raw rows are summed (one exp pass per
        // row in all, and an ensemble of one source with itself gives exactly its log-softmax).
        if (weight_[k] == 0) continue;  // 0 * -inf would be NaN; a zero weight means no say
        const float w = weight_[k];
        for (std::size_t t = 0; t < vocab; ++t) acc[t] += w * in[t];
      } else {
        // Kept for the entries the float softmax underflows (see finish).
        std::copy(in.begin(), in.end(), raw_.begin() + static_cast<std::ptrdiff_t>((k * rows_ + r) * vocab));
        const float lse = kernels::logsumexp(in);
        lse_[k * rows_ + r] = lse;
        if (weight_[k] == 0 || lse == masked_logit) continue;
        kernels::softmax(in, scratch_);
        const float s = scale_[k];
        for (std::size_t t = 0; t < vocab; ++t) acc[t] += s * scratch_[t];
      }
    }
  }

  void finish(std::span<float> out, std::size_t n) noexcept {
    const std::size_t vocab = this->vocab_size();
    for (std::size_t r = 0; r < n; ++r) {
      const std::span<float> row = out.subspan(r * vocab, vocab);
      if (opts_.mode == ensemble_mode::log_prob) {
        detail::log_softmax_or_masked(row, row);
        continue;
      }
      // acc = sum_k (w_k / w_top) p_k, so log(mixture) = log w_top + log(acc).
      for (std::size_t t = 0; t < vocab; ++t)
        row[t] = row[t] >= tiny ? log_top_ + std::log(row[t]) : stable_entry(r, t);
    }
  }

  // log(sum_k w_k p_k(t)) as a log-sum-exp of log w_k + lp_k(t) (float64): for entries whose
  // float probabilities underflowed.
  [[nodiscard]] float stable_entry(std::size_t r, std::size_t t) const noexcept {
    const std::size_t vocab = this->vocab_size();
    double terms[members];
    std::size_t used = 0;
    double top = -std::numeric_limits<double>::infinity();
    for (std::size_t k = 0; k < members; ++k) {
      const float lse = lse_[k * rows_ + r];
      const float x = raw_[(k * rows_ + r) * vocab + t];
      if (weight_[k] == 0 || lse == masked_logit || x == masked_logit) continue;
      terms[used] = static_cast<double>(log_weight_[k]) + (static_cast<double>(x) - static_cast<double>(lse));
      top = std::max(top, terms[used]);
      ++used;
    }
    if (used == 0) return masked_logit;
    double sum = 0;
    for (std::size_t i = 0; i < used; ++i) sum += std::exp(terms[i] - top);
    return static_cast<float>(top + std::log(sum));
  }

  static constexpr float tiny = 0x1p-100f;

  ensemble_options opts_;
  float weight_[members] = {};
  float log_weight_[members] = {};
  float scale_[members] = {};
  float log_top_ = 0;
  std::vector<float> scratch_, raw_, lse_;
  std::size_t rows_ = 0;
};

/// Deduces borrowed (lvalue) and owned (rvalue) members.
template <class... Args>
ensemble_source(ensemble_options, Args&&...) -> ensemble_source<Args...>;

/// An ensemble of `members` (lvalues borrowed, rvalues moved in) with `opts`. Throws as the
/// constructor.
template <class... Ms>
  requires(CombinatorMember<Ms> && ...)
[[nodiscard]] ensemble_source<Ms...> make_ensemble(ensemble_options opts, Ms&&... members) {
  return ensemble_source<Ms...>(std::move(opts), std::forward<Ms>(members)...);
}

/// An equally weighted product of experts of `members`.
template <class... Ms>
  requires(CombinatorMember<Ms> && ...)
[[nodiscard]] ensemble_source<Ms...> make_ensemble(Ms&&... members) {
  return ensemble_source<Ms...>(ensemble_options{}, std::forward<Ms>(members)...);
}

ITSCALE_END_NAMESPACE
