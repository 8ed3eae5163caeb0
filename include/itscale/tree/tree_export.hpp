#pragma once
/// \file tree_export.hpp
/// A search tree as JSON (for analysis scripts) and as Graphviz DOT (for pictures). The text is
/// written by hand: the core headers depend on no JSON library.
///
/// JSON: {"root": id, "nodes": [{"id", "parent" (null for the root), "key", "depth", "step"
/// (token ids), "text" (if a detokenizer is given), "logprob", "model_logprob", "count", "prior",
/// "prior_raw", "visits", "value_sum", "mean", "max" (null if unvisited), "value" (own
/// evaluation, null if none), "terminal", "cut", "stop", "exhausted", "children", "pending"}, ...]}.
/// Nodes appear in id order (creation order); only the root's subtree is written.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/core/types.hpp"
#include "itscale/tree/mcts_node.hpp"

ITSCALE_BEGIN_NAMESPACE

/// What an export shows.
struct tree_export_options {
  /// Turns a step's tokens into text for labels (none: token ids are shown).
  std::function<std::string(std::span<const token_id>)> detokenize = {};
  /// Nodes with fewer visits are left out, with their subtrees (the root is always written).
  std::uint64_t min_visits = 0;
  /// Nodes drawn bold in DOT (e.g. the chosen path).
  std::vector<std::uint32_t> highlight = {};
};

namespace detail {

inline void json_escape(std::string& out, const std::string& s) {
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

// Shortest round-trip form of a double; JSON has no NaN or infinity, so those become null.
inline void json_number(std::string& out, double v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  out += buf;
}

template <class State>
std::vector<std::uint32_t> exported_nodes(std::span<const mcts_node<State>> nodes, std::uint32_t root,
                                          const tree_export_options& o) {
  std::vector<std::uint8_t> keep(nodes.size(), 0);
  std::vector<std::uint32_t> stack{root};
  while (!stack.empty()) {
    const std::uint32_t x = stack.back();
    stack.pop_back();
    keep[x] = 1;
    for (std::uint32_t c : nodes[x].children)
      if (nodes[c].visits >= o.min_visits) stack.push_back(c);
  }
  std::vector<std::uint32_t> out;
  for (std::uint32_t i = 0; i < nodes.size(); ++i)
    if (keep[i] != 0) out.push_back(i);
  return out;
}

template <class State>
std::string step_text(const mcts_node<State>& n, const tree_export_options& o) {
  if (o.detokenize) return o.detokenize(n.step);
  std::string s;
  for (std::size_t i = 0; i < n.step.size(); ++i) s += (i ? " " : "") + std::to_string(n.step[i]);
  return s;
}

}  // namespace detail

/// The subtree of `root` as JSON (see the file comment).
template <class State>
[[nodiscard]] std::string tree_to_json(std::span<const mcts_node<State>> nodes, std::uint32_t root,
                                       const tree_export_options& o = {}) {
  std::string out = "{\"root\":" + std::to_string(root) + ",\"nodes\":[";
  bool first = true;
  const auto ids = [&](const std::vector<std::uint32_t>& v) {
    out += '[';
    for (std::size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
    out += ']';
  };
  for (std::uint32_t id : detail::exported_nodes(nodes, root, o)) {
    const auto& n = nodes[id];
    out += first ? "{" : ",{";
    first = false;
    out += "\"id\":" + std::to_string(id) + ",\"parent\":";
    out += id == root || n.parent == no_node ? std::string("null") : std::to_string(n.parent);
    out += ",\"key\":" + std::to_string(n.key) + ",\"depth\":" + std::to_string(n.depth) + ",\"step\":[";
    for (std::size_t i = 0; i < n.step.size(); ++i) out += (i ? "," : "") + std::to_string(n.step[i]);
    out += ']';
    if (o.detokenize) {
      out += ",\"text\":";
      detail::json_escape(out, o.detokenize(n.step));
    }
    const auto num = [&](const char* k, double v) {
      out += ",\"";
      out += k;
      out += "\":";
      detail::json_number(out, v);
    };
    num("logprob", n.logprob);
    num("model_logprob", n.model_logprob);
    out += ",\"count\":" + std::to_string(n.count);
    num("prior", n.prior);
    num("prior_raw", n.prior_raw);
    out += ",\"visits\":" + std::to_string(n.visits);
    num("value_sum", n.value_sum);
    num("mean", n.visits > 0 ? n.mean() : NAN);
    num("max", n.value_max);
    num("value", n.value);
    out += std::string(",\"terminal\":") + (n.terminal ? "true" : "false");
    out += std::string(",\"cut\":") + (n.cut ? "true" : "false");
    out += std::string(",\"stop\":\"") + to_string(n.stop) + "\"";
    out += std::string(",\"exhausted\":") + (n.exhausted ? "true" : "false");
    out += ",\"children\":";
    ids(n.children);
    out += ",\"pending\":";
    ids(n.pending);
    out += '}';
  }
  out += "]}";
  return out;
}

/// The subtree of `root` as a Graphviz digraph: one box per node (step text, N, mean value,
/// prior), terminals as rounded boxes filled by their value (red 0 to green 1, white if never
/// scored), highlighted nodes
/// and the edges between them bold. Render with `dot -Tsvg tree.dot -o tree.svg`.
template <class State>
[[nodiscard]] std::string tree_to_dot(std::span<const mcts_node<State>> nodes, std::uint32_t root,
                                      const tree_export_options& o = {}) {
  std::vector<std::uint8_t> hl(nodes.size(), 0);
  for (std::uint32_t h : o.highlight)
    if (h < nodes.size()) hl[h] = 1;
  const auto dot_escape = [](const std::string& s) {
    std::string e;
    for (char c : s) {
      if (c == '"' || c == '\\') e += '\\';
      if (c == '\n') {
        e += "\\n";
        continue;
      }
      e += c;
    }
    return e;
  };
  const auto fmt = [](const char* f, double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, f, v);
    return std::string(buf);
  };
  std::string out =
      "digraph mcts {\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n"
      "  edge [fontname=\"Helvetica\", fontsize=9];\n";
  const auto kept = detail::exported_nodes(nodes, root, o);
  std::vector<std::uint8_t> in(nodes.size(), 0);
  for (std::uint32_t id : kept) in[id] = 1;
  for (std::uint32_t id : kept) {
    const auto& n = nodes[id];
    std::string label = id == root ? std::string("root") : detail::step_text(n, o);
    label += "\nN=" + std::to_string(n.visits);
    if (n.visits > 0) label += "  Q=" + fmt("%.3f", n.mean());
    if (id != root) label += "  P=" + fmt("%.3f", n.prior);
    out += "  n" + std::to_string(id) + " [label=\"" + dot_escape(label) + "\"";
    if (n.terminal) {  // filled red (0) to green (1) by value; white if never scored
      out += ", style=\"rounded,filled\", fillcolor=\"";
      out += std::isfinite(n.value) ? fmt("%.3f", n.value / 3.0) + " 0.45 0.95\"" : std::string("white\"");
    }
    if (hl[id] != 0) out += ", penwidth=2.5";
    out += "];\n";
  }
  for (std::uint32_t id : kept)
    for (std::uint32_t c : nodes[id].children)
      if (in[c] != 0) {
        out += "  n" + std::to_string(id) + " -> n" + std::to_string(c);
        if (hl[id] != 0 && hl[c] != 0) out += " [penwidth=2.5]";
        out += ";\n";
      }
  out += "}\n";
  return out;
}

ITSCALE_END_NAMESPACE
