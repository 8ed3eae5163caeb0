// The problems-file reader of itscale_scaling (examples/arith/problems_file.hpp): outside input,
// so every malformed line must be a problems_file_error naming the line and the rule, never
// undefined behaviour. Finding e of tests/fuzz/README.md: running totals of 9-digit operands
// overflowed problem::answer()'s int, and an answer above LONG_MAX wrapped on conversion.

#include <doctest/doctest.h>

#include <sstream>
#include <string>
#include <vector>

#include "../../examples/arith/problems_file.hpp"

namespace {

std::string error_of(const std::string& text) {
  std::istringstream in(text);
  try {
    (void)arith::read_problems(in, "p.jsonl");
  } catch (const arith::problems_file_error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("problems file: valid lines are read, blank lines skipped") {
  std::istringstream in("{\"prompt\": \"37+45-18+9=\", \"answer\": 73}\n\n  \r\n{\"prompt\": \"90+11-77=\", \"answer\": 24}\n");
  const auto ps = arith::read_problems(in, "p.jsonl");
  REQUIRE(ps.size() == 2);
  CHECK(ps[0].prompt() == "37+45-18+9=");
  CHECK(ps[0].answer() == 73);
  CHECK(ps[1].answer() == 24);
}

TEST_CASE("problems file: malformed lines are a problems_file_error naming the line and the rule") {
  CHECK(error_of("") == "p.jsonl: holds no problems");
  CHECK(error_of("{\"prompt\": \"1+2=\", \"answer\": 3}\n{oops") .find("p.jsonl:2: not valid JSON") == 0);
  CHECK(error_of("[1, 2]").find("p.jsonl:1: expected {") == 0);
  CHECK(error_of("{\"prompt\": \"1+2=\", \"answer\": 3.0}").find("expected {") != std::string::npos);
  CHECK(error_of("{\"prompt\": \"1*2=\", \"answer\": 2}").find("is not a chain") != std::string::npos);
  CHECK(error_of("{\"prompt\": \"12=\", \"answer\": 12}").find("is not a chain") != std::string::npos);
  CHECK(error_of("{\"prompt\": \"1+2=\", \"answer\": 4}").find("answer 4 is not the value of '1+2=' (3)") !=
        std::string::npos);
  // JSON text that is not UTF-8 is a parse error too, not a crash.
  CHECK(error_of("{\"prompt\": \"\xff\", \"answer\": 1}").find("not valid JSON") != std::string::npos);
}

TEST_CASE("problems file: huge numbers are a clear error, not an overflow (finding e)") {
  // Nine-digit operands are allowed; their running total must stay within int.
  CHECK(error_of("{\"prompt\": \"999999999+999999999+999999999=\", \"answer\": 2999999997}").find("is not a chain") !=
        std::string::npos);
  CHECK(error_of("{\"prompt\": \"1-999999999-999999999-999999999=\", \"answer\": 1}").find("is not a chain") !=
        std::string::npos);
  // At the edge of int it is still a problem.
  std::istringstream edge("{\"prompt\": \"999999999+999999999+147483649=\", \"answer\": 2147483647}");
  CHECK(arith::read_problems(edge, "p.jsonl")[0].answer() == 2147483647);
  // An answer above LONG_MAX (a JSON unsigned integer) and one below LONG_MIN (a float to JSON).
  CHECK(error_of("{\"prompt\": \"1+2=\", \"answer\": 18446744073709551615}").find("answer 18446744073709551615 is out of range") !=
        std::string::npos);
  CHECK(error_of("{\"prompt\": \"1+2=\", \"answer\": -99999999999999999999}").find("expected {") != std::string::npos);
  // More than nine digits in an operand is malformed (parse stops at nine).
  CHECK(error_of("{\"prompt\": \"1234567890+1=\", \"answer\": 1234567891}").find("is not a chain") != std::string::npos);
}
