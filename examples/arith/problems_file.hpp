#pragma once
/// \file problems_file.hpp
/// Reading chain-arithmetic problems from a JSONL file, one `{"prompt": "37+45-18+9=", "answer":
/// 73}` per line (blank lines skipped), as `itscale_scaling --problems` does. Outside input: every
/// malformed line is a `problems_file_error` naming the file, the line and the rule; nothing in a
/// line can overflow (operands have at most 9 digits, running totals stay within int, the answer
/// must fit a long). Demo code shared by the example, its tests and the fuzz target.

#include <climits>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <istream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "arith_task.hpp"

namespace arith {

/// A problems file that cannot be read or is malformed; the message names the file and the line.
class problems_file_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The problems of the JSONL text in `in`; `name` (the path) prefixes the messages. Throws
/// `problems_file_error` on the first bad line, or if there is no problem at all.
[[nodiscard]] inline std::vector<problem> read_problems(std::istream& in, const std::string& name) {
  std::vector<problem> out;
  std::string line;
  for (std::size_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string at = name + ":" + std::to_string(n) + ": ";
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw problems_file_error(at + "not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string() || !j.contains("answer") ||
        !j["answer"].is_number_integer())
      throw problems_file_error(at + "expected {\"prompt\": \"37+45-18+9=\", \"answer\": 73}");
    const auto prompt = j["prompt"].get<std::string>();
    const auto p = problem::parse(prompt);
    if (!p || p->ops.empty())
      throw problems_file_error(at + "prompt '" + prompt + "' is not a chain 'x+y-z...=' of decimal numbers");
    // problem::parse keeps every running total within int; the answer is checked before the
    // conversion (an unsigned JSON integer above LONG_MAX would wrap).
    const nlohmann::json& a = j["answer"];
    if (a.is_number_unsigned() && a.get<std::uint64_t>() > static_cast<std::uint64_t>(LONG_MAX))
      throw problems_file_error(at + "answer " + a.dump() + " is out of range");
    const auto answer = a.get<long>();
    if (answer != p->answer())
      throw problems_file_error(at + "answer " + std::to_string(answer) + " is not the value of '" + prompt + "' (" +
                                std::to_string(p->answer()) + ")");
    out.push_back(*p);
  }
  if (out.empty()) throw problems_file_error(name + ": holds no problems");
  return out;
}

/// As above from the file at `path`.
[[nodiscard]] inline std::vector<problem> read_problems(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw problems_file_error("cannot open '" + path + "'");
  return read_problems(f, path);
}

}  // namespace arith
