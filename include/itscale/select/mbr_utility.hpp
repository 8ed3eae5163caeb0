#pragma once
/// \file mbr_utility.hpp
/// Utilities for MBR decoding (mbr.hpp): how much a hypothesis agrees with a pseudo-reference.
///
/// The `MbrUtility` concept is shaped for the N x N hot loop: `prepare(candidates)` turns every
/// candidate into a compact form once (dense token ids, sorted counts, n-gram ids), and
/// `pair(i, j)` returns both directions at once — u(i as hypothesis, j as reference) and
/// u(j as hypothesis, i as reference) — so a symmetric utility, or one whose expensive part is
/// symmetric (LCS length, n-gram match counts), is computed once per unordered pair. MBR asks for
/// pairs row by row (all j >= i for one i, then the next i); the shipped utilities keep the row's
/// candidate expanded in a reused table between calls, so no pair allocates. Any order is still
/// correct.
///
/// Shipped utilities (all in [0, 1]):
/// - `answer_match`: 1 when both candidates have an answer (caller's extractor) and the answers
///   are equal, else 0 — MBR with it (and `include_self`, the default) is majority voting with
///   vote.hpp's tie rule: EU(h) = votes of h's answer / N, and the lowest index among the tied.
/// - `token_f1`: bag-of-tokens F1 (SQuAD's token F1 on ids): 2 |A ∩ B| / (|A| + |B|) with
///   multiset intersection; 1 for two empty sequences.
/// - `rouge_l`: ROUGE-L F-measure on token ids (Lin 2004), P = LCS/|hyp|, R = LCS/|ref|,
///   F = (1 + beta²) P R / (R + beta² P), beta = 1 by default (as Google's rouge-score); the LCS
///   by the bit-parallel algorithm of Crochemore et al. (2001) / Hyyrö (2004): ceil(|row|/64)
///   words per column token. 1 for two empty sequences.
/// - `chrf`: chrF on decoded text (Popović 2015) exactly as sacreBLEU 2.x computes a sentence
///   score (its defaults: char_order 6, beta 2, whitespace removed, effective-order averaging),
///   on a 0..1 scale instead of 0..100: for n = 1..6, character n-gram counts of hypothesis and
///   reference and their clipped matches; precision and recall averaged over the orders where
///   both sides have n-grams; F-beta of the averages. Characters are Unicode code points of the
///   detokenizer's UTF-8 (a byte that is not valid UTF-8 counts as one character); whitespace is
///   what Python's `str.split()` splits on.
/// - `function_utility`: any `f(hyp, ref) -> double`, computed once per pair when declared
///   symmetric, twice otherwise.

#include <algorithm>
#include <bit>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/types.hpp"
#include "itscale/select/vote.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Both directions of a utility for one pair (i, j): `forward` = u(hyp i, ref j),
/// `backward` = u(hyp j, ref i). For i == j both are u(i, i).
struct utility_pair {
  double forward = 0;
  double backward = 0;
};

/// A pairwise utility for MBR (see the file comment). `prepare` may throw (a caller's extractor
/// or detokenizer); `pair(i, j)` is called only after `prepare`, with indices into its
/// candidates.
template <class U>
concept MbrUtility = requires(U& u, const U& cu, std::span<const std::span<const token_id>> cands, std::size_t i) {
  u.prepare(cands);
  { u.pair(i, i) } -> std::convertible_to<utility_pair>;
  { cu.name() } -> std::convertible_to<std::string_view>;
};

