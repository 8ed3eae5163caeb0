#pragma once
/// \file chain.hpp
/// A compile-time chain of processors, applied left to right. The chain is itself a stateful
/// processor whose state is the tuple of its members' states, so it nests and forks like one.
///
///     auto chain = itscale::make_chain(itscale::temperature(0.8f), itscale::top_k_filter(40));

#include <cstddef>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>

#include "itscale/core/abi.hpp"
#include "itscale/processors/processor.hpp"

ITSCALE_BEGIN_NAMESPACE

namespace detail {
/// The state a chain keeps for processor P: its own state, or nothing for a stateless one.
struct no_state {};
template <class P>
struct state_of {
  using type = no_state;
};
template <StatefulLogitsProcessor P>
struct state_of<P> {
  using type = typename P::state_type;
};
}  // namespace detail

/// Applies `Ps...` in order. Models `StatefulLogitsProcessor`.
template <AnyLogitsProcessor... Ps>
class processor_chain {
 public:
  using state_type = std::tuple<typename detail::state_of<Ps>::type...>;

  explicit processor_chain(Ps... ps) : ps_(std::move(ps)...) {}

  [[nodiscard]] state_type start(std::span<const token_id> prompt) const {
    return start_impl(prompt, std::index_sequence_for<Ps...>{});
  }

  void advance(state_type& st, token_id t) const {
    each([&]<std::size_t I>(std::integral_constant<std::size_t, I>) {
      using P = std::tuple_element_t<I, std::tuple<Ps...>>;
      if constexpr (StatefulLogitsProcessor<P>) std::get<I>(ps_).advance(std::get<I>(st), t);
    });
  }

  void apply(std::span<float> row, const step_context& ctx, const state_type& st) const {
    each([&]<std::size_t I>(std::integral_constant<std::size_t, I>) {
      using P = std::tuple_element_t<I, std::tuple<Ps...>>;
      if constexpr (StatefulLogitsProcessor<P>)
        std::get<I>(ps_).apply(row, ctx, std::get<I>(st));
      else
        std::get<I>(ps_).apply(row, ctx);
    });
  }

  /// The I-th processor.
  template <std::size_t I>
  [[nodiscard]] const auto& get() const noexcept {
    return std::get<I>(ps_);
  }

 private:
  template <std::size_t... I>
  state_type start_impl(std::span<const token_id> prompt, std::index_sequence<I...>) const {
    return state_type{start_one<I>(prompt)...};
  }

  template <std::size_t I>
  auto start_one(std::span<const token_id> prompt) const {
    using P = std::tuple_element_t<I, std::tuple<Ps...>>;
    if constexpr (StatefulLogitsProcessor<P>)
      return std::get<I>(ps_).start(prompt);
    else
      return detail::no_state{};
  }

  template <class F>
  void each(F&& f) const {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (f(std::integral_constant<std::size_t, I>{}), ...);
    }(std::index_sequence_for<Ps...>{});
  }

  std::tuple<Ps...> ps_;
};

/// Builds a `processor_chain` from processors (copied or moved in).
/// Constrained on the decayed types: for an lvalue argument `Ps` is a reference, which has no
/// `state_type`, so constraining `Ps` itself would reject lvalue stateful processors.
template <class... Ps>
  requires(AnyLogitsProcessor<std::decay_t<Ps>> && ...)
[[nodiscard]] processor_chain<std::decay_t<Ps>...> make_chain(Ps&&... ps) {
  return processor_chain<std::decay_t<Ps>...>(std::forward<Ps>(ps)...);
}

static_assert(StatefulLogitsProcessor<processor_chain<logits_processor_archetype,
                                                      stateful_logits_processor_archetype>>);

ITSCALE_END_NAMESPACE
