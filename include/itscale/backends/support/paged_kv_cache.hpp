#pragma once
/// \file paged_kv_cache.hpp
/// A paged key/value cache with reference-counted, copy-on-write blocks, for transformer sources.
///
/// A block holds `block_tokens` consecutive positions of one or more sequences, for every layer
/// (keys and values of `kv_dim` floats each). A sequence is a table of block ids plus a length.
/// A shared prefix is stored once: `fork` copies no key or value, and not even the table. Tables
/// form a persistent tree (block_table_tree.hpp): the child gets a new tip segment that sees its
/// parent's full blocks through the parent's segment and holds the parent's partial last block, so
/// a fork costs the same at 10 or 10,000 tokens. Decoders fork every step, so chains get deep;
/// lookups walk them, and a chain deeper than max(16, its blocks) is flattened into one table at
/// the next fork of its tip: a copy of block ids (no more than the chain has segments), so lookups
/// stay O(blocks) and that copy costs O(1) per fork that deepened the chain.
///
/// When a sequence grows into a partially filled block that others share, it writes in place if
/// nobody has written past its own prefix there yet (the usual "extend, then release the parent"
/// step of a decoder costs no copy), else it copies that one block first. Each block remembers how
/// many of its positions have been written (`filled`) to decide this; the positions a sequence
/// reads (`< length`) are never written again by anyone.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/backends/support/block_table_tree.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Memory accounting of a `paged_kv_cache`.
struct kv_cache_stats {
  std::size_t live_sequences = 0;
  std::size_t live_tokens = 0;       ///< sum of the lengths of live sequences (shared tokens counted per sequence)
  std::size_t blocks_in_use = 0;     ///< blocks referenced by at least one live sequence
  std::size_t bytes_in_use = 0;      ///< blocks_in_use * block_bytes
  std::size_t blocks_pooled = 0;     ///< free blocks kept for reuse (their memory is still held)
  std::size_t bytes_allocated = 0;   ///< memory held for blocks, in use or pooled
  std::size_t block_bytes = 0;
};

/// See the file comment. Not thread-safe.
class paged_kv_cache {
 public:
  using seq_id = std::uint32_t;

  /// Preconditions checked (`invalid_input`): every argument positive.
  paged_kv_cache(std::size_t n_layers, std::size_t kv_dim, std::size_t block_tokens, std::size_t max_tokens)
      : layers_(n_layers), kv_dim_(kv_dim), block_tokens_(block_tokens), max_tokens_(max_tokens) {
    if (n_layers == 0 || kv_dim == 0 || block_tokens == 0 || max_tokens == 0)
      throw invalid_input("itscale: paged_kv_cache needs positive n_layers, kv_dim, block_tokens and max_tokens");
    block_floats_ = layers_ * 2 * block_tokens_ * kv_dim_;
  }

  [[nodiscard]] std::size_t block_tokens() const noexcept { return block_tokens_; }
  [[nodiscard]] std::size_t kv_dim() const noexcept { return kv_dim_; }
  [[nodiscard]] std::size_t max_tokens() const noexcept { return max_tokens_; }

  /// A new empty sequence.
  seq_id create() {
    const auto g = tree_.create();
    try {
      return new_sequence(g);
    } catch (...) {
      tree_.release_tip(g, dropper());
      throw;
    }
  }

  /// A new sequence equal to `parent` (which stays valid), sharing all its blocks: no key, value
  /// or block id is copied (see the file comment). Throws `invalid_input` for a dead parent; on an
  /// exception nothing observable changes.
  seq_id fork(seq_id parent) {
    const sequence& p = at(parent);
    const std::size_t len = p.length;
    const auto pg = p.tip;
    if (tree_.depth(pg) >= std::max(flatten_depth, tree_.size(pg)))
      tree_.flatten(pg, [this](std::uint32_t b) noexcept { ++blocks_[b].refs; }, dropper());
    const std::size_t B = block_tokens_;
    const std::uint32_t partial = len % B != 0 ? tree_.own(pg).back() : block_table_tree::none;
    const auto g = tree_.fork(pg, len / B, partial);
    if (partial != block_table_tree::none) ++blocks_[partial].refs;
    seq_id s = 0;
    try {
      s = new_sequence(g);
    } catch (...) {
      tree_.release_tip(g, dropper());
      throw;
    }
    seqs_[s].length = len;
    live_tokens_ += len;
    return s;
  }