namespace detail {

/// Dense ids for keys in order of first appearance: an open-addressing table (linear probing,
/// power-of-two capacity, at most half full) — the `prepare` step of the utilities inserts every
/// token or n-gram of every candidate, and std::unordered_map's node per key made that step
/// slower than the whole N x N loop.
template <class Key, class Hash>
class flat_id_map {
 public:
  /// Sizes the table for about `n` distinct keys (it grows past that anyway).
  void reset(std::size_t n) {
    std::size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    slots_.assign(cap, slot{});
    size_ = 0;
  }
  /// The id of `k`, a new one (= the number of keys so far) if it was absent.
  std::uint32_t id(const Key& k) {
    if (2 * (size_ + 1) > slots_.size()) grow();
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t p = Hash{}(k) & mask;; p = (p + 1) & mask) {
      slot& s = slots_[p];
      if (!s.used) {
        s = {k, static_cast<std::uint32_t>(size_), true};
        return static_cast<std::uint32_t>(size_++);
      }
      if (s.key == k) return s.id;
    }
  }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  struct slot {
    Key key{};
    std::uint32_t id = 0;
    bool used = false;
  };
  void grow() {
    std::vector<slot> old(std::max<std::size_t>(32, slots_.size() * 2));
    old.swap(slots_);
    const std::size_t mask = slots_.size() - 1;
    for (const slot& s : old)
      if (s.used) {
        std::size_t p = Hash{}(s.key) & mask;
        while (slots_[p].used) p = (p + 1) & mask;
        slots_[p] = s;
      }
  }
  std::vector<slot> slots_;
  std::size_t size_ = 0;
};

struct token_hash {
  std::size_t operator()(token_id t) const noexcept {
    std::uint64_t x = static_cast<std::uint64_t>(static_cast<std::uint32_t>(t)) * 0x9E3779B97F4A7C15ull;
    return static_cast<std::size_t>(x ^ (x >> 32));
  }
};

/// Candidates re-coded over dense token ids [0, distinct): the shared first step of the
/// token-level utilities.
struct dense_tokens {
  std::vector<std::uint32_t> ids;       // every candidate's tokens, concatenated
  std::vector<std::size_t> offset;      // candidate c is ids[offset[c], offset[c + 1])
  std::size_t distinct = 0;

  void build(std::span<const std::span<const token_id>> cands) {
    std::size_t total = 0;
    for (const auto& c : cands) total += c.size();
    flat_id_map<token_id, token_hash> map;
    map.reset(total / 2);
    ids.clear();
    ids.reserve(total);
    offset.assign(1, 0);
    for (const auto& c : cands) {
      for (token_id t : c) ids.push_back(map.id(t));
      offset.push_back(ids.size());
    }
    distinct = map.size();
  }
  [[nodiscard]] std::span<const std::uint32_t> of(std::size_t c) const noexcept {
    return {ids.data() + offset[c], offset[c + 1] - offset[c]};
  }
  [[nodiscard]] std::size_t size() const noexcept { return offset.size() - 1; }
};

/// A candidate's distinct ids with their counts (the bag), sorted by id.
struct bag_entry {
  std::uint32_t id;
  std::uint32_t count;
};

inline void build_bags(const dense_tokens& d, std::vector<bag_entry>& bags, std::vector<std::size_t>& offset) {
  bags.clear();
  offset.assign(1, 0);
  std::vector<std::uint32_t> tmp;
  for (std::size_t c = 0; c < d.size(); ++c) {
    const auto ids = d.of(c);
    tmp.assign(ids.begin(), ids.end());
    std::sort(tmp.begin(), tmp.end());
    for (std::size_t k = 0; k < tmp.size();) {
      std::size_t e = k;
      while (e < tmp.size() && tmp[e] == tmp[k]) ++e;
      bags.push_back({tmp[k], static_cast<std::uint32_t>(e - k)});
      k = e;
    }
    offset.push_back(bags.size());
  }
}

/// (1 + b2) p r / (b2 p + r), 0 when p + r = 0.
inline double f_beta(double p, double r, double b2) noexcept {
  const double d = b2 * p + r;
  return d > 0 ? (1 + b2) * p * r / d : 0.0;
}

}  // namespace detail

/// Exact answer match through a caller's extractor (see the file comment).
template <AnswerExtractor E>
class answer_match {
 public:
  explicit answer_match(E extract) : extract_(std::move(extract)) {}

  void prepare(std::span<const std::span<const token_id>> cands) {
    detail::answer_index<answer_of<E>> index;
    ids_.assign(cands.size(), none);
    for (std::size_t c = 0; c < cands.size(); ++c)
      if (auto a = extract_(cands[c])) ids_[c] = index.id(*a);
  }
  [[nodiscard]] utility_pair pair(std::size_t i, std::size_t j) const noexcept {
    const double u = ids_[i] != none && ids_[i] == ids_[j] ? 1.0 : 0.0;
    return {u, u};
  }
  [[nodiscard]] std::string_view name() const noexcept { return "answer_match"; }

