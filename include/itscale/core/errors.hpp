#pragma once
/// \file errors.hpp
/// The exceptions the library throws. Each message names the broken rule and the offending value.

#include <cstdio>
#include <stdexcept>
#include <string>

#include "itscale/core/abi.hpp"

// Untagged (core/abi.hpp): a `catch` in one translation unit must see what another throws,
// whatever flags each was built with.
ITSCALE_BEGIN_UNTAGGED_NAMESPACE

/// An option is out of its domain (`top_p = 1.5`, `num_beams = 0`, ...). Thrown by `validate()`.
class invalid_option : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// An argument other than an option is wrong: a token id outside the vocabulary, an empty prompt,
/// a span of the wrong length.
class invalid_input : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A backend (a `LogitSource`) produced something unusable: NaN or +inf logits, a row of the wrong
/// size, a token outside its vocabulary. Exceptions a backend throws itself pass through unchanged.
class backend_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file (a model checkpoint, a tokenizer) is not in the format its loader expects: missing,
/// truncated, of the wrong size, or with values outside their domain. The message names the file
/// and the problem.
class format_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Decoding cannot continue: the processors masked every token of a row, or left NaN or +inf in
/// it (a caller's processor writing NaN, a penalty or temperature overflowing a large logit).
class search_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A remote call failed (`backends/remote/`): the server answered an error, or could not be
/// reached. `status()` is the HTTP status (0 when there was no answer).
class remote_error : public backend_error {
 public:
  remote_error(const std::string& what, long status) : backend_error(what), status_(status) {}
  [[nodiscard]] long status() const noexcept { return status_; }

 private:
  long status_;
};

/// The caller's `stop_token` cancelled a remote call; its requests were aborted.
class request_cancelled : public backend_error {
 public:
  using backend_error::backend_error;
};

ITSCALE_END_UNTAGGED_NAMESPACE

ITSCALE_BEGIN_NAMESPACE

namespace detail {
/// Formats a number for error messages ("%g": short, exact enough to recognise the input).
inline std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
}  // namespace detail

ITSCALE_END_NAMESPACE
