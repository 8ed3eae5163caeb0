#pragma once
// Reading HF rows from JSON (null = -inf) and comparing a processed row with HF's: the kept/masked
// pattern exactly, kept values to 1e-5 relative, and the tie-order proof of the conformance README.

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace conformance {

inline constexpr float ninf = -std::numeric_limits<float>::infinity();

inline std::vector<float> read_row(const nlohmann::json& j) {
  std::vector<float> row;
  row.reserve(j.size());
  for (const auto& x : j) row.push_back(x.is_null() ? ninf : x.get<float>());
  return row;
}

/// A full row from HF's sparse form: kept ids with their values, everything else masked.
inline std::vector<float> read_sparse_row(const nlohmann::json& j, std::size_t vocab) {
  std::vector<float> row(vocab, ninf);
  const auto& ids = j.at("kept_ids");
  const auto& vals = j.at("kept_values");
  if (ids.size() != vals.size()) throw std::runtime_error("sparse row: kept_ids and kept_values differ in length");
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto t = ids[i].get<std::size_t>();
    if (t >= vocab) throw std::runtime_error("sparse row: kept id " + std::to_string(t) + " >= vocab");
    row[t] = vals[i].is_null() ? ninf : vals[i].get<float>();
  }
  return row;
}

inline bool close(float got, float want) {
  if (std::isinf(want) || std::isinf(got)) return got == want;
  return std::fabs(got - want) <= 1e-5f * std::fmax(1.0f, std::fabs(want));
}

struct row_verdict {
  enum kind { same, tie_order, differ } what = same;
  std::string detail;
};

/// Compares `got` with HF's `want`. `ties` is the row whose exact equalities decide whether a
/// kept/masked disagreement is only an order among equal logits (the input of the filters).
inline row_verdict compare_rows(std::span<const float> got, std::span<const float> want, std::span<const float> ties) {
  if (got.size() != want.size())
    return {row_verdict::differ, "row length " + std::to_string(got.size()) + " vs expected " + std::to_string(want.size())};
  std::vector<std::size_t> only_ours, only_hf;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool k_ours = got[i] != ninf, k_hf = want[i] != ninf;
    if (k_ours && !k_hf) only_ours.push_back(i);
    if (!k_ours && k_hf) only_hf.push_back(i);
    if (k_ours && k_hf && !close(got[i], want[i]))
      return {row_verdict::differ, "token " + std::to_string(i) + ": expected " + std::to_string(want[i]) + ", got " +
                                       std::to_string(got[i])};
  }
  if (only_ours.empty() && only_hf.empty()) return {};
  auto describe = [&] {
    std::string s = "kept only by us:";
    for (auto i : only_ours) s += " " + std::to_string(i);
    s += "; kept only by HF:";
    for (auto i : only_hf) s += " " + std::to_string(i);
    return s;
  };
  // Proof of a tie-order difference: as many kept on each side, and each disputed token has an
  // exactly equal logit among the tokens disputed the other way.
  auto has_twin = [&](std::size_t i, const std::vector<std::size_t>& others) {
    for (auto j : others)
      if (ties[i] == ties[j]) return true;
    return false;
  };
  bool proven = only_ours.size() == only_hf.size();
  for (auto i : only_ours) proven = proven && has_twin(i, only_hf);
  for (auto i : only_hf) proven = proven && has_twin(i, only_ours);
  return {proven ? row_verdict::tie_order : row_verdict::differ, describe()};
}

}  // namespace conformance
