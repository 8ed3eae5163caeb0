#pragma once
/// \file member_set.hpp
/// Internal machinery of the combinator sources (ensemble_source.hpp, contrastive_source.hpp,
/// cfg_source.hpp): the member sources they combine, the table of their own handles, and the
/// row helpers they share.
///
/// A member type `M` is either an object type (the combinator owns the member, moved in) or an
/// lvalue reference (the combinator borrows it; it must outlive the combinator). Two members may be
/// the same object: every member call is followed by reading that member's rows before the next
/// member is called, because a member's `logits()` view is only valid until its next call.

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <limits>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/detail/validate_tokens.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/softmax.hpp"

ITSCALE_BEGIN_NAMESPACE

/// A type a combinator can hold as a member: a `LogitSource` object type (owned) or a non-const
/// lvalue reference to one (borrowed).
template <class M>
concept CombinatorMember =
    LogitSource<std::remove_cvref_t<M>> && !std::is_const_v<std::remove_reference_t<M>> &&
    (std::is_lvalue_reference_v<M> || (std::is_object_v<M> && std::is_move_constructible_v<M>));

namespace detail {

/// The source type behind a member type.
template <class M>
using member_source_t = std::remove_cvref_t<M>;

/// The smallest float probability is 2^-149: log-probs of -inf that a combinator must *subtract*
/// (an amateur's, or the unconditional sequence's when guidance is above 1) are raised to this
/// value, so a token one member masks gets a large finite bonus instead of +inf.
inline const float min_subtracted_logprob = std::log(std::numeric_limits<float>::denorm_min());

/// `out = log_softmax(in)`, or all `-inf` when every entry of `in` is `-inf` (the kernel's
/// precondition excludes that row; a member may return it).
inline void log_softmax_or_masked(std::span<const float> in, std::span<float> out) noexcept {
  if (kernels::max(in) == masked_logit) {
    for (float& x : out) x = masked_logit;
    return;
  }
  kernels::log_softmax(in, out);
}

/// Throws `backend_error` naming the combinator and the member unless `v` is `rows x vocab` with
/// no NaN or +inf.
inline void check_member_rows(const logits_view& v, std::size_t rows, std::size_t vocab, const char* who,
                              const std::string& member) {
  if (v.rows != rows || v.vocab != vocab || (rows > 0 && v.data == nullptr))
    throw backend_error(std::string("itscale: ") + who + ": " + member + " returned a " + std::to_string(v.rows) +
                        " x " + std::to_string(v.vocab) + " logits view, expected " + std::to_string(rows) + " x " +
                        std::to_string(vocab));
  for (std::size_t r = 0; r < rows; ++r) {
    const auto row = v.row(r);
    const std::size_t bad = kernels::find_invalid(row);
    if (bad != kernels::npos)
      throw backend_error(std::string("itscale: ") + who + ": " + member + " returned " +
                          (std::isnan(row[bad]) ? "NaN" : "+inf") + " for token " + std::to_string(bad) +
                          " in row " + std::to_string(r));
  }
}

/// The combinator's own handles: slot indices into a table of per-handle entries (the members'
/// handles). Released slots are reused. After `reserve(n)`, `n` acquisitions cannot throw, and
/// `take` never throws.
template <class Entry>
class handle_table {
 public:
  using handle = std::uint32_t;

  void reserve(std::size_t n) {
    const std::size_t want = slots_.size() + n;
    slots_.reserve(want);
    live_.reserve(want);
    free_.reserve(want);
  }

  handle acquire(const Entry& e) noexcept {
    ++count_;
    if (!free_.empty()) {
      const handle h = free_.back();
      free_.pop_back();
      slots_[h] = e;
      live_[h] = 1;
      return h;
    }
    slots_.push_back(e);  // capacity reserved: no reallocation
    live_.push_back(1);
    return static_cast<handle>(slots_.size() - 1);
  }

  /// The entry of a live handle; `invalid_input` naming `who` for a dead or unknown one.
  [[nodiscard]] const Entry& at(handle h, const char* who) const {
    if (h >= slots_.size() || !live_[h])
      throw invalid_input(std::string("itscale: ") + who + ": handle " + std::to_string(h) +
                          " is not live (released or never created)");
    return slots_[h];
  }

  /// Marks `h` released and writes its entry to `out`; false (and nothing changes) if `h` is not
  /// live.
  bool take(handle h, Entry& out) noexcept {
    if (h >= slots_.size() || !live_[h]) return false;
    out = slots_[h];
    live_[h] = 0;
    --count_;
    free_.push_back(h);  // capacity reserved for every slot: cannot throw
    return true;
  }

