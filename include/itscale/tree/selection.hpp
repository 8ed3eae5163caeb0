#pragma once
/// \file selection.hpp
/// The formulas of tree search, as pure functions (tested against hand-computed numbers):
/// PUCT and UCT scores, the progressive-widening limit, and the stream key of a child node.

#include <cmath>
#include <cstdint>
#include <limits>

#include "itscale/core/abi.hpp"

ITSCALE_BEGIN_NAMESPACE

/// AlphaZero's exploration coefficient c(s) = log((1 + N + c_base) / c_base) + c_init, where N is
/// the parent's visit count (Silver et al. 2018, supplementary pseudo-code).
[[nodiscard]] inline double puct_coefficient(double n_parent, double c_init, double c_base) noexcept {
  return std::log((1.0 + n_parent + c_base) / c_base) + c_init;
}

/// PUCT: Q + c(s) · P · sqrt(N_parent) / (1 + N_child).
[[nodiscard]] inline double puct_score(double q, double prior, double n_parent, double n_child, double c_init,
                                       double c_base) noexcept {
  return q + puct_coefficient(n_parent, c_init, c_base) * prior * std::sqrt(n_parent) / (1.0 + n_child);
}

/// UCT (Kocsis & Szepesvári 2006): Q + c · sqrt(ln N_parent / N_child); +inf for an unvisited
/// child, so every child is tried once before any is tried twice. ln(N_parent) is taken as 0 for
/// N_parent < 1.
[[nodiscard]] inline double uct_score(double q, double n_parent, double n_child, double c) noexcept {
  if (!(n_child > 0)) return std::numeric_limits<double>::infinity();
  const double ln = n_parent > 1 ? std::log(n_parent) : 0.0;
  return q + c * std::sqrt(ln / n_child);
}

/// Progressive widening: a node visited `n` times may have ceil(c · n^alpha) children, and always
/// at least one (so a node can be expanded on its first visit). `c` = 0 means no widening: no limit.
[[nodiscard]] inline std::uint64_t widening_limit(double c, double alpha, std::uint64_t n) noexcept {
  if (c == 0) return std::numeric_limits<std::uint64_t>::max();
  const double w = std::ceil(c * std::pow(static_cast<double>(n), alpha));
  if (!(w >= 1)) return 1;
  if (w >= 1.8e19) return std::numeric_limits<std::uint64_t>::max();
  return static_cast<std::uint64_t>(w);
}

/// The random-stream key of the `index`-th distinct step proposed at a node with key `parent`.
/// Keys follow the path from the root, not the order in which nodes were created, so a node's
/// samples (and hence its whole subtree) do not depend on the search's visiting order or on how
/// many leaves a round batches (see mcts.hpp, "Determinism"). 32 bits: two nodes of a large tree
/// may share a key (about n^2 / 2^33 pairs for n nodes), which correlates their samples but
/// breaks nothing.
[[nodiscard]] constexpr std::uint32_t child_key(std::uint32_t parent, std::uint32_t index) noexcept {
  std::uint64_t x = (std::uint64_t{parent} << 32 | index) + 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return static_cast<std::uint32_t>(x ^ (x >> 32));
}

ITSCALE_END_NAMESPACE
