#pragma once
/// \file block_table_tree.hpp
/// Internal to paged_kv_cache.hpp: the block tables of forked sequences as a persistent tree, so
/// that a fork costs O(1) whatever the length of the sequence it forks.
///
/// A segment holds the entries [base, base + own.size()) of a table; the entries below `base` are
/// those of its parent chain. Each live sequence owns its tip segment alone and grows it at the
/// end; a fork hangs a new tip under the parent's tip, seeing the parent's first `base` entries.
/// Those entries are never modified again: a table only changes at its end (appends, and the
/// copy-on-write of its partial last block, which children hold in their own lists instead).
///
/// A segment lives while it is a tip or has children. Once it is no tip, it keeps only the entries
/// its last child sees (children are linked in fork order, so the last one has the largest base),
/// so every block held is visible to some live sequence and the memory accounting stays exact.
/// Lookups walk the chain; `flatten` turns a tip back into one full table when the chain gets deep.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

class block_table_tree {
 public:
  using id = std::uint32_t;
  static constexpr id none = UINT32_MAX;

  /// A new root tip with an empty table.
  id create() { return make(); }

  /// A new tip under the tip `parent`, seeing its first `base` entries, whose own list starts with
  /// `partial` unless it is `none` (the caller counts that holder in the block's references).
  /// Nothing changes on an exception.
  id fork(id parent, std::size_t base, std::uint32_t partial) {
    const id g = make();
    segment& c = segs_[g];
    if (partial != none) c.own.push_back(partial);  // capacity reserved by make
    c.base = base;
    c.depth = segs_[parent].depth + 1;
    link(parent, g);
    return g;
  }

  /// The tip `g` is no longer any sequence's: its blocks no longer visible to anyone are passed to
  /// `drop`, and segments left without tip and children are freed, up the chain.
  template <class Drop>
  void release_tip(id g, Drop&& drop) noexcept {
    segs_[g].tip = false;
    settle(g, drop);
  }

  /// Makes `g` (a tip) a root holding its whole table: the entries it inherited are passed to
  /// `bump` (one more holder) before the parent chain lets them go through `drop`. The table reads
  /// the same after; children of `g` are unaffected (they address entries by position). Nothing
  /// changes on an exception.
  template <class Bump, class Drop>
  void flatten(id g, Bump&& bump, Drop&& drop) {
    if (segs_[g].parent == none) {
      segs_[g].depth = 0;
      return;
    }
    std::vector<std::uint32_t> table(size(g));
    gather(g, table.data());
    segment& s = segs_[g];
    for (std::size_t i = 0; i < s.base; ++i) bump(table[i]);
    const id p = s.parent;
    unlink(g);
    s.own.swap(table);
    s.base = 0;
    s.depth = 0;
    settle(p, drop);
  }

  /// Entries of the table of the tip `g`.
  [[nodiscard]] std::size_t size(id g) const noexcept { return segs_[g].base + segs_[g].own.size(); }
  [[nodiscard]] std::size_t base(id g) const noexcept { return segs_[g].base; }
  /// The entries of `g` from `base(g)` on: where a tip appends and replaces its last block.
  [[nodiscard]] std::vector<std::uint32_t>& own(id g) noexcept { return segs_[g].own; }
  /// An upper bound of the segments above `g` (exact unless an ancestor was flattened since).
  [[nodiscard]] std::size_t depth(id g) const noexcept { return segs_[g].depth; }

  /// Entry `i` of the table of `g`: O(1) for i >= base(g), else a walk up the chain.
  [[nodiscard]] std::uint32_t at(id g, std::size_t i) const noexcept {
    while (i < segs_[g].base) g = segs_[g].parent;
    return segs_[g].own[i - segs_[g].base];
  }

  /// Writes the `size(g)` entries of the table of the tip `g` to `out`.
  void gather(id g, std::uint32_t* out) const noexcept {
    std::size_t end = size(g);
    for (; end > 0; g = segs_[g].parent) {
      const segment& s = segs_[g];
      std::copy_n(s.own.begin(), end - s.base, out + s.base);
      end = s.base;
    }
  }

  /// Segments a lookup of `g` walks (1: a root).
  [[nodiscard]] std::size_t chain_length(id g) const noexcept {
    std::size_t n = 1;
    for (; segs_[g].parent != none; g = segs_[g].parent) ++n;
    return n;
  }

 private:
  struct segment {
    std::vector<std::uint32_t> own;
    std::size_t base = 0;
    std::size_t depth = 0;
    id parent = none;
    id first = none, last = none;  // children, in fork order
    id prev = none, next = none;   // siblings
    bool tip = false;
  };

  /// A tip with no parent, an empty table and room for one own entry.
  id make() {
    id g;
    if (free_.empty()) {
      if (segs_.size() >= none) throw invalid_input("itscale: paged_kv_cache: too many table segments");
      // Room for every segment in the free list, so that freeing never allocates.
      if (free_.capacity() < segs_.size() + 1) free_.reserve(std::max<std::size_t>(16, 2 * segs_.size()));
      segs_.emplace_back();
      g = static_cast<id>(segs_.size() - 1);
      free_.push_back(g);
    } else {
      g = free_.back();
    }
    segs_[g].own.reserve(1);  // still in the free list if this throws
    free_.pop_back();
    segs_[g].tip = true;
    return g;
  }

  void link(id p, id g) noexcept {
    segment& c = segs_[g];
    c.parent = p;
    c.prev = segs_[p].last;
    c.next = none;
    (c.prev != none ? segs_[c.prev].next : segs_[p].first) = g;
    segs_[p].last = g;
  }

  void unlink(id g) noexcept {
    segment& c = segs_[g];
    const id p = c.parent;
    (c.prev != none ? segs_[c.prev].next : segs_[p].first) = c.next;
    (c.next != none ? segs_[c.next].prev : segs_[p].last) = c.prev;
    c.parent = c.prev = c.next = none;
  }

  /// Restores the invariants of `g` after it lost its tip or a child, then of its ancestors.
  template <class Drop>
  void settle(id g, Drop& drop) noexcept {
    while (g != none) {
      segment& s = segs_[g];
      if (s.tip) return;
      if (s.last != none) {  // keep what the last (deepest-reaching) child sees
        const std::size_t end = segs_[s.last].base;
        while (s.base + s.own.size() > end) {
          drop(s.own.back());
          s.own.pop_back();
        }
        return;
      }
      for (std::uint32_t b : s.own) drop(b);
      s.own.clear();  // keeps its capacity for the next segment made here
      const id p = s.parent;
      if (p != none) unlink(g);
      s.base = 0;
      s.depth = 0;
      free_.push_back(g);  // capacity reserved in make
      g = p;
    }
  }

  std::vector<segment> segs_;
  std::vector<id> free_;
};

}  // namespace detail
ITSCALE_END_NAMESPACE