  /// Calls `f(entry)` for every live handle and forgets them all.
  template <class F>
  void drain(F&& f) noexcept {
    for (std::size_t h = 0; h < slots_.size(); ++h)
      if (live_[h]) f(slots_[h]);
    slots_.clear();
    live_.clear();
    free_.clear();
    count_ = 0;
  }

  [[nodiscard]] std::size_t size() const noexcept { return count_; }

 private:
  std::vector<Entry> slots_;
  std::vector<unsigned char> live_;
  std::vector<handle> free_;
  std::size_t count_ = 0;
};

/// The members of an ensemble-like combinator (one handle per member per sequence) and the
/// all-or-nothing protocol of calling them in turn.
template <class... Ms>
class member_set {
 public:
  static constexpr std::size_t size = sizeof...(Ms);
  /// One handle per member: what one combinator handle stands for.
  using handles = std::tuple<handle_t<member_source_t<Ms>>...>;

  template <class... Args>
  explicit member_set(Args&&... ms) : members_(std::forward<Args>(ms)...) {}

  member_set(member_set&&) = default;
  member_set& operator=(member_set&&) = delete;
  member_set(const member_set&) = delete;
  member_set& operator=(const member_set&) = delete;

  template <std::size_t K>
  [[nodiscard]] member_source_t<std::tuple_element_t<K, std::tuple<Ms...>>>& get() noexcept {
    return std::get<K>(members_);
  }
  template <std::size_t K>
  [[nodiscard]] const member_source_t<std::tuple_element_t<K, std::tuple<Ms...>>>& get() const noexcept {
    return std::get<K>(members_);
  }

  /// The vocabulary sizes of the members, in order.
  [[nodiscard]] std::vector<std::size_t> vocab_sizes() const {
    return std::apply([](const auto&... m) { return std::vector<std::size_t>{m.vocab_size()...}; }, members_);
  }

  /// Calls each member in turn: `invoke(member, std::integral_constant<K>, out)` makes the
  /// member's call, writing its `count` new handles to `out`; then the member's view is checked
  /// (`rows x vocab`, no NaN or +inf) and passed to `fold(K, view)` before the next member runs.
  /// If any step throws, the handles the earlier members (and this one) created are released and
  /// the exception propagates: no member is left with a new handle.
  /// Afterwards `fresh<K>()[i]` holds member K's i-th new handle.
  template <class Invoke, class Fold>
  void call_all(std::size_t count, std::size_t rows, std::size_t vocab, const char* who, Invoke&& invoke,
                Fold&& fold) {
    std::apply([count](auto&... v) { (v.resize(count), ...); }, fresh_);
    std::size_t made = 0;  // members whose new handles exist
    try {
      [&]<std::size_t... K>(std::index_sequence<K...>) {
        (
            [&] {
              auto& m = std::get<K>(members_);
              auto& out = std::get<K>(fresh_);
              invoke(m, std::integral_constant<std::size_t, K>{}, std::span(out));
              ++made;
              const logits_view v = m.logits();
              check_member_rows(v, rows, vocab, who, "member " + std::to_string(K));
              fold(K, v);
            }(),
            ...);
      }(std::index_sequence_for<Ms...>{});
    } catch (...) {
      release_fresh(made, count);
      throw;
    }
  }

  /// Member K's handles created by the last `call_all`.
  template <std::size_t K>
  [[nodiscard]] auto& fresh() noexcept {
    return std::get<K>(fresh_);
  }

  /// The i-th combined handle tuple of the last `call_all`.
  [[nodiscard]] handles fresh_tuple(std::size_t i) const noexcept {
    return std::apply([i](const auto&... v) { return handles{v[i]...}; }, fresh_);
  }

  /// Member K's handles of `parents`, gathered into scratch (per member, reused across calls).
  template <std::size_t K>
  [[nodiscard]] auto& parents() noexcept {
    return std::get<K>(parents_);
  }

  void release(const handles& hs) noexcept {
    [&]<std::size_t... K>(std::index_sequence<K...>) {
      (std::get<K>(members_).release(std::get<K>(hs)), ...);
    }(std::index_sequence_for<Ms...>{});
  }

 private:
  // Releases the first `made` members' `count` new handles (after a failed call).
  void release_fresh(std::size_t made, std::size_t count) noexcept {
    [&]<std::size_t... K>(std::index_sequence<K...>) {
      (
          [&] {
            if (K < made)
              for (std::size_t i = 0; i < count; ++i) std::get<K>(members_).release(std::get<K>(fresh_)[i]);
          }(),
          ...);
    }(std::index_sequence_for<Ms...>{});
  }

