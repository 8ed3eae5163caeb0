#pragma once
// Tally of conformance cases. Each case lands in exactly one of three counts:
// - passed: our output equals HF's (masks exactly, values within the file's tolerance);
// - failed: it differs, or the case cannot be run; any failure makes the runner exit 1;
// - tie-order: it differs only in the order of exactly equal logits, proven by the caller (the
//   rule of the conformance README). HF's order there is torch's unstable sort, so the case is
//   neither passed nor failed, and it does not make the runner exit 1.
// Printed: a FAIL or TIE-ORDER line per such case, then "T tie-order (neither passed nor failed)"
// (with the case ids when T > 0), then the closing line CI reads, "N passed, M failed".

#include <cstdio>
#include <string>
#include <vector>

namespace conformance {

class report {
 public:
  void pass() { ++passed_; }

  void fail(const std::string& id, const std::string& why) {
    ++failed_;
    std::printf("FAIL %s: %s\n", id.c_str(), why.c_str());
  }

  /// A case whose only difference is the order of exactly equal logits (proven by the caller).
  void tie_order(const std::string& id, const std::string& detail) {
    tie_.push_back(id);
    std::printf("TIE-ORDER %s: %s\n", id.c_str(), detail.c_str());
  }

  [[nodiscard]] int failed() const { return failed_; }

  void print_summary() const {
    std::string ids;
    for (const auto& t : tie_) ids += (ids.empty() ? ": " : ", ") + t;
    std::printf("%zu tie-order (neither passed nor failed)%s\n", tie_.size(), ids.c_str());
    std::printf("%d passed, %d failed\n", passed_, failed_);
  }

 private:
  int passed_ = 0;
  int failed_ = 0;
  std::vector<std::string> tie_;
};

}  // namespace conformance
