#pragma once
/// \file token_tree.hpp
/// Internal: the generated tokens of every sequence a beam-family search holds, as one tree of
/// (parent, token, log-prob) nodes appended to an arena. A sequence is the index of its last
/// node; a child costs one append instead of a copy of its parent's tokens, so a step's cost
/// does not grow with the sequences' length. Tokens are read back (materialised) only for the
/// sequences a search returns. Nodes are never freed during a search: the arena grows by at most
/// the step's kept candidates per step.

#include <cstddef>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

class token_tree {
 public:
  /// The parent of a sequence's first token (the prompt, which the tree does not hold).
  static constexpr std::size_t root = static_cast<std::size_t>(-1);

  /// Appends `token` (with its log-prob) below `parent` (a node or `root`); returns its node.
  std::size_t add(std::size_t parent, token_id token, float logprob) {
    nodes_.push_back({parent, token, logprob});
    return nodes_.size() - 1;
  }

  [[nodiscard]] token_id token(std::size_t node) const noexcept { return nodes_[node].token; }

  /// The tokens (and, if `logprobs` is not null, their log-probs) from the first generated token
  /// to `node`, replacing `tokens`' contents; `root` gives none. O(length).
  void read(std::size_t node, std::vector<token_id>& tokens, std::vector<float>* logprobs) const {
    std::size_t n = 0;
    for (std::size_t i = node; i != root; i = nodes_[i].parent) ++n;
    tokens.resize(n);
    if (logprobs) logprobs->resize(n);
    for (std::size_t i = node; i != root; i = nodes_[i].parent) {
      --n;
      tokens[n] = nodes_[i].token;
      if (logprobs) (*logprobs)[n] = nodes_[i].logprob;
    }
  }

  [[nodiscard]] std::size_t size() const noexcept { return nodes_.size(); }

 private:
  struct entry {
    std::size_t parent;
    token_id token;
    float logprob;
  };
  std::vector<entry> nodes_;
};

}  // namespace detail
ITSCALE_END_NAMESPACE