 private:
  static constexpr std::size_t none = static_cast<std::size_t>(-1);
  E extract_;
  std::vector<std::size_t> ids_;
};

/// Builds an `answer_match` utility.
template <AnswerExtractor E>
[[nodiscard]] answer_match<std::decay_t<E>> make_answer_match(E&& extract) {
  return answer_match<std::decay_t<E>>(std::forward<E>(extract));
}

/// Bag-of-tokens F1 (see the file comment).
class token_f1 {
 public:
  void prepare(std::span<const std::span<const token_id>> cands) {
    detail::dense_tokens d;
    d.build(cands);
    detail::build_bags(d, bags_, offset_);
    len_.resize(cands.size());
    for (std::size_t c = 0; c < cands.size(); ++c) len_[c] = cands[c].size();
    count_.assign(d.distinct, 0);
    row_ = none;
  }
  [[nodiscard]] utility_pair pair(std::size_t i, std::size_t j) noexcept {
    if (i != row_) load(i);
    std::size_t overlap = 0;
    for (std::size_t k = offset_[j]; k < offset_[j + 1]; ++k)
      overlap += std::min<std::uint32_t>(count_[bags_[k].id], bags_[k].count);
    const std::size_t total = len_[i] + len_[j];
    const double u = total == 0 ? 1.0 : 2.0 * static_cast<double>(overlap) / static_cast<double>(total);
    return {u, u};
  }
  [[nodiscard]] std::string_view name() const noexcept { return "token_f1"; }

 private:
  static constexpr std::size_t none = static_cast<std::size_t>(-1);
  void load(std::size_t i) noexcept {
    if (row_ != none)
      for (std::size_t k = offset_[row_]; k < offset_[row_ + 1]; ++k) count_[bags_[k].id] = 0;
    for (std::size_t k = offset_[i]; k < offset_[i + 1]; ++k) count_[bags_[k].id] = bags_[k].count;
    row_ = i;
  }
  std::vector<detail::bag_entry> bags_;
  std::vector<std::size_t> offset_;
  std::vector<std::size_t> len_;
  std::vector<std::uint32_t> count_;  // the row candidate's bag over dense ids
  std::size_t row_ = none;
};

/// ROUGE-L F-measure on token ids with a bit-parallel LCS (see the file comment).
class rouge_l {
 public:
  /// `beta` weighs recall against precision (1: F1). Precondition checked: finite, > 0.
  explicit rouge_l(double beta = 1.0) : b2_(beta * beta) {
    if (!(beta > 0) || !std::isfinite(beta)) throw invalid_option("itscale: rouge_l beta must be finite and > 0, got " + detail::num(beta));
  }

  void prepare(std::span<const std::span<const token_id>> cands) {
    tokens_.build(cands);
    std::size_t longest = 0;
    for (std::size_t c = 0; c < tokens_.size(); ++c) longest = std::max(longest, tokens_.of(c).size());
    slot_.assign(tokens_.distinct, none32);
    masks_.assign(longest * words_for(longest), 0);
    v_.assign(words_for(longest), 0);
    row_ = none;
  }

  [[nodiscard]] utility_pair pair(std::size_t i, std::size_t j) noexcept {
    if (i != row_) load(i);
    const std::size_t li = tokens_.of(i).size(), lj = tokens_.of(j).size();
    if (li == 0 || lj == 0) {
      const double u = li == lj ? 1.0 : 0.0;
      return {u, u};
    }
    const double lcs = static_cast<double>(lcs_with_row(j));
    const double pi = lcs / static_cast<double>(li), pj = lcs / static_cast<double>(lj);
    // hyp i / ref j: P = lcs/li, R = lcs/lj; the other direction swaps them.
    return {detail::f_beta(pi, pj, b2_), detail::f_beta(pj, pi, b2_)};
  }

