// The chain-arithmetic task of tests/data/models/README.md: the problem generator (the training
// mix's rules), prompt encoding, answer extraction and the calculator step verifier.
//
//   prompt      37+45-18+9=
//   completion  37+45=82;82-18=64;64+9=73;#73
//
// Examples only (the library knows nothing about arithmetic): the verifier is a plain
// `itscale::Verifier`, which is how an external tool plugs into the step-level searches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <itscale/backends/llama2c_tokenizer.hpp>
#include <itscale/core/rng.hpp>
#include <itscale/core/types.hpp>
#include <itscale/steps/verifier.hpp>

namespace arith {

/// One problem: `first op1 y1 op2 y2 ... =` and its answer.
struct problem {
  std::string prompt;           ///< e.g. "37+45-18+9="
  long answer = 0;              ///< the value of the chain, left to right
  long first = 0;               ///< first operand
  std::vector<long> operands;   ///< y1, y2, ... (signed: -18 for "-18")
  [[nodiscard]] std::size_t ops() const noexcept { return operands.size(); }
};

/// Parses a prompt `x(+|-)y...=` (decimal operands, at least one operation). None if malformed.
[[nodiscard]] inline std::optional<problem> parse_prompt(std::string_view s) {
  problem p;
  p.prompt = std::string(s);
  std::size_t i = 0;
  const auto number = [&](long& v) {
    const std::size_t start = i;
    v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < 9) v = v * 10 + (s[i++] - '0');
    return i > start && !(i < s.size() && s[i] >= '0' && s[i] <= '9');
  };
  if (!number(p.first)) return std::nullopt;
  long total = p.first;
  while (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    const bool minus = s[i++] == '-';
    long y = 0;
    if (!number(y)) return std::nullopt;
    p.operands.push_back(minus ? -y : y);
    total += minus ? -y : y;
  }
  if (p.operands.empty() || i + 1 != s.size() || s[i] != '=') return std::nullopt;
  p.answer = total;
  return p;
}

/// Problem `index` of the generator with `seed` and `ops` operations (README's rules: the first
/// operand uniform in 10..99; each later operand uniform in 10..99 with probability 0.85, else in
/// 1..9; each sign + or - with probability 1/2, except that a - that would make the running total
/// negative becomes +, and a + that would take it above 999 becomes -). Randomness is itscale's
/// counter-based stream (seed, index), so a problem does not depend on the others.
[[nodiscard]] inline problem generate_problem(std::uint64_t seed, std::uint32_t index, std::size_t ops) {
  const itscale::counter_rng rng(seed, index);
  std::uint32_t draw = 0;
  const auto uniform = [&] { return rng.uniform(0, draw++); };
  const auto between = [&](long lo, long hi) { return lo + static_cast<long>(uniform() * static_cast<double>(hi - lo + 1)); };
  problem p;
  p.first = between(10, 99);
  long total = p.first;
  std::string s = std::to_string(p.first);
  for (std::size_t k = 0; k < ops; ++k) {
    const long y = uniform() < 0.85 ? between(10, 99) : between(1, 9);
    bool minus = uniform() < 0.5;
    if (minus && total - y < 0) minus = false;
    else if (!minus && total + y > 999) minus = true;
    total += minus ? -y : y;
    p.operands.push_back(minus ? -y : y);
    s += (minus ? '-' : '+') + std::to_string(y);
  }
  p.prompt = s + "=";
  p.answer = total;
  return p;
}

/// `count` problems; problem i has `ops[i % ops.size()]` operations (a balanced mix).
[[nodiscard]] inline std::vector<problem> generate_problems(std::uint64_t seed, std::size_t count,
                                                            std::span<const std::size_t> ops) {
  std::vector<problem> out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i)
    out.push_back(generate_problem(seed, static_cast<std::uint32_t>(i), ops[i % ops.size()]));
  return out;
}

/// The prompt's tokens, as `itscale_generate --prompt` encodes it (BOS, the dummy " ", one token a
/// character).
[[nodiscard]] inline std::vector<itscale::token_id> encode_prompt(const itscale::llama2c_tokenizer& tok,
                                                                  const problem& p) {
  return tok.encode(p.prompt, /*add_bos=*/true);
}

/// Maps token ids to the task's characters (0 for any other token: BOS, EOS, bytes, " ").
class charset {
 public:
  explicit charset(const itscale::llama2c_tokenizer& tok) : chars_(tok.vocab_size(), '\0') {
    for (std::size_t t = 0; t < tok.vocab_size(); ++t) {
      const std::string& p = tok.piece(static_cast<itscale::token_id>(t));
      if (p.size() == 1 && std::string_view("0123456789+-=;#").find(p[0]) != std::string_view::npos) chars_[t] = p[0];
    }
  }
  /// The text of `tokens`: task characters kept, every other token dropped except EOS, written '$'.
  [[nodiscard]] std::string text(std::span<const itscale::token_id> tokens) const {
    std::string s;
    s.reserve(tokens.size());
    for (itscale::token_id t : tokens) {
      if (t == itscale::llama2c_tokenizer::eos) s += '$';
      else if (t >= 0 && static_cast<std::size_t>(t) < chars_.size() && chars_[static_cast<std::size_t>(t)] != '\0')
        s += chars_[static_cast<std::size_t>(t)];
      else if (t != itscale::llama2c_tokenizer::bos) s += '?';
    }
    return s;
  }
  /// The prompt text of prompt tokens (BOS and the dummy space dropped).
  [[nodiscard]] std::string prompt_text(std::span<const itscale::token_id> tokens) const {
    std::string s;
    for (itscale::token_id t : tokens)
      if (t >= 0 && static_cast<std::size_t>(t) < chars_.size() && chars_[static_cast<std::size_t>(t)] != '\0')
        s += chars_[static_cast<std::size_t>(t)];
    return s;
  }

