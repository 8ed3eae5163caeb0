#pragma once
// Tally of conformance cases: one line per failure, the tie-order cases listed apart, and the
// closing "N passed, M failed" line that CI reads.

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
    if (!tie_.empty()) {
      std::string ids;
      for (const auto& t : tie_) ids += (ids.empty() ? "" : ", ") + t;
      std::printf("tie-order differences (proven, not failures): %zu: %s\n", tie_.size(), ids.c_str());
    }
    std::printf("%d passed, %d failed\n", passed_ + static_cast<int>(tie_.size()), failed_);
  }

 private:
  int passed_ = 0;
  int failed_ = 0;
  std::vector<std::string> tie_;
};

}  // namespace conformance
