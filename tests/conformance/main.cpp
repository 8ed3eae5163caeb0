// itscale_conformance FILE.json ...: runs Hugging Face golden outputs against the library.
// The format of each file is recognised from its content, not its name, so new files in the same
// formats run unchanged. Prints a line per failure and per tie-order case, a "T tie-order" line,
// and ends with "N passed, M failed" (tie-order cases are in neither count: report.hpp); exits 1
// if anything failed, never for a tie-order case.

#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "beam_hash_cases.hpp"
#include "model_cases.hpp"
#include "processor_cases.hpp"
#include "report.hpp"
#include "sampling_chain_cases.hpp"

namespace {

void run_file(const std::string& path, conformance::report& rep) {
  std::ifstream in(path);
  if (!in) {
    rep.fail(path, "cannot open the file");
    return;
  }
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    rep.fail(path, std::string("invalid JSON: ") + e.what());
    return;
  }
  const std::string name = path.substr(path.find_last_of('/') + 1);
  if (doc.contains("models")) return conformance::run_model_cases(doc, name, path, rep);
  if (!doc.contains("cases") || !doc.at("cases").is_array() || doc.at("cases").empty()) {
    rep.fail(name, "unrecognised format: no 'models' and no non-empty 'cases' array");
    return;
  }
  const auto& first = doc.at("cases")[0];
  if (first.contains("op")) return conformance::run_processor_cases(doc, name, rep);
  if (first.contains("generated")) return conformance::run_sampling_chain_cases(doc, name, rep);
  if (first.contains("config") && (first.contains("sequences") || first.contains("results")))
    return conformance::run_beam_hash_cases(doc, name, rep);
  rep.fail(name, "unrecognised case format (keys of the first case: " + first.dump().substr(0, 200) + ")");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: itscale_conformance FILE.json ...\n");
    return 2;
  }
  conformance::report rep;
  for (int i = 1; i < argc; ++i) run_file(argv[i], rep);
  rep.print_summary();
  return rep.failed() == 0 ? 0 : 1;
}
