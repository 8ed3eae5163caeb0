// itscale over llama.cpp (llama_cpp_source) against itscale over its own Eigen backend
// (llama2c_model), the same weights (aidreams260K as GGUF and as llama2.c file), one thread each:
//
//   decode/batch:B   itscale::generate sampling B sequences of 100 new tokens from one prompt
//                    (one batched extend of B rows a step, top-k 40 at T = 0.8, no EOS), on both
//                    backends in every iteration. The timed figure is llama.cpp's. Counters:
//                    llama_tok_s, eigen_tok_s (generated tokens per second of wall time),
//                    eigen_over_llama (their ratio: > 1 = the Eigen backend is faster), and
//                    llama_itscale_share, eigen_itscale_share: the fraction of the wall time spent
//                    outside the source (search, processors, bookkeeping), from the library's own
//                    metering (compute_stats.source_seconds vs wall_seconds).
//
//   release/batch:B  the source alone, as the decoders drive it: B sequences extended by one token
//                    100 times, each step's parents released after the extend. Counters
//                    extend_us, release_us (per token) and release_share: the part of the source's
//                    time spent in `release` (llama_memory_seq_rm); metered_source times release
//                    as the source's work, so decode's itscale shares above exclude it.
//
// Built with -DITSCALE_LLAMA_CPP=ON. The checkpoints are read from ITSCALE_DATA_DIR/models.

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <span>
#include <vector>

#include <itscale/backends/llama2c_model.hpp>
#include <itscale/backends/llama2c_tokenizer.hpp>
#include <itscale/backends/llama_cpp_source.hpp>
#include <itscale/decode/generate.hpp>

namespace {

namespace fs = std::filesystem;
using itscale::token_id;
const fs::path models_dir = fs::path(ITSCALE_DATA_DIR) / "models";

struct run_figures {
  double tokens = 0, wall = 0, in_source = 0;
  void add(const itscale::compute_stats& c) {
    tokens += static_cast<double>(c.generated_tokens());
    wall += c.wall_seconds;
    in_source += c.source_seconds;
  }
  double tok_s() const { return wall > 0 ? tokens / wall : 0; }
  double share() const { return wall > 0 ? (wall - in_source) / wall : 0; }
};

void decode(benchmark::State& st) {
  for (const char* f : {"aidreams260K.gguf", "aidreams260K.bin", "aidreams-tok512.bin"})
    if (!fs::exists(models_dir / f)) {
      st.SkipWithError((f + std::string(" not found in ITSCALE_DATA_DIR/models")).c_str());
      return;
    }
  static const itscale::llama_cpp_model_ptr gguf = itscale::load_llama_cpp_model(models_dir / "aidreams260K.gguf");
  const auto batch = static_cast<std::size_t>(st.range(0));
  itscale::llama_cpp_source llama(gguf, {.n_seq_max = 64, .n_ctx = 4096, .threads = 1});
  auto eigen = itscale::llama2c_model::load(models_dir / "aidreams260K.bin", {.threads = 1});
  const auto tok = itscale::llama2c_tokenizer::load(models_dir / "aidreams-tok512.bin");
  const std::vector<token_id> prompt = tok.encode("I dreamed", true);
  const itscale::sampling_options so{.stop = {.max_new_tokens = 100}, .do_sample = true, .seed = 1,
                                     .num_return_sequences = batch, .output_logprobs = false,
                                     .temperature = 0.8f, .top_k = 40};
  run_figures l, e;
  for (auto _ : st) {
    const auto gl = itscale::generate(llama, std::span<const token_id>(prompt), so);
    const auto ge = itscale::generate(eigen, std::span<const token_id>(prompt), so);
    l.add(gl.compute);
    e.add(ge.compute);
    st.SetIterationTime(gl.compute.wall_seconds);
  }
  st.counters["llama_tok_s"] = l.tok_s();
  st.counters["eigen_tok_s"] = e.tok_s();
  st.counters["eigen_over_llama"] = l.tok_s() > 0 ? e.tok_s() / l.tok_s() : 0;
  st.counters["llama_itscale_share"] = l.share();
  st.counters["eigen_itscale_share"] = e.share();
}

BENCHMARK(decode)->ArgName("batch")->Arg(1)->Arg(8)->Arg(32)->UseManualTime()->Unit(benchmark::kMillisecond);

void release(benchmark::State& st) {
  if (!fs::exists(models_dir / "aidreams260K.gguf")) {
    st.SkipWithError("aidreams260K.gguf not found in ITSCALE_DATA_DIR/models");
    return;
  }
  static const itscale::llama_cpp_model_ptr gguf = itscale::load_llama_cpp_model(models_dir / "aidreams260K.gguf");
  using clock = std::chrono::steady_clock;
  const auto batch = static_cast<std::size_t>(st.range(0));
  double ext = 0, rel = 0, tokens = 0;
  for (auto _ : st) {
    double it_ext = 0, it_rel = 0;
    itscale::llama_cpp_source s(gguf, {.n_seq_max = 64, .n_ctx = 4096, .threads = 1});
    const std::vector<token_id> prompt = {1, 300, 301, 302, 303, 304, 305};
    const auto p = s.prefill(prompt);
    std::vector<itscale::llama_cpp_source::handle> cur(batch, p), next(batch);
    std::vector<token_id> toks(batch);
    for (std::size_t step = 0; step < 100; ++step) {
      for (std::size_t b = 0; b < batch; ++b) toks[b] = static_cast<token_id>(3 + (step * 31 + b * 7) % 500);
      const auto t0 = clock::now();
      s.extend(cur, toks, next);
      const auto t1 = clock::now();
      if (step == 0) s.release(p);
      else
        for (auto h : cur) s.release(h);
      const auto t2 = clock::now();
      it_ext += std::chrono::duration<double>(t1 - t0).count();
      it_rel += std::chrono::duration<double>(t2 - t1).count();
      std::swap(cur, next);
    }
    for (auto h : cur) s.release(h);
    st.SetIterationTime(it_ext + it_rel);
    ext += it_ext;
    rel += it_rel;
    tokens += 100.0 * static_cast<double>(batch);
  }
  st.counters["extend_us"] = tokens > 0 ? ext / tokens * 1e6 : 0;
  st.counters["release_us"] = tokens > 0 ? rel / tokens * 1e6 : 0;
  st.counters["release_share"] = ext + rel > 0 ? rel / (ext + rel) : 0;
}

BENCHMARK(release)->ArgName("batch")->Arg(1)->Arg(8)->Arg(32)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  // llama.cpp's log off (it reports every context), its CPU backends from where the build put them.
  llama_log_set([](ggml_log_level level, const char* text, void*) {
    if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
  }, nullptr);
  itscale::llama_cpp_init(ITSCALE_LLAMA_CPP_BACKEND_DIR);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