  std::tuple<Ms...> members_;
  std::tuple<std::vector<handle_t<member_source_t<Ms>>>...> fresh_;
  std::tuple<std::vector<handle_t<member_source_t<Ms>>>...> parents_;
};

/// The `LogitSource` shell of an ensemble-like combinator (ensemble_source, contrastive_source):
/// its handles stand for one handle per member, created and released together; each call on it is
/// one call per member; its rows are computed by `Derived` from the members' rows:
/// - `begin_rows(out, n)`: prepares for `n` output rows (before any member call; may throw);
/// - `fold(k, view, out)`: reads member k's rows right after its call (`noexcept`);
/// - `finish(out, n)`: completes the output rows once every member has run (`noexcept`).
template <class Derived, class... Ms>
class combined_source {
 public:
  using handle = std::uint32_t;

  [[nodiscard]] std::size_t vocab_size() const noexcept { return vocab_; }

  /// One `prefill` per member. `invalid_input` for an empty prompt or a token outside the
  /// vocabulary; all-or-nothing.
  handle prefill(std::span<const token_id> prompt) {
    if (prompt.empty()) throw invalid_input(std::string("itscale: ") + Derived::name + ": prefill needs a non-empty prompt");
    check_tokens(prompt, vocab_, "prompt");
    begin(1, 1);
    set_.call_all(1, 1, vocab_, Derived::name, [&](auto& m, auto, auto out) { out[0] = m.prefill(prompt); },
                  folder());
    return done(1, 1)[0];
  }

  /// One batched `extend` per member, with the members' handles of `parents`. All-or-nothing: if a
  /// member throws or returns NaN / +inf (`backend_error`), the new handles of the members called
  /// before it are released.
  void extend(std::span<const handle> parents, std::span<const token_id> tokens, std::span<handle> children) {
    check_extend_shape(parents.size(), tokens.size(), children.size());
    check_tokens(tokens, vocab_, "tokens");
    const std::size_t n = parents.size();
    gather(parents, std::index_sequence_for<Ms...>{});
    begin(n, n);
    set_.call_all(
        n, n, vocab_, Derived::name,
        [&](auto& m, auto k, auto out) { m.extend(set_.template parents<decltype(k)::value>(), tokens, out); },
        folder());
    const auto made = done(n, n);
    for (std::size_t i = 0; i < n; ++i) children[i] = made[i];
  }

  /// Teacher forcing, when every member can: one `extend_span` per member; `logits()` then shows
  /// one row per prefix (`tokens.size()` rows). All-or-nothing as `extend`.
  handle extend_span(handle parent, std::span<const token_id> tokens)
    requires(ScoringLogitSource<member_source_t<Ms>> && ...)
  {
    if (tokens.empty())
      throw invalid_input(std::string("itscale: ") + Derived::name + ": extend_span needs at least one token");
    check_tokens(tokens, vocab_, "tokens");
    const typename member_set<Ms...>::handles from = table_.at(parent, Derived::name);
    const std::size_t n = tokens.size();
    begin(1, n);
    set_.call_all(
        1, n, vocab_, Derived::name,
        [&](auto& m, auto k, auto out) { out[0] = m.extend_span(std::get<decltype(k)::value>(from), tokens); },
        folder());
    return done(1, n)[0];
  }

  /// The combined rows of the last call (valid until the next `prefill` / `extend`).
  [[nodiscard]] logits_view logits() noexcept { return {out_.data(), rows_, vocab_}; }

  /// Releases the members' handles of `h` (a dead or unknown handle is ignored).
  void release(handle h) noexcept {
    typename member_set<Ms...>::handles e{};
    if (table_.take(h, e)) set_.release(e);
  }

  /// Number of live handles of the combinator (each holds one handle per member).
  [[nodiscard]] std::size_t live_handles() const noexcept { return table_.size(); }

  /// The limits, when a member declares some: the shortest `max_context` of the members (the
  /// sequences of every member have the combinator's length), and the fewest handles any member
  /// object can hold, divided by the number of members that are that same object.
  [[nodiscard]] source_capacity capacity() const noexcept
    requires(SourceWithCapacity<member_source_t<Ms>> || ...)
  {
    return capacity_;
  }