  /// LCS length of candidates i and j (for tests and other utilities).
  [[nodiscard]] std::size_t lcs(std::size_t i, std::size_t j) noexcept {
    if (i != row_) load(i);
    return tokens_.of(i).empty() || tokens_.of(j).empty() ? 0 : lcs_with_row(j);
  }

  [[nodiscard]] std::string_view name() const noexcept { return "rouge_l"; }

 private:
  static constexpr std::size_t none = static_cast<std::size_t>(-1);
  static constexpr std::uint32_t none32 = static_cast<std::uint32_t>(-1);
  static std::size_t words_for(std::size_t n) noexcept { return (n + 63) / 64; }

  // Expands candidate i (the LCS's "row" string A): each distinct token gets a slot holding the
  // bit mask of its positions in A.
  void load(std::size_t i) noexcept {
    if (row_ != none)
      for (std::uint32_t id : tokens_.of(row_)) slot_[id] = none32;
    const auto a = tokens_.of(i);
    words_ = words_for(a.size());
    std::uint32_t slots = 0;
    for (std::size_t p = 0; p < a.size(); ++p) {
      if (slot_[a[p]] == none32) {
        slot_[a[p]] = slots++;
        std::fill_n(masks_.begin() + static_cast<std::ptrdiff_t>(slot_[a[p]] * words_), words_, 0);
      }
      masks_[slot_[a[p]] * words_ + p / 64] |= std::uint64_t{1} << (p % 64);
    }
    row_ = i;
  }

  // V starts all ones; for each token b of B with match mask M: V = (V + (V & M)) | (V & ~M),
  // carries running from the low word up. LCS = zeros among A's |A| bits.
  std::size_t lcs_with_row(std::size_t j) noexcept {
    const std::size_t la = tokens_.of(row_).size(), w = words_;
    std::uint64_t* v = v_.data();
    std::fill_n(v, w, ~std::uint64_t{0});
    for (std::uint32_t id : tokens_.of(j)) {
      const std::uint32_t s = slot_[id];
      if (s == none32) continue;  // M = 0 leaves V unchanged
      const std::uint64_t* m = masks_.data() + s * w;
      if (w == 1) {
        const std::uint64_t u = v[0] & m[0];
        v[0] = (v[0] + u) | (v[0] & ~m[0]);
        continue;
      }
      std::uint64_t carry = 0;
      for (std::size_t k = 0; k < w; ++k) {
        const std::uint64_t old = v[k], u = old & m[k];
        const std::uint64_t sum1 = old + u;
        const std::uint64_t sum = sum1 + carry;
        carry = static_cast<std::uint64_t>(sum1 < old) | static_cast<std::uint64_t>(sum < sum1);
        v[k] = sum | (old & ~m[k]);
      }
    }
    std::size_t ones = 0;
    for (std::size_t k = 0; k + 1 < w; ++k) ones += static_cast<std::size_t>(std::popcount(v[k]));
    const std::size_t tail = la - 64 * (w - 1);
    const std::uint64_t last = tail == 64 ? v[w - 1] : v[w - 1] & ((std::uint64_t{1} << tail) - 1);
    ones += static_cast<std::size_t>(std::popcount(last));
    return la - ones;
  }

  double b2_;
  detail::dense_tokens tokens_;
  std::vector<std::uint32_t> slot_;   // dense id -> slot of the row candidate, or none32
  std::vector<std::uint64_t> masks_;  // slot * words_ + word
  std::vector<std::uint64_t> v_;
  std::size_t words_ = 0;
  std::size_t row_ = none;
};

