#pragma once
/// \file generation.hpp
/// What the token-level decoders take besides their options (`run_options`) and what they return
/// (`decode_result`). The sequence type itself, `generation`, is shared with every search
/// (core/sequence.hpp).

#include <cstddef>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/live.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/sequence.hpp"

ITSCALE_BEGIN_NAMESPACE

/// How a run is driven, for every decoder: budget and cancellation, streaming, and whether the
/// live state of each finished sequence is handed back.
struct run_options {
  compute_budget budget = {};  ///< checked between steps; see `compute_budget`
  token_callback on_token = {};
  /// Hand back each sequence that ended by EOS, stop sequence or length as a `prefilled` state
  /// (handle + tokens + next-token row) in `decode_result::live`: costs one more batched row per
  /// such sequence, taken in the same `extend` as the step's other children. A tree search
  /// continues from these without evaluating the prefix again. Sequences cut by the budget get
  /// none.
  bool keep_handles = false;
};

/// What `generate` returns: the sequences (ordered by request, then sample), the compute spent
/// and how the run ended. Iterates like the vector of sequences.
template <LogitSource S>
struct decode_result {
  std::vector<generation> sequences;
  std::vector<prefilled<S>> live;  ///< with `keep_handles`: `live[i]` belongs to `sequences[i]` (empty handle if none)
  compute_stats compute;
  run_status status = run_status::completed;

  [[nodiscard]] std::size_t size() const noexcept { return sequences.size(); }
  [[nodiscard]] bool empty() const noexcept { return sequences.empty(); }
  [[nodiscard]] const generation& operator[](std::size_t i) const noexcept { return sequences[i]; }
  [[nodiscard]] generation& operator[](std::size_t i) noexcept { return sequences[i]; }
  [[nodiscard]] const generation& front() const noexcept { return sequences.front(); }
  [[nodiscard]] const generation& back() const noexcept { return sequences.back(); }
  [[nodiscard]] auto begin() const noexcept { return sequences.begin(); }
  [[nodiscard]] auto end() const noexcept { return sequences.end(); }
  [[nodiscard]] auto begin() noexcept { return sequences.begin(); }
  [[nodiscard]] auto end() noexcept { return sequences.end(); }
};

ITSCALE_END_NAMESPACE
