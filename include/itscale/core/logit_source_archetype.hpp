#pragma once
/// \file logit_source_archetype.hpp
/// The smallest types that model `LogitSource` and each of its refinements. Algorithms are
/// instantiated with them in the tests, which proves they use nothing beyond the concept (or the
/// capability they detect). They are not meant to be run.

#include <cstddef>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/core/logit_source.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Models exactly `LogitSource` and nothing more.
class logit_source_archetype {
 public:
  /// Handles are opaque values; an enum class keeps algorithms from doing arithmetic on them.
  enum class handle : unsigned {};

  [[nodiscard]] std::size_t vocab_size() const noexcept { return 1; }
  handle prefill(std::span<const token_id>) { return handle{}; }
  void extend(std::span<const handle>, std::span<const token_id>, std::span<handle>) {}
  /// One row of one logit: a real address, so optimisers see no null copy source in the
  /// algorithms it is instantiated with.
  [[nodiscard]] logits_view logits() { return {&row_, 1, 1}; }
  void release(handle) noexcept {}

 private:
  float row_ = 0;
};

static_assert(LogitSource<logit_source_archetype>);
static_assert(!ScoringLogitSource<logit_source_archetype>);
static_assert(!SourceWithCapacity<logit_source_archetype>);

/// Models exactly `ScoringLogitSource`: `LogitSource` plus `extend_span`.
class scoring_logit_source_archetype : public logit_source_archetype {
 public:
  handle extend_span(handle, std::span<const token_id>) { return handle{}; }
};

static_assert(ScoringLogitSource<scoring_logit_source_archetype>);
static_assert(!SourceWithCapacity<scoring_logit_source_archetype>);

/// Models exactly `SourceWithCapacity`: `LogitSource` plus `capacity()`.
class logit_source_with_capacity_archetype : public logit_source_archetype {
 public:
  [[nodiscard]] source_capacity capacity() const noexcept { return {}; }
};

static_assert(SourceWithCapacity<logit_source_with_capacity_archetype>);
static_assert(!ScoringLogitSource<logit_source_with_capacity_archetype>);

ITSCALE_END_NAMESPACE