namespace detail {

/// Appends the code points of UTF-8 `s` to `out`, skipping Python's `str.split()` whitespace.
/// A byte that does not start a valid sequence becomes one code point 0xDC00 + byte (as
/// Python's surrogateescape), so nothing is dropped.
inline void utf8_nonspace_code_points(std::string_view s, std::vector<char32_t>& out) {
  const auto space = [](char32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
  };
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char b = p[i];
    char32_t c = 0;
    std::size_t len = 0;
    if (b < 0x80) {
      c = b;
      len = 1;
    } else if (b >= 0xC2 && b <= 0xDF) {
      c = b & 0x1F;
      len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      c = b & 0x0F;
      len = 3;
    } else if (b >= 0xF0 && b <= 0xF4) {
      c = b & 0x07;
      len = 4;
    }
    bool ok = len > 0 && i + len <= n;
    for (std::size_t k = 1; ok && k < len; ++k) {
      ok = (p[i + k] & 0xC0) == 0x80;
      c = (c << 6) | (p[i + k] & 0x3F);
    }
    // Reject overlong forms, surrogates and values above U+10FFFF.
    if (ok && ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10FFFF)) || (c >= 0xD800 && c <= 0xDFFF)))
      ok = false;
    if (!ok) {
      c = 0xDC00 + b;
      len = 1;
    }
    if (!space(c)) out.push_back(c);
    i += len;
  }
}

}  // namespace detail

/// chrF on decoded text, sacreBLEU's sentence chrF on a 0..1 scale (see the file comment).
/// `detok(tokens) -> std::string` (UTF-8) is the caller's detokenizer.
template <class Detok>
class chrf {
 public:
  static constexpr std::size_t max_order = 6;

  /// Preconditions checked: 1 <= char_order <= 6, beta finite and > 0.
  explicit chrf(Detok detok, std::size_t char_order = 6, double beta = 2.0)
      : detok_(std::move(detok)), order_(char_order), b2_(beta * beta) {
    if (char_order == 0 || char_order > max_order)
      throw invalid_option("itscale: chrf char_order must be in [1, 6], got " + std::to_string(char_order));
    if (!(beta > 0) || !std::isfinite(beta)) throw invalid_option("itscale: chrf beta must be finite and > 0, got " + detail::num(beta));
  }

  void prepare(std::span<const std::span<const token_id>> cands) {
    detail::flat_id_map<ngram_key, ngram_hash> ids;
    ids.reset(1024);
    std::vector<char32_t> cps;
    std::vector<std::uint32_t> grams, tally;
    entries_.clear();
    offset_.assign(1, 0);
    totals_.assign(cands.size() * order_, 0);
    for (std::size_t c = 0; c < cands.size(); ++c) {
      const std::string text = detok_(cands[c]);
      cps.clear();
      detail::utf8_nonspace_code_points(text, cps);
      for (std::size_t n = 1; n <= order_; ++n) {
        grams.clear();
        for (std::size_t s = 0; s + n <= cps.size(); ++s) {
          // Exact key: up to 6 code points + 1 (21 bits each, 0 = absent), three per word.
          ngram_key k{0, 0};
          for (std::size_t q = 0; q < n; ++q) {
            const std::uint64_t v = static_cast<std::uint64_t>(cps[s + q]) + 1;
            if (q < 3) k.lo |= v << (21 * q);
            else k.hi |= v << (21 * (q - 3));
          }
          grams.push_back(ids.id(k));
        }
        totals_[c * order_ + n - 1] = grams.size();
        // Distinct ids with their counts, in order of first appearance (no sort: the pair loop
        // reads them in any order).
        if (tally.size() < ids.size()) tally.resize(2 * ids.size(), 0);
        const std::size_t first = entries_.size();
        for (std::uint32_t g : grams)
          if (tally[g]++ == 0) entries_.push_back({g, 0});
        for (std::size_t k = first; k < entries_.size(); ++k) {
          entries_[k].count = tally[entries_[k].id];
          tally[entries_[k].id] = 0;
        }
        offset_.push_back(entries_.size());
      }
    }
    count_.assign(ids.size(), 0);
    row_ = none;
  }

