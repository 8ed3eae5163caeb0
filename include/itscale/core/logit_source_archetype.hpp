#pragma once
/// \file logit_source_archetype.hpp
/// The smallest type that models `LogitSource`. Algorithms are instantiated with it in the tests,
/// which proves they use nothing beyond the concept. It is not meant to be run.

#include <cstddef>
#include <span>

#include "itscale/core/logit_source.hpp"

namespace itscale {
inline namespace v0 {

/// Models exactly `LogitSource` and nothing more.
class logit_source_archetype {
 public:
  /// Handles are opaque values; an enum class keeps algorithms from doing arithmetic on them.
  enum class handle : unsigned {};

  [[nodiscard]] std::size_t vocab_size() const noexcept { return 1; }
  handle prefill(std::span<const token_id>) { return handle{}; }
  void extend(std::span<const handle>, std::span<const token_id>, std::span<handle>) {}
  [[nodiscard]] logits_view logits() { return {}; }
  void release(handle) noexcept {}
};

static_assert(LogitSource<logit_source_archetype>);

}  // namespace v0
}  // namespace itscale