  /// Member `K` (in construction order).
  template <std::size_t K>
  [[nodiscard]] auto& member() noexcept {
    return set_.template get<K>();
  }
  template <std::size_t K>
  [[nodiscard]] const auto& member() const noexcept {
    return set_.template get<K>();
  }

 protected:
  /// Checks that every member has the first member's vocabulary (`invalid_input` otherwise).
  template <class... Args>
  explicit combined_source(Args&&... ms) : set_(std::forward<Args>(ms)...) {
    const std::vector<std::size_t> v = set_.vocab_sizes();
    for (std::size_t k = 1; k < v.size(); ++k)
      if (v[k] != v[0])
        throw invalid_input(std::string("itscale: ") + Derived::name + ": member " + std::to_string(k) +
                            " has vocab size " + std::to_string(v[k]) + ", member 0 has " + std::to_string(v[0]) +
                            ": members must share one vocabulary");
    vocab_ = v[0];
    capacity_ = combined_capacity(std::index_sequence_for<Ms...>{});
  }
  combined_source(combined_source&& o) noexcept(std::is_nothrow_move_constructible_v<member_set<Ms...>>)
      : set_(std::move(o.set_)), table_(std::exchange(o.table_, {})), out_(std::move(o.out_)),
        rows_(std::exchange(o.rows_, 0)), vocab_(o.vocab_), capacity_(o.capacity_) {}
  combined_source& operator=(combined_source&&) = delete;
  /// Releases the members' handles of every handle still live.
  ~combined_source() {
    table_.drain([this](const typename member_set<Ms...>::handles& e) { set_.release(e); });
  }

 private:
  Derived& self() noexcept { return static_cast<Derived&>(*this); }

  template <std::size_t... K>
  source_capacity combined_capacity(std::index_sequence<K...>) const {
    const void* object[] = {static_cast<const void*>(std::addressof(set_.template get<K>()))...};
    const source_capacity caps[] = {capacity_of(set_.template get<K>())...};
    source_capacity out{};
    const auto tighter = [](std::size_t& limit, std::size_t v) {
      if (v != 0 && (limit == 0 || v < limit)) limit = v;
    };
    for (std::size_t k = 0; k < sizeof...(K); ++k) {
      tighter(out.max_context, caps[k].max_context);
      if (caps[k].max_live_sequences == 0) continue;
      std::size_t same = 0;  // members that are this very object: each combinator handle takes one each
      for (std::size_t j = 0; j < sizeof...(K); ++j) same += object[j] == object[k] ? 1u : 0u;
      if (caps[k].max_live_sequences < same)
        throw invalid_input(std::string("itscale: ") + Derived::name + ": member " + std::to_string(k) + " holds " +
                            std::to_string(caps[k].max_live_sequences) + " live sequences, fewer than the " +
                            std::to_string(same) + " each combinator handle needs of it");
      tighter(out.max_live_sequences, caps[k].max_live_sequences / same);
    }
    return out;
  }

  template <std::size_t... K>
  void gather(std::span<const handle> parents, std::index_sequence<K...>) {
    (set_.template parents<K>().resize(parents.size()), ...);
    for (std::size_t i = 0; i < parents.size(); ++i) {
      const auto& e = table_.at(parents[i], Derived::name);  // a dead parent throws before any member call
      ((set_.template parents<K>()[i] = std::get<K>(e)), ...);
    }
  }

  // Everything that can throw before the members are called: room for `count` new handles and
  // `rows` output rows.
  void begin(std::size_t count, std::size_t rows) {
    table_.reserve(count);
    made_.reserve(count);
    out_.resize(rows * vocab_);
    rows_ = 0;
    self().begin_rows(std::span<float>(out_), rows);
  }

  auto folder() {
    return [this](std::size_t k, const logits_view& v) { self().fold(k, v, std::span<float>(out_)); };
  }

  // Completes the rows and registers the `count` new handle tuples (nothing here can throw).
  std::span<const handle> done(std::size_t count, std::size_t rows) noexcept {
    self().finish(std::span<float>(out_), rows);
    rows_ = rows;
    made_.clear();  // capacity reserved by begin: no reallocation
    for (std::size_t i = 0; i < count; ++i) made_.push_back(table_.acquire(set_.fresh_tuple(i)));
    return made_;
  }

  member_set<Ms...> set_;
  handle_table<typename member_set<Ms...>::handles> table_;
  std::vector<float> out_;
  std::vector<handle> made_;
  std::size_t rows_ = 0;
  std::size_t vocab_ = 0;
  source_capacity capacity_{};
};

}  // namespace detail
ITSCALE_END_NAMESPACE