  /// Appends `n` positions to `s` (their keys and values are then written through `key`/`value`)
  /// and returns the first new position. All-or-nothing: on an exception (`invalid_input` when the
  /// sequence would exceed `max_tokens()`, or out of memory) `s` is unchanged.
  std::size_t grow(seq_id s, std::size_t n) {
    sequence& q = at(s);
    const std::size_t len = q.length;
    if (n > max_tokens_ - len)
      throw invalid_input("itscale: a sequence of " + std::to_string(len) + " tokens cannot grow by " +
                          std::to_string(n) + ": the model's context is " + std::to_string(max_tokens_) + " tokens");
    const std::size_t B = block_tokens_;
    // The tip's own entries cover every position from base * B on, the partial last block included.
    std::vector<std::uint32_t>& own = tree_.own(q.tip);
    const std::size_t base = tree_.base(q.tip);
    const std::size_t used = len % B;  // positions of ours in the last block (0: it is full or absent)
    bool copy_last = false;
    if (used != 0) {
      const block& last = blocks_[own.back()];
      copy_last = last.refs > 1 && last.filled != used;  // a sharer wrote past our prefix
    }
    const std::size_t fresh = (len + n + B - 1) / B - (base + own.size());
    // Acquire everything first so that nothing below can throw.
    if (own.capacity() < own.size() + fresh) own.reserve(std::max(own.size() + fresh, 2 * own.capacity()));
    std::vector<std::uint32_t> got;
    got.reserve(fresh + (copy_last ? 1 : 0));
    try {
      for (std::size_t i = 0; i < fresh + (copy_last ? 1 : 0); ++i) got.push_back(acquire_block());
    } catch (...) {
      for (std::uint32_t b : got) drop(b);
      throw;
    }
    std::size_t g = 0;
    if (copy_last) {
      const std::uint32_t old = own.back(), nb = got[g++];
      for (std::size_t l = 0; l < 2 * layers_; ++l)
        std::memcpy(data(nb) + l * B * kv_dim_, data(old) + l * B * kv_dim_, used * kv_dim_ * sizeof(float));
      blocks_[nb].filled = used;
      drop(old);
      own.back() = nb;
    } else if (used != 0) {
      blocks_[own.back()].filled = used;  // in place; anything past `used` was a dead sibling's
    }
    for (; g < got.size(); ++g) own.push_back(got[g]);
    // Mark the new positions written (they will be, before anyone reads them).
    for (std::size_t pos = len; pos < len + n; ++pos) {
      block& b = blocks_[own[pos / B - base]];
      b.filled = std::max(b.filled, pos % B + 1);
    }
    q.length = len + n;
    live_tokens_ += n;
    return len;
  }

  /// Frees `s`; its blocks return to the pool when no other sequence holds them. Unknown or dead
  /// ids are ignored.
  void release(seq_id s) noexcept {
    if (s >= seqs_.size() || !seqs_[s].live) return;
    sequence& q = seqs_[s];
    tree_.release_tip(q.tip, dropper());
    live_tokens_ -= q.length;
    q = sequence{};
    free_seqs_.push_back(s);  // capacity reserved when the id was created: cannot throw
    --live_seqs_;
  }

  [[nodiscard]] bool is_live(seq_id s) const noexcept { return s < seqs_.size() && seqs_[s].live; }
  [[nodiscard]] std::size_t length(seq_id s) const { return at(s).length; }

  /// Blocks in the table of `s`: ceil(length(s) / block_tokens()).
  [[nodiscard]] std::size_t block_count(seq_id s) const { return tree_.size(at(s).tip); }

  /// Writes the block table of `s` to `out` (resized to `block_count(s)`): position p lives in
  /// block `out[p / block_tokens()]`. O(blocks + chain depth), and no allocation once `out` has
  /// the capacity, so a caller reading every position (attention) can afford it per step.
  void block_table(seq_id s, std::vector<std::uint32_t>& out) const {
    const auto g = at(s).tip;
    out.resize(tree_.size(g));
    tree_.gather(g, out.data());
  }
  [[nodiscard]] std::vector<std::uint32_t> block_table(seq_id s) const {
    std::vector<std::uint32_t> out;
    block_table(s, out);
    return out;
  }

  /// Diagnostics: table segments a lookup of `s` walks (1 when its table is held in one piece).
  [[nodiscard]] std::size_t table_depth(seq_id s) const { return tree_.chain_length(at(s).tip); }
  /// Diagnostics: holders of block `b` (table segments, which may stand for several sequences).
  [[nodiscard]] std::size_t block_refs(std::uint32_t b) const noexcept { return b < blocks_.size() ? blocks_[b].refs : 0; }

  /// Keys of `layer` in block `b`: `block_tokens()` rows of `kv_dim()` floats.
  [[nodiscard]] float* keys(std::uint32_t b, std::size_t layer) noexcept {
    return data(b) + (2 * layer) * block_tokens_ * kv_dim_;
  }
  [[nodiscard]] const float* keys(std::uint32_t b, std::size_t layer) const noexcept {
    return data(b) + (2 * layer) * block_tokens_ * kv_dim_;
  }
  [[nodiscard]] float* values(std::uint32_t b, std::size_t layer) noexcept {
    return data(b) + (2 * layer + 1) * block_tokens_ * kv_dim_;
  }
  [[nodiscard]] const float* values(std::uint32_t b, std::size_t layer) const noexcept {
    return data(b) + (2 * layer + 1) * block_tokens_ * kv_dim_;
  }

  /// The key / value row of position `pos` of `s` in `layer` (precondition: `pos < length(s)`).
  /// O(1) for the positions of the last block and later (those being written); older ones walk the
  /// table's chain.
  [[nodiscard]] float* key(seq_id s, std::size_t layer, std::size_t pos) {
    return keys(tree_.at(at(s).tip, pos / block_tokens_), layer) + (pos % block_tokens_) * kv_dim_;
  }
  [[nodiscard]] float* value(seq_id s, std::size_t layer, std::size_t pos) {
    return values(tree_.at(at(s).tip, pos / block_tokens_), layer) + (pos % block_tokens_) * kv_dim_;
  }