  [[nodiscard]] utility_pair pair(std::size_t i, std::size_t j) noexcept {
    if (i != row_) load(i);
    double prec_ij = 0, rec_ij = 0, prec_ji = 0, rec_ji = 0;
    std::size_t eff = 0;
    for (std::size_t n = 0; n < order_; ++n) {
      std::uint64_t match = 0;
      const std::size_t b = offset_[j * order_ + n], e = offset_[j * order_ + n + 1];
      for (std::size_t k = b; k < e; ++k) match += std::min(count_[entries_[k].id], entries_[k].count);
      const std::size_t ti = totals_[i * order_ + n], tj = totals_[j * order_ + n];
      // sacreBLEU counts an order only where both sides have n-grams (its effective order); then
      // precision and recall of one direction are recall and precision of the other.
      if (ti > 0 && tj > 0) {
        const double m = static_cast<double>(match);
        prec_ij += m / static_cast<double>(ti);
        rec_ij += m / static_cast<double>(tj);
        ++eff;
      }
    }
    if (eff == 0) return {0.0, 0.0};
    prec_ij /= static_cast<double>(eff);
    rec_ij /= static_cast<double>(eff);
    prec_ji = rec_ij;
    rec_ji = prec_ij;
    return {detail::f_beta(prec_ij, rec_ij, b2_), detail::f_beta(prec_ji, rec_ji, b2_)};
  }

  [[nodiscard]] std::string_view name() const noexcept { return "chrf"; }

 private:
  static constexpr std::size_t none = static_cast<std::size_t>(-1);
  struct ngram_key {
    std::uint64_t lo, hi;
    bool operator==(const ngram_key&) const = default;
  };
  struct ngram_hash {
    std::size_t operator()(const ngram_key& k) const noexcept {
      // murmur3's 64-bit finaliser over both words: linear probing needs every bit mixed.
      std::uint64_t x = k.lo ^ (k.hi * 0xC2B2AE3D27D4EB4Full);
      x ^= x >> 33;
      x *= 0xFF51AFD7ED558CCDull;
      x ^= x >> 33;
      x *= 0xC4CEB9FE1A85EC53ull;
      return static_cast<std::size_t>(x ^ (x >> 33));
    }
  };
  void load(std::size_t i) noexcept {
    if (row_ != none)
      for (std::size_t k = offset_[row_ * order_]; k < offset_[(row_ + 1) * order_]; ++k) count_[entries_[k].id] = 0;
    for (std::size_t k = offset_[i * order_]; k < offset_[(i + 1) * order_]; ++k) count_[entries_[k].id] = entries_[k].count;
    row_ = i;
  }

  Detok detok_;
  std::size_t order_;
  double b2_;
  std::vector<detail::bag_entry> entries_;  // per candidate and order: distinct n-gram ids with counts
  std::vector<std::size_t> offset_;         // (candidate * order_ + n) -> first entry
  std::vector<std::size_t> totals_;         // (candidate * order_ + n) -> number of n-grams
  std::vector<std::uint32_t> count_;        // the row candidate's counts over n-gram ids
  std::size_t row_ = none;
};

/// Builds a `chrf` utility.
template <class Detok>
[[nodiscard]] chrf<std::decay_t<Detok>> make_chrf(Detok&& detok, std::size_t char_order = 6, double beta = 2.0) {
  return chrf<std::decay_t<Detok>>(std::forward<Detok>(detok), char_order, beta);
}

/// A utility from `f(hyp, ref) -> double` on token spans; `symmetric` (u(a, b) = u(b, a)) halves
/// the calls.
template <class F>
class function_utility {
 public:
  function_utility(F f, bool symmetric, std::string name = "function_utility")
      : f_(std::move(f)), symmetric_(symmetric), name_(std::move(name)) {}
  void prepare(std::span<const std::span<const token_id>> cands) { cands_.assign(cands.begin(), cands.end()); }
  [[nodiscard]] utility_pair pair(std::size_t i, std::size_t j) {
    const double a = static_cast<double>(f_(cands_[i], cands_[j]));
    if (symmetric_ || i == j) return {a, a};
    return {a, static_cast<double>(f_(cands_[j], cands_[i]))};
  }
  [[nodiscard]] std::string_view name() const noexcept { return name_; }

 private:
  F f_;
  bool symmetric_;
  std::string name_;
  std::vector<std::span<const token_id>> cands_;
};

/// Builds a `function_utility`.
template <class F>
[[nodiscard]] function_utility<std::decay_t<F>> make_utility(F&& f, bool symmetric, std::string name = "function_utility") {
  return function_utility<std::decay_t<F>>(std::forward<F>(f), symmetric, std::move(name));
}

ITSCALE_END_NAMESPACE
