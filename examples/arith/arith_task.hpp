#pragma once
/// \file arith_task.hpp
/// The chain-arithmetic task of `shared/models/README.md` (the `arith-*.bin` checkpoints), as demo
/// code shared by the tests and the examples (not part of the library):
///
/// - `arith::problem` and `arith::make_problem`: the README's generator rules, seeded;
/// - `arith::encode_prompt`: BOS, the dummy " ", one token per character (llama2.c's encode with
///   the arith tokenizer, exactly as `itscale_generate --prompt` encodes);
/// - `arith::score_text` and `arith::calculator_verifier`: the exact step verifier (a calculator);
/// - `arith::extract_answer`: the number after the last `#`.
///
///     prompt      37+45-18+9=
///     completion  37+45=82;82-18=64;64+9=73;#73

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <itscale/backends/llama2c_tokenizer.hpp>
#include <itscale/core/rng.hpp>
#include <itscale/core/types.hpp>
#include <itscale/steps/verifier.hpp>

namespace arith {

/// `x op1 y1 op2 y2 ... =`: the first operand and the operations.
struct problem {
  int first = 0;
  std::vector<std::pair<char, int>> ops;  ///< ('+' or '-', operand)

  /// The prompt text, e.g. "37+45-18+9=".
  [[nodiscard]] std::string prompt() const {
    std::string s = std::to_string(first);
    for (const auto& [op, y] : ops) s += op + std::to_string(y);
    return s + "=";
  }

  /// The running total after each operation.
  [[nodiscard]] std::vector<int> totals() const {
    std::vector<int> t;
    int x = first;
    for (const auto& [op, y] : ops) t.push_back(x = op == '+' ? x + y : x - y);
    return t;
  }

  [[nodiscard]] int answer() const { return ops.empty() ? first : totals().back(); }

  /// The model's expected completion, e.g. "37+45=82;82-18=64;64+9=73;#73".
  [[nodiscard]] std::string completion() const {
    std::string s;
    int x = first;
    for (const auto& [op, y] : ops) {
      const int nx = op == '+' ? x + y : x - y;
      s += std::to_string(x) + op + std::to_string(y) + "=" + std::to_string(nx) + ";";
      x = nx;
    }
    return s + "#" + std::to_string(x);
  }

  /// Parses a prompt "x op y ... =" (digits, '+', '-', a final '='); nullopt if malformed, or if
  /// a running total leaves the range of int (`totals()` and `answer()` compute in int: an
  /// overflow there would be undefined behaviour on outside input).
  [[nodiscard]] static std::optional<problem> parse(std::string_view text) {
    if (text.empty() || text.back() != '=') return std::nullopt;
    text.remove_suffix(1);
    problem p;
    std::size_t i = 0;
    const auto number = [&](int& out) {
      const std::size_t start = i;
      long v = 0;
      while (i < text.size() && text[i] >= '0' && text[i] <= '9' && i - start < 9) v = v * 10 + (text[i++] - '0');
      out = static_cast<int>(v);
      return i > start;
    };
    if (!number(p.first)) return std::nullopt;
    long long total = p.first;  // operands < 10^9: one step cannot overflow a long long
    while (i < text.size()) {
      const char op = text[i++];
      int y = 0;
      if ((op != '+' && op != '-') || !number(y)) return std::nullopt;
      total = op == '+' ? total + y : total - y;
      if (total > std::numeric_limits<int>::max() || total < std::numeric_limits<int>::min()) return std::nullopt;
      p.ops.emplace_back(op, y);
    }
    return p;
  }
};

/// Problem `index` of a seeded family with `n_ops` operations, by the README's rules: the first
/// operand uniform in 10..99; each later operand uniform in 10..99 with probability 0.85, else in
/// 1..9; each sign '+' or '-' with probability 1/2, a '-' that would make the total negative
/// becomes '+', a '+' that would take it above 999 becomes '-'. Randomness: itscale's counter-based
/// stream (seed, index), so a problem does not depend on which others are made.
[[nodiscard]] inline problem make_problem(std::uint64_t seed, std::uint32_t index, int n_ops) {
  const itscale::counter_rng rng(seed, index);
  const auto uniform_int = [&](std::uint32_t step, std::uint32_t k, int lo, int hi) {
    return lo + static_cast<int>(rng.uniform(step, k) * (hi - lo + 1));
  };
  problem p;
  p.first = uniform_int(0, 0, 10, 99);
  int total = p.first;
  for (int j = 0; j < n_ops; ++j) {
    const auto s = static_cast<std::uint32_t>(j + 1);
    const int y = rng.uniform(s, 0) < 0.85 ? uniform_int(s, 1, 10, 99) : uniform_int(s, 1, 1, 9);
    char op = rng.uniform(s, 2) < 0.5 ? '+' : '-';
    if (op == '-' && total - y < 0) op = '+';
    if (op == '+' && total + y > 999) op = '-';
    total = op == '+' ? total + y : total - y;
    p.ops.emplace_back(op, y);
  }
  return p;
}

/// `count` problems of `seed`, operations cycling through min_ops..max_ops (an even mix).
[[nodiscard]] inline std::vector<problem> make_problems(std::uint64_t seed, std::size_t count, int min_ops, int max_ops) {
  std::vector<problem> ps;
  for (std::size_t i = 0; i < count; ++i)
    ps.push_back(make_problem(seed, static_cast<std::uint32_t>(i),
                              min_ops + static_cast<int>(i % static_cast<std::size_t>(max_ops - min_ops + 1))));
  return ps;
}

/// BOS, the dummy " ", one token per character: llama2.c's encode with the arith tokenizer.
[[nodiscard]] inline std::vector<itscale::token_id> encode_prompt(const itscale::llama2c_tokenizer& tok,
                                                                 std::string_view text) {
  return tok.encode(text, /*add_bos=*/true);
}

/// The number after the last '#', if it is all digits (and not empty).
[[nodiscard]] inline std::optional<long> extract_answer(std::string_view generated) {
  const std::size_t h = generated.rfind('#');
  if (h == std::string_view::npos || h + 1 == generated.size() || generated.size() - h > 10) return std::nullopt;
  long v = 0;
  for (char ch : generated.substr(h + 1)) {
    if (ch < '0' || ch > '9') return std::nullopt;
    v = v * 10 + (ch - '0');
  }
  return v;
}

namespace detail {

/// Parses "a op b=c" exactly (digits only, no sign); false if malformed.
inline bool parse_step(std::string_view s, long& a, char& op, long& b, long& c) {
  std::size_t i = 0;
  const auto number = [&](long& out) {
    const std::size_t start = i;
    out = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < 9) out = out * 10 + (s[i++] - '0');
    return i > start && (i == s.size() || s[i] < '0' || s[i] > '9');
  };
  if (!number(a) || i >= s.size()) return false;
  op = s[i++];
  if ((op != '+' && op != '-') || !number(b) || i >= s.size() || s[i++] != '=' || !number(c)) return false;
  return i == s.size();
}

}  // namespace detail