  [[nodiscard]] kv_cache_stats stats() const noexcept {
    kv_cache_stats st;
    st.live_sequences = live_seqs_;
    st.live_tokens = live_tokens_;
    st.blocks_pooled = free_blocks_.size();
    st.blocks_in_use = blocks_.size() - free_blocks_.size();
    st.block_bytes = block_floats_ * sizeof(float);
    st.bytes_in_use = st.blocks_in_use * st.block_bytes;
    st.bytes_allocated = held_ * st.block_bytes;
    return st;
  }

  /// Number of live sequences.
  [[nodiscard]] std::size_t live_sequences() const noexcept { return live_seqs_; }

  /// Returns the memory of pooled (free) blocks to the allocator.
  void trim() noexcept {
    for (std::uint32_t b : free_blocks_)
      if (blocks_[b].data) {
        blocks_[b].data.reset();
        --held_;
      }
  }

 private:
  /// Blocks are aligned to 64 bytes, so that vectorised loops over them round the same way in
  /// every cache instance (Eigen peels an unaligned head in scalar code).
  static constexpr std::size_t block_align = 64;
  struct aligned_delete {
    void operator()(float* p) const noexcept { ::operator delete[](p, std::align_val_t{block_align}); }
  };
  using block_memory = std::unique_ptr<float[], aligned_delete>;
  [[nodiscard]] block_memory allocate_block() const {
    return block_memory(static_cast<float*>(::operator new[](block_floats_ * sizeof(float), std::align_val_t{block_align})));
  }

  struct block {
    block_memory data;
    std::size_t refs = 0;
    std::size_t filled = 0;
  };
  using block_table_tree = detail::block_table_tree;
  /// Chains up to this deep are never flattened (see the file comment).
  static constexpr std::size_t flatten_depth = 16;

  struct sequence {
    block_table_tree::id tip = block_table_tree::none;  // its own segment of the tree
    std::size_t length = 0;
    bool live = false;
  };

  const sequence& at(seq_id s) const {
    if (!is_live(s)) throw invalid_input("itscale: sequence handle " + std::to_string(s) + " is not live (released or never created)");
    return seqs_[s];
  }
  sequence& at(seq_id s) { return const_cast<sequence&>(std::as_const(*this).at(s)); }

  float* data(std::uint32_t b) noexcept { return blocks_[b].data.get(); }
  const float* data(std::uint32_t b) const noexcept { return blocks_[b].data.get(); }

  seq_id new_sequence(block_table_tree::id tip) {
    if (!free_seqs_.empty()) {
      const seq_id s = free_seqs_.back();
      free_seqs_.pop_back();
      seqs_[s] = sequence{tip, 0, true};
      ++live_seqs_;
      return s;
    }
    if (seqs_.size() >= UINT32_MAX) throw invalid_input("itscale: paged_kv_cache: too many sequences");
    free_seqs_.reserve(seqs_.size() + 1);  // so that release never allocates
    seqs_.push_back(sequence{tip, 0, true});
    ++live_seqs_;
    return static_cast<seq_id>(seqs_.size() - 1);
  }

  /// A block with refs = 1 and nothing written.
  std::uint32_t acquire_block() {
    if (!free_blocks_.empty()) {
      const std::uint32_t b = free_blocks_.back();
      if (!blocks_[b].data) {  // trimmed
        blocks_[b].data = allocate_block();
        ++held_;
      }
      free_blocks_.pop_back();
      blocks_[b].refs = 1;
      blocks_[b].filled = 0;
      return b;
    }
    if (blocks_.size() >= UINT32_MAX) throw invalid_input("itscale: paged_kv_cache: too many blocks");
    // Uninitialised on purpose: positions are written before they are read.
    block_memory mem = allocate_block();
    free_blocks_.reserve(blocks_.size() + 1);  // so that drop never allocates
    blocks_.push_back(block{std::move(mem), 1, 0});
    ++held_;
    return static_cast<std::uint32_t>(blocks_.size() - 1);
  }

  void drop(std::uint32_t b) noexcept {
    if (--blocks_[b].refs == 0) free_blocks_.push_back(b);
  }
  struct dropper_t {
    paged_kv_cache* c;
    void operator()(std::uint32_t b) const noexcept { c->drop(b); }
  };
  dropper_t dropper() noexcept { return {this}; }

  std::size_t layers_, kv_dim_, block_tokens_, max_tokens_;
  std::size_t block_floats_ = 0;
  std::vector<block> blocks_;
  std::vector<std::uint32_t> free_blocks_;
  block_table_tree tree_;
  std::vector<sequence> seqs_;
  std::vector<seq_id> free_seqs_;
  std::size_t live_seqs_ = 0;
  std::size_t live_tokens_ = 0;
  std::size_t held_ = 0;  // blocks whose memory is allocated
};

ITSCALE_END_NAMESPACE