 private:
  std::vector<char> chars_;
};

/// The answer of a completion: the number after '#', up to EOS or the end. None if there is no
/// '#' or no digits follow it, or anything but EOS follows them.
[[nodiscard]] inline std::optional<long> answer_of(std::string_view completion) {
  const std::size_t h = completion.find('#');
  if (h == std::string_view::npos) return std::nullopt;
  std::size_t i = h + 1;
  long v = 0;
  while (i < completion.size() && completion[i] >= '0' && completion[i] <= '9' && i - h <= 9)
    v = v * 10 + (completion[i++] - '0');
  if (i == h + 1) return std::nullopt;
  if (i < completion.size() && completion[i] != '$') return std::nullopt;
  return v;
}

/// The calculator's verdict on a completion (text as `charset::text` writes it) of problem `p`:
/// every completed step `a op b = c;` must have a = the previous result (the first operand for
/// step 1), `op b` = the problem's next operation, and c = a op b. A complete completion must in
/// addition hold one step per operation, then `#` and the last result (then EOS or nothing). A
/// partial one passes when its completed steps do (a trailing unfinished step is not judged).
[[nodiscard]] inline bool check(const problem& p, std::string_view text, bool complete) {
  long prev = p.first;
  std::size_t step = 0, i = 0;
  const auto number = [&](long& v) {
    const std::size_t start = i;
    v = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9' && i - start < 9) v = v * 10 + (text[i++] - '0');
    return i > start;
  };
  while (i < text.size() && text[i] != '#') {
    const std::size_t end = text.find(';', i);
    if (end == std::string_view::npos) {
      if (complete) return false;  // an unfinished step where the answer should be
      break;
    }
    long a = 0, b = 0, c = 0;
    if (!number(a) || i >= end || (text[i] != '+' && text[i] != '-')) return false;
    const bool minus = text[i++] == '-';
    if (!number(b) || i >= end || text[i++] != '=' || !number(c) || i != end) return false;
    ++i;  // the ';'
    if (step >= p.ops() || a != prev || (minus ? -b : b) != p.operands[step] || c != a + (minus ? -b : b)) return false;
    prev = c;
    ++step;
  }
  if (i < text.size() && text[i] == '#') {
    const auto ans = answer_of(text.substr(i));
    return step == p.ops() && ans && *ans == prev;
  }
  return !complete;
}

/// The calculator step verifier as an `itscale::Verifier`: 1 when `check` passes, else 0; with
/// `noise` > 0 each verdict is flipped with that probability. Flips are a function of
/// (noise_seed, the item's tokens, complete), so the same item always gets the same verdict,
/// whatever the batching, the order or the thread.
class calculator_verifier {
 public:
  calculator_verifier(const itscale::llama2c_tokenizer& tok, double noise = 0, std::uint64_t noise_seed = 0)
      : chars_(tok), noise_(noise), noise_seed_(noise_seed) {}

  std::vector<double> verify(std::span<const itscale::verify_item> batch) const {
    std::vector<double> out;
    out.reserve(batch.size());
    for (const auto& it : batch) {
      const auto p = parse_prompt(chars_.prompt_text(it.prompt));
      bool ok = p && check(*p, chars_.text(it.sequence), it.complete);
      if (noise_ > 0 && flip(it)) ok = !ok;
      out.push_back(ok ? 1.0 : 0.0);
    }
    return out;
  }
  [[nodiscard]] itscale::score_range range() const noexcept { return {0, 1}; }
  [[nodiscard]] std::string_view name() const noexcept { return "calculator"; }
  [[nodiscard]] const charset& chars() const noexcept { return chars_; }

 private:
  [[nodiscard]] bool flip(const itscale::verify_item& it) const {
    std::uint64_t h = 0xcbf29ce484222325ull ^ (it.complete ? 0x9e3779b97f4a7c15ull : 0);
    const auto mix = [&h](std::span<const itscale::token_id> ts) {
      for (itscale::token_id t : ts) h = (h ^ static_cast<std::uint32_t>(t)) * 0x100000001b3ull;
      h = (h ^ 0xffu) * 0x100000001b3ull;  // separates prompt from sequence
    };
    mix(it.prompt);
    mix(it.sequence);
    return itscale::counter_rng(noise_seed_, h).uniform(0) < noise_;
  }

  charset chars_;
  double noise_;
  std::uint64_t noise_seed_;
};
static_assert(itscale::Verifier<calculator_verifier>);

}  // namespace arith
