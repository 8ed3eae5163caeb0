// Command-line helpers shared by the examples, on CLI11 (Debian libcli11-dev, header-only).
#pragma once

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <string>
#include <system_error>

#include <CLI/CLI.hpp>

namespace itscale_examples {

/// Plain decimal digits only, rewritten without leading zeros. Needed because CLI11 2.1 converts
/// integers with strtoull/strtoll in base 0: on its own it takes "-1" as 2^64 - 1 for an unsigned
/// option, "010" as octal 8 and "0x10" as hex. Use with `->transform()` so the rewrite sticks.
inline const CLI::Validator non_negative_integer{
    [](std::string& v) -> std::string {
      std::uint64_t x = 0;
      const char* end = v.data() + v.size();
      const auto [p, ec] = std::from_chars(v.data(), end, x);
      if (ec == std::errc::result_out_of_range) return "'" + v + "' is out of range";
      if (v.empty() || ec != std::errc{} || p != end) return "'" + v + "' is not a valid non-negative integer";
      v = std::to_string(x);
      return {};
    },
    "" /* no extra text in --help: the type is shown as UINT already */, "non-negative integer"};

/// Parses the command line. Returns -1 to go on, or the exit code to return from main: 0 after
/// --help (printed on stdout), 2 after a bad command line (CLI11's message on stderr).
inline int parse_command_line(CLI::App& app, int argc, char** argv) {
  const auto fail = [&app](const std::string& message) {
    std::fprintf(stderr, "%s: %s\nRun with --help for more information.\n", app.get_name().c_str(), message.c_str());
    return 2;
  };
  // Leftover arguments are reported below, the first one by name: CLI11 2.1's own message lists
  // them all in reverse order ("not expected: 3 --top-q" for `--top-q 3`).
  app.allow_extras();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help
    return fail(e.what());
  }
  if (const auto extra = app.remaining(); !extra.empty()) {
    const std::string& first = extra.front();
    return fail(first.size() > 1 && first[0] == '-' ? "unknown option " + first
                                                     : "unexpected argument '" + first + "'");
  }
  return -1;
}

}  // namespace itscale_examples
