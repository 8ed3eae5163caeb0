// itscale_fuzz_arith: the parsers of outside input in the arith example: the problems-file reader
// (examples/arith/problems_file.hpp: JSONL lines of {"prompt", "answer"}), problem::parse on the
// prompt text, and the verifier's readers of generated text (score_text, extract_answer). The
// reader must return problems or throw problems_file_error; nothing may overflow (UBSan) or
// crash. A problem read back must print to the prompt it came from, with its answer.

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>

#include "arith/arith_task.hpp"
#include "arith/problems_file.hpp"
#include "fuzz_support.hpp"

using fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  {
    std::istringstream in{std::string(text)};
    try {
      const auto ps = arith::read_problems(in, "fuzz.jsonl");
      check(!ps.empty(), "a file read without error has problems");
      for (const auto& p : ps) {
        check(!p.ops.empty(), "a problem has operations");
        const auto again = arith::problem::parse(p.prompt());
        check(again.has_value() && again->prompt() == p.prompt() && again->answer() == p.answer(),
              "a problem reads back from its prompt");
        (void)arith::score_text(p, p.completion(), true);
      }
    } catch (const arith::problems_file_error&) {
    }
  }
  // The prompt parser and the verifier's text readers on the raw bytes.
  if (const auto p = arith::problem::parse(text)) {
    check(p->totals().size() == p->ops.size(), "one running total per operation");
    // The verifier reads unsigned numbers of at most 9 digits: a chain staying in [0, 10^9) is
    // what the task generates, and then its own completion must score 1.
    bool in_task_range = p->first >= 0;
    for (int t : p->totals()) in_task_range = in_task_range && t >= 0 && t < 1000000000;
    if (in_task_range) check(arith::score_text(*p, p->completion(), true) == 1.0, "a problem's own completion scores 1");
    const std::size_t cut = size / 2;
    (void)arith::score_text(*p, text.substr(cut), (size & 1u) != 0);
  }
  (void)arith::extract_answer(text);
  return 0;
}