/// The exact step verifier on the generated text (prompt excluded, EOS not text): 1 when every
/// completed step `a op b=c;` continues the problem (a = the previous result, the problem's first
/// operand for step 1; `op b` = the problem's next operation; c = a op b) and, for a complete
/// sequence, the steps cover every operation and the text ends with `#` and the last result.
/// Else 0. A partial sequence's unfinished tail (after its last ';') is not judged.
[[nodiscard]] inline double score_text(const problem& p, std::string_view text, bool complete) {
  long total = p.first;
  std::size_t k = 0, pos = 0;
  for (std::size_t semi; (semi = text.find(';', pos)) != std::string_view::npos; pos = semi + 1, ++k) {
    long a = 0, b = 0, c = 0;
    char op = 0;
    if (k >= p.ops.size() || !detail::parse_step(text.substr(pos, semi - pos), a, op, b, c)) return 0;
    const long want = p.ops[k].first == '+' ? total + p.ops[k].second : total - p.ops[k].second;
    if (a != total || op != p.ops[k].first || b != p.ops[k].second || c != want) return 0;
    total = c;
  }
  if (!complete) return 1;
  return k == p.ops.size() && text.substr(pos) == "#" + std::to_string(total) ? 1 : 0;
}

/// `score_text` as an itscale `Verifier` over token sequences: the problem is read back from the
/// prompt's text, the steps from the generated tokens' text. Range [0, 1].
class calculator_verifier {
 public:
  /// Keeps each token's text (the tokenizer need not outlive the verifier).
  explicit calculator_verifier(const itscale::llama2c_tokenizer& tok) {
    for (std::size_t t = 0; t < tok.vocab_size(); ++t) {
      const auto id = static_cast<itscale::token_id>(t);
      text_.push_back(id == itscale::llama2c_tokenizer::bos || id == itscale::llama2c_tokenizer::eos ? std::string()
                                                                                                   : tok.decode(-1, id));
    }
  }

  /// The text of `tokens` (BOS and EOS are not text; the prompt's dummy space is).
  [[nodiscard]] std::string text(std::span<const itscale::token_id> tokens) const {
    std::string s;
    for (itscale::token_id t : tokens)
      if (t >= 0 && static_cast<std::size_t>(t) < text_.size()) s += text_[static_cast<std::size_t>(t)];
    return s;
  }

  /// The problem a prompt states (its leading space dropped), if it is one.
  [[nodiscard]] std::optional<problem> problem_of(std::span<const itscale::token_id> prompt) const {
    std::string s = text(prompt);
    if (!s.empty() && s.front() == ' ') s.erase(0, 1);
    return problem::parse(s);
  }

  std::vector<double> verify(std::span<const itscale::verify_item> batch) const {
    std::vector<double> out;
    out.reserve(batch.size());
    for (const auto& it : batch) {
      const auto p = problem_of(it.prompt);
      out.push_back(p ? score_text(*p, text(it.sequence), it.complete) : 0.0);
    }
    return out;
  }
  [[nodiscard]] itscale::score_range range() const noexcept { return {0, 1}; }
  [[nodiscard]] std::string_view name() const noexcept { return "arith_calculator"; }

 private:
  std::vector<std::string> text_;
};
static_assert(itscale::Verifier<calculator_verifier>);

}  // namespace arith
