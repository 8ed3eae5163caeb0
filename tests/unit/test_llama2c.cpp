// The llama2.c backend: checkpoint and tokenizer loaders (real files and corrupt copies of them),
// the forward pass against the float64 reference logits in tests/data/conformance/hf_models.json,
// greedy decoding through itscale::generate, the paged KV cache (forks, copy-on-write, memory
// accounting, context limit, all-or-nothing extend), and the LogitSource concept suite.
// The checkpoints live in ITSCALE_DATA_DIR/models (tests/data/models by default); a missing one fails.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <itscale/search.hpp>

#include <itscale/testing/source_suite.hpp>

using itscale::token_id;
namespace fs = std::filesystem;

namespace {

const fs::path data_dir{ITSCALE_DATA_DIR};
const fs::path models_dir = data_dir / "models";

/// Fails the calling test case (never a silent pass) when a data file is missing.
void require_models() {
  for (const fs::path& f : {models_dir / "aidreams260K.bin", models_dir / "stories260K.bin",
                            models_dir / "aidreams-tok512.bin", data_dir / "conformance" / "hf_models.json"})
    REQUIRE_MESSAGE(fs::exists(f), f.string() << " not found (ITSCALE_DATA_DIR = " << data_dir.string() << ")");
}

const nlohmann::json& reference() {
  static const nlohmann::json doc = [] {
    std::ifstream in(data_dir / "conformance" / "hf_models.json");
    return nlohmann::json::parse(in);
  }();
  return doc;
}

std::shared_ptr<const itscale::llama2c_weights> weights_of(const std::string& name) {
  return std::make_shared<const itscale::llama2c_weights>(
      itscale::load_llama2c_checkpoint(models_dir / (name + ".bin")));
}

std::vector<char> file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// A scratch directory under the system temp dir for corrupt copies (never the repo or shared/),
/// removed at exit.
fs::path scratch_dir() {
  struct scratch {
    fs::path dir = fs::temp_directory_path() / ("itscale_llama2c_test_" + std::to_string(std::random_device{}()));
    scratch() { fs::create_directories(dir); }
    ~scratch() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  };
  static const scratch s;
  return s.dir;
}

fs::path write_scratch(const std::string& name, const std::vector<char>& bytes) {
  const fs::path p = scratch_dir() / name;
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return p;
}

void put_i32(std::vector<char>& b, std::size_t at, std::int32_t v) { std::memcpy(b.data() + at, &v, 4); }

template <class F>
std::string what_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

std::vector<float> row_copy(itscale::llama2c_model& m, std::size_t r) {
  const auto row = m.logits().row(r);
  return {row.begin(), row.end()};
}

float max_abs_diff(std::span<const float> a, std::span<const float> b) {
  REQUIRE(a.size() == b.size());
  float d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

float diff_to_ref(std::span<const float> a, const nlohmann::json& ref) {
  REQUIRE(a.size() == ref.size());
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(double{a[i]} - ref[i].get<double>()));
  return static_cast<float>(d);
}

/// A fresh model's next-token row after `prefix`.
std::vector<float> fresh_row(const std::shared_ptr<const itscale::llama2c_weights>& w,
                             const std::vector<token_id>& prefix) {
  itscale::llama2c_model m(w);
  const auto h = m.prefill(prefix);
  auto r = row_copy(m, 0);
  m.release(h);
  return r;
}

}  // namespace

TEST_CASE("llama2c: both checkpoints load with the documented shapes") {
  require_models();
  const auto a = itscale::load_llama2c_checkpoint(models_dir / "aidreams260K.bin");
  CHECK(a.config.dim == 64);
  CHECK(a.config.hidden_dim == 172);
  CHECK(a.config.n_layers == 4);
  CHECK(a.config.n_heads == 4);
  CHECK(a.config.n_kv_heads == 4);
  CHECK(a.config.vocab_size == 512);
  CHECK(a.config.seq_len == 128);
  CHECK(a.config.shared_classifier);
  const auto s = itscale::load_llama2c_checkpoint(models_dir / "stories260K.bin");
  CHECK(s.config.n_layers == 5);
  CHECK(s.config.n_heads == 8);
  CHECK(s.config.n_kv_heads == 4);
  CHECK(s.config.kv_dim() == 32);
  CHECK(s.config.seq_len == 512);
  CHECK(s.layers.size() == 5);
  CHECK(s.layers[4].wk.rows() == 32);
  CHECK(&s.classifier() == &s.token_embedding);
}

TEST_CASE("llama2c: computed RoPE tables agree with the checkpoint's freq_cis tables") {
  require_models();
  for (const std::string name : {"aidreams260K", "stories260K"}) {
    CAPTURE(name);
    const itscale::llama2c_model m(weights_of(name));
    const auto& w = *m.weights();
    REQUIRE(m.rope_cos().rows() == w.freq_cis_real.rows());
    REQUIRE(m.rope_cos().cols() == w.freq_cis_real.cols());
    const float dc = (m.rope_cos() - w.freq_cis_real).cwiseAbs().maxCoeff();
    const float ds = (m.rope_sin() - w.freq_cis_imag).cwiseAbs().maxCoeff();
    MESSAGE(name << ": RoPE table difference vs checkpoint: cos " << dc << ", sin " << ds);
    // The export computed angles in float32; ours are double, rounded once.
    CHECK(dc < 1e-4f);
    CHECK(ds < 1e-4f);
  }
}

TEST_CASE("llama2c: teacher-forced logits match the float64 reference within 2e-4") {
  require_models();
  for (const std::string name : {"aidreams260K", "stories260K"}) {
    CAPTURE(name);
    const auto& ref = reference().at("models").at(name);
    const auto toks = ref.at("teacher_forced_tokens").get<std::vector<token_id>>();
    const auto& rows = ref.at("teacher_forced_logits_numpy_f64");
    REQUIRE(rows.size() == toks.size());
    const auto w = weights_of(name);

    // Step by step: prefill of the first token, then one extend per token (the decoder's path).
    itscale::llama2c_model m(w);
    auto h = m.prefill(std::span<const token_id>(toks.data(), 1));
    float worst_step = diff_to_ref(m.logits().row(0), rows[0]);
    for (std::size_t i = 1; i < toks.size(); ++i) {
      itscale::llama2c_model::handle c{};
      m.extend(std::span(&h, 1), std::span(&toks[i], 1), std::span(&c, 1));
      m.release(h);
      h = c;
      worst_step = std::max(worst_step, diff_to_ref(m.logits().row(0), rows[i]));
    }
    m.release(h);

    // One batched prefill per prefix length (the prompt path), checked on its last row.
    float worst_prefill = 0;
    for (std::size_t len : {std::size_t{2}, std::size_t{17}, std::size_t{64}, toks.size()}) {
      const auto p = m.prefill(std::span<const token_id>(toks.data(), len));
      worst_prefill = std::max(worst_prefill, diff_to_ref(m.logits().row(0), rows[len - 1]));
      m.release(p);
    }
    MESSAGE(name << ": largest |logit - reference| step by step " << worst_step << ", batched prefill "
                 << worst_prefill);
    CHECK(worst_step <= 2e-4f);
    CHECK(worst_prefill <= 2e-4f);
    CHECK(m.memory().blocks_in_use == 0);
  }
}

TEST_CASE("llama2c: greedy_from_bos through itscale::generate is exact") {
  require_models();
  for (const std::string name : {"aidreams260K", "stories260K"}) {
    CAPTURE(name);
    const auto expected = reference().at("models").at(name).at("greedy_from_bos").get<std::vector<token_id>>();
    itscale::llama2c_model m(weights_of(name));
    const std::vector<token_id> bos{1};
    const auto out = itscale::generate(m, std::span<const token_id>(bos), {.stop = {.max_new_tokens = 100}});
    REQUIRE(out.size() == 1);
    std::vector<token_id> got = bos;
    got.insert(got.end(), out[0].tokens.begin(), out[0].tokens.end());
    CHECK(got == expected);
    CHECK(m.live_handles() == 0);
    CHECK(m.memory().bytes_in_use == 0);
  }
}

TEST_CASE("llama2c: a batched extend over sequences of different lengths equals fresh prefills") {
  require_models();
  const auto w = weights_of("stories260K");
  const auto toks = reference().at("models").at("stories260K").at("teacher_forced_tokens").get<std::vector<token_id>>();
  itscale::llama2c_model m(w);
  const auto prefix = [&](std::size_t n) { return std::vector<token_id>(toks.begin(), toks.begin() + static_cast<std::ptrdiff_t>(n)); };
  const auto a = m.prefill(prefix(3));
  const auto b = m.prefill(prefix(16));  // ends exactly on a block boundary
  const auto c = m.prefill(prefix(40));
  const std::vector<itscale::llama2c_model::handle> parents{c, a, b, a, c};
  const std::vector<token_id> next{7, 300, 11, 300, 450};
  std::vector<itscale::llama2c_model::handle> kids(5);
  m.extend(parents, next, kids);
  const std::size_t lens[] = {40, 3, 16, 3, 40};
  float worst = 0;
  for (std::size_t i = 0; i < 5; ++i) {
    auto p = prefix(lens[i]);
    p.push_back(next[i]);
    worst = std::max(worst, max_abs_diff(m.logits().row(i), fresh_row(w, p)));
    CHECK(m.length(kids[i]) == lens[i] + 1);
  }
  MESSAGE("batched extend vs fresh prefill: largest difference " << worst);
  CHECK(worst <= 1e-4f);
  CHECK(max_abs_diff(m.logits().row(1), m.logits().row(3)) <= 1e-5f);
  for (auto h : kids) m.release(h);
  for (auto h : {a, b, c}) m.release(h);
  CHECK(m.memory().blocks_in_use == 0);
  CHECK(m.memory().live_tokens == 0);
}

TEST_CASE("llama2c: forking shares the parent's blocks and copies at most one") {
  require_models();
  const auto w = weights_of("stories260K");
  itscale::llama2c_model m(w);
  REQUIRE(m.cache().block_tokens() == 16);
  // 500 tokens (31 full blocks + 4 positions), the context is 512.
  std::vector<token_id> prompt(500);
  for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<token_id>(3 + (i * 37) % 500);
  const auto p = m.prefill(prompt);
  const auto st0 = m.memory();
  CHECK(st0.blocks_in_use == 32);
  CHECK(st0.live_tokens == 500);
  CHECK(st0.bytes_in_use == 32 * st0.block_bytes);
  CHECK(st0.block_bytes == 5 * 2 * 16 * 32 * sizeof(float));

  // Eight children of the same parent: the first writes into the shared partial block in place,
  // each other copies that one block. Nothing of the 31 full blocks is copied.
  const std::vector<itscale::llama2c_model::handle> parents(8, p);
  const std::vector<token_id> next{5, 5, 6, 7, 8, 9, 10, 11};
  std::vector<itscale::llama2c_model::handle> kids(8);
  m.extend(parents, next, kids);
  const auto st1 = m.memory();
  CHECK(st1.blocks_in_use == 32 + 7);
  CHECK(st1.live_tokens == 500 + 8 * 501);
  // The rows equal a fresh prefill of the same prefix; equal tokens give equal rows.
  auto pre = prompt;
  pre.push_back(5);
  CHECK(max_abs_diff(m.logits().row(0), fresh_row(w, pre)) <= 1e-4f);
  CHECK(max_abs_diff(m.logits().row(0), m.logits().row(1)) <= 1e-5f);
  pre.back() = 11;
  CHECK(max_abs_diff(m.logits().row(7), fresh_row(w, pre)) <= 1e-4f);

  // The parent still extends correctly after its partial block was written by a child.
  itscale::llama2c_model::handle q{};
  const token_id t = 99;
  m.extend(std::span(&p, 1), std::span(&t, 1), std::span(&q, 1));
  pre.back() = 99;
  CHECK(max_abs_diff(m.logits().row(0), fresh_row(w, pre)) <= 1e-4f);
  m.release(q);

  // A decoder's step (extend the only child, then release the parent) copies nothing.
  m.release(p);
  for (std::size_t i = 1; i < 8; ++i) m.release(kids[i]);
  const auto before = m.memory().blocks_in_use;
  itscale::llama2c_model::handle g{};
  m.extend(std::span(&kids[0], 1), std::span(&t, 1), std::span(&g, 1));
  CHECK(m.memory().blocks_in_use == before);
  m.release(kids[0]);
  m.release(g);

  const auto st2 = m.memory();
  CHECK(st2.live_sequences == 0);
  CHECK(st2.live_tokens == 0);
  CHECK(st2.blocks_in_use == 0);
  CHECK(st2.bytes_in_use == 0);
  CHECK(st2.bytes_allocated > 0);  // pooled for reuse...
  m.trim();
  CHECK(m.memory().bytes_allocated == 0);  // ...until trimmed
}

TEST_CASE("llama2c: the context limit and failed extends leave no handle and no block behind") {
  require_models();
  itscale::llama2c_model m(weights_of("aidreams260K"));  // seq_len 128
  const std::vector<token_id> too_long(129, 5);
  CHECK(what_of([&] { (void)m.prefill(too_long); }).find("context is 128") != std::string::npos);
  CHECK(m.live_handles() == 0);
  CHECK(m.memory().blocks_in_use == 0);

  const auto full = m.prefill(std::vector<token_id>(128, 5));
  const auto ok = m.prefill(std::vector<token_id>{1, 2});
  const auto st = m.memory();
  std::vector<itscale::llama2c_model::handle> kids(2);
  CHECK_THROWS_AS(m.extend(std::vector{ok, full}, std::vector<token_id>{3, 3}, kids), itscale::invalid_input);
  CHECK_THROWS_AS(m.extend(std::vector{ok, ok}, std::vector<token_id>{3, 512}, kids), itscale::invalid_input);
  m.release(ok);
  CHECK_THROWS_AS(m.extend(std::vector{full, ok}, std::vector<token_id>{3, 3}, kids), itscale::invalid_input);
  CHECK(m.live_handles() == 1);
  CHECK(m.memory().blocks_in_use == st.blocks_in_use - 1);
  m.release(full);
  CHECK(m.memory().blocks_in_use == 0);
}

TEST_CASE("llama2c: a separate classifier (negative vocab_size) loads and is used") {
  require_models();
  // Same weights with wcls = the embedding appended and vocab_size negated: identical logits.
  auto bytes = file_bytes(models_dir / "aidreams260K.bin");
  const std::size_t emb_bytes = 512 * 64 * 4;
  std::vector<char> sep(bytes);
  sep.insert(sep.end(), bytes.begin() + 28, bytes.begin() + 28 + static_cast<std::ptrdiff_t>(emb_bytes));
  put_i32(sep, 20, -512);
  const auto w_sep = std::make_shared<const itscale::llama2c_weights>(
      itscale::load_llama2c_checkpoint(write_scratch("separate.bin", sep)));
  CHECK_FALSE(w_sep->config.shared_classifier);
  CHECK(w_sep->config.vocab_size == 512);
  CHECK(&w_sep->classifier() == &w_sep->wcls);
  const std::vector<token_id> prompt{1, 319, 459, 355};
  CHECK(fresh_row(w_sep, prompt) == fresh_row(weights_of("aidreams260K"), prompt));
  // A classifier that differs changes the logits (so wcls is really the one used).
  std::vector<float> one(1, 0.5f);
  std::memcpy(sep.data() + sep.size() - emb_bytes + 64 * 4 * 7, one.data(), 4);  // wcls[7][0]
  const auto w_mod = std::make_shared<const itscale::llama2c_weights>(
      itscale::parse_llama2c_checkpoint(std::as_bytes(std::span(sep)), "modified"));
  CHECK(fresh_row(w_mod, prompt)[7] != fresh_row(w_sep, prompt)[7]);
}

TEST_CASE("llama2c: corrupt checkpoints each throw format_error naming the file and the problem") {
  require_models();
  const auto good = file_bytes(models_dir / "stories260K.bin");
  struct corrupt {
    std::string name;
    std::vector<char> bytes;
    std::string expect;
  };
  std::vector<corrupt> cases;
  const auto with = [&](const std::string& name, std::size_t field, std::int32_t v, const std::string& expect) {
    auto b = good;
    put_i32(b, field * 4, v);
    cases.push_back({name, b, expect});
  };
  cases.push_back({"empty.bin", {}, "the header needs 28 bytes"});
  cases.push_back({"short_header.bin", std::vector<char>(good.begin(), good.begin() + 10), "the header needs 28 bytes"});
  cases.push_back({"truncated.bin", std::vector<char>(good.begin(), good.begin() + 100000), "size mismatch"});
  cases.push_back({"cut_one_byte.bin", std::vector<char>(good.begin(), good.end() - 1), "size mismatch"});
  auto longer = good;
  longer.insert(longer.end(), 4, '\0');
  cases.push_back({"extra.bin", longer, "implies 1056540 bytes, the data is 1056544 bytes"});
  with("neg_dim.bin", 0, -64, "dim = -64 must be positive");
  with("zero_layers.bin", 2, 0, "n_layers = 0 must be positive");
  with("zero_vocab.bin", 5, 0, "vocab_size = 0 must be non-zero");
  with("int_min_vocab.bin", 5, INT32_MIN, "vocab_size = -2147483648 exceeds the limit");
  with("huge_dim.bin", 0, 1 << 30, "dim = 1073741824 exceeds the limit");
  with("huge_hidden.bin", 1, 0x7fffffff, "hidden_dim = 2147483647 exceeds the limit");
  with("huge_seq.bin", 6, 0x7fffffff, "seq_len = 2147483647 exceeds the limit");
  with("heads_not_dividing.bin", 3, 6, "dim = 64 is not a multiple of n_heads = 6");
  with("kv_not_dividing.bin", 4, 3, "n_heads = 8 is not a multiple of n_kv_heads = 3");
  with("kv_above_heads.bin", 4, 16, "n_heads = 8 is not a multiple of n_kv_heads = 16");
  with("odd_head.bin", 3, 64, "head size dim / n_heads = 1 is odd");
  with("other_shape.bin", 1, 256, "size mismatch");  // consistent header, wrong for this data
  {
    auto b = good;
    const float nan = std::nanf("");
    std::memcpy(b.data() + 28 + 512 * 64 * 4 + 64 * 4 * 5 + 8, &nan, 4);  // in wq of layer 0
    cases.push_back({"nan.bin", b, "tensor wq of layer 0 holds a non-finite value"});
  }
  for (const auto& c : cases) {
    CAPTURE(c.name);
    const fs::path p = write_scratch(c.name, c.bytes);
    std::string msg;
    try {
      (void)itscale::load_llama2c_checkpoint(p);
      msg = "(no exception)";
    } catch (const itscale::format_error& e) {
      msg = e.what();
    }
    CAPTURE(msg);
    CHECK(msg.find(p.string()) != std::string::npos);
    CHECK(msg.find(c.expect) != std::string::npos);
    // The in-memory parser gives the same verdict.
    const std::string mem = what_of([&] {
      (void)itscale::parse_llama2c_checkpoint(std::as_bytes(std::span(c.bytes)), "mem:" + c.name);
    });
    CHECK(mem.find(c.expect) != std::string::npos);
    CHECK(mem.find("mem:" + c.name) != std::string::npos);
  }
  const std::string missing = what_of([] { (void)itscale::load_llama2c_checkpoint("/nonexistent/x.bin"); });
  CHECK(missing.find("/nonexistent/x.bin: file not found") != std::string::npos);
  const std::string dir = what_of([] { (void)itscale::load_llama2c_checkpoint(scratch_dir()); });
  CHECK(dir.find("not a regular file") != std::string::npos);
  // Tighter limits reject the real file by its header, before reading any tensor.
  const std::string lim = what_of([] {
    (void)itscale::load_llama2c_checkpoint(models_dir / "stories260K.bin", {.max_seq_len = 256});
  });
  CHECK(lim.find("seq_len = 512 exceeds the limit 256") != std::string::npos);
  CHECK_THROWS_AS((void)itscale::load_llama2c_checkpoint(models_dir / "stories260K.bin", {.max_dim = 0}),
                  itscale::invalid_option);
}

TEST_CASE("llama2c tokenizer: loads, matches the model's vocabulary, encodes as llama2.c, round-trips") {
  require_models();
  const auto tok = itscale::llama2c_tokenizer::load(models_dir / "aidreams-tok512.bin");
  CHECK(tok.vocab_size() == 512);
  CHECK(tok.max_token_length() == 10);
  CHECK(tok.piece(1) == "\n<s>\n");
  CHECK(tok.piece(2) == "\n</s>\n");
  CHECK(tok.piece(3) == "<0x00>");
  CHECK(tok.piece(258) == "<0xFF>");
  CHECK_NOTHROW(itscale::check_vocab_match(tok, 512));
  CHECK(what_of([&] { itscale::check_vocab_match(tok, 32000); }).find("512 tokens but the model's vocabulary is 32000") !=
        std::string::npos);

  // Expected ids from a line-by-line Python transliteration of llama2.c's encode() run over this
  // tokenizer file (independent of this library): merges by score, byte fallback for é, ï, ☃.
  CHECK(tok.encode("I was flying over the sea") ==
        std::vector<token_id>{1, 303, 272, 340, 279, 438, 451, 264, 271, 350, 312, 266, 430, 435});
  CHECK(tok.encode("naïve café ☃") ==
        std::vector<token_id>{1, 324, 435, 198, 178, 339, 273, 435, 443, 198, 172, 429, 229, 155, 134});
  // Checked by hand against the vocabulary: " I" " w" "as" ... are entries, " fl" is not.
  CHECK(tok.piece(303) == " I");
  CHECK(tok.piece(264) == "ing");
  CHECK(tok.piece(198) == "<0xC3>");  // 0xC3 + 3
  // Without BOS: the same minus the leading 1; empty text: no dummy prefix.
  const auto no_bos = tok.encode("I was flying over the sea", false);
  CHECK(no_bos == std::vector<token_id>{303, 272, 340, 279, 438, 451, 264, 271, 350, 312, 266, 430, 435});
  CHECK(tok.encode("", true) == std::vector<token_id>{1});
  CHECK(tok.encode("", false).empty());

  // Round trips, including multi-byte UTF-8 through byte fallback and leading spaces.
  for (const std::string text : {"Once upon a time, I dreamed of a cat.", "naïve café ☃ — 日本語",
                                 "  two leading spaces", "line\nbreak\ttab", "x"}) {
    CAPTURE(text);
    const auto ids = tok.encode(text);
    CHECK(tok.decode(ids) == text);
    // Every piece concatenated is the dummy-prefixed text (byte tokens as their bytes).
    std::string joined;
    for (std::size_t i = 1; i < ids.size(); ++i) joined += tok.decode(-1, ids[i]);
    CHECK(joined == " " + text);
  }
  // decode: byte tokens become bytes; the space after BOS goes, elsewhere it stays.
  CHECK(tok.decode(1, 303) == "I");
  CHECK(tok.decode(5, 303) == " I");
  CHECK(tok.decode(-1, 3 + 'A') == "A");
  CHECK_THROWS_AS((void)tok.decode(-1, 512), itscale::invalid_input);
}

TEST_CASE("llama2c tokenizer: corrupt files each throw format_error naming the problem") {
  require_models();
  const auto good = file_bytes(models_dir / "aidreams-tok512.bin");
  struct corrupt {
    std::string name;
    std::vector<char> bytes;
    std::string expect;
  };
  std::vector<corrupt> cases;
  cases.push_back({"tok_empty.bin", {}, "truncated: header max_token_length"});
  cases.push_back({"tok_header_only.bin", std::vector<char>(good.begin(), good.begin() + 4), "no tokens"});
  cases.push_back({"tok_cut_in_bytes.bin", std::vector<char>(good.begin(), good.begin() + 29), "truncated: token 1 bytes"});
  cases.push_back({"tok_cut_in_len.bin", std::vector<char>(good.begin(), good.begin() + 10), "truncated: token 0 length"});
  auto b = good;
  put_i32(b, 0, 0);
  cases.push_back({"tok_zero_max.bin", b, "max_token_length = 0"});
  b = good;
  put_i32(b, 0, -7);
  cases.push_back({"tok_neg_max.bin", b, "max_token_length = -7"});
  b = good;
  put_i32(b, 8, -1);  // token 0's length
  cases.push_back({"tok_neg_len.bin", b, "token 0 has length -1"});
  b = good;
  put_i32(b, 8, 0x7fffffff);
  cases.push_back({"tok_huge_len.bin", b, "token 0 has length 2147483647"});
  b = good;
  const float inf = INFINITY;
  std::memcpy(b.data() + 4, &inf, 4);
  cases.push_back({"tok_inf_score.bin", b, "token 0 has a non-finite score"});
  for (const auto& c : cases) {
    CAPTURE(c.name);
    const fs::path p = write_scratch(c.name, c.bytes);
    std::string msg;
    try {
      (void)itscale::llama2c_tokenizer::load(p);
      msg = "(no exception)";
    } catch (const itscale::format_error& e) {
      msg = e.what();
    }
    CAPTURE(msg);
    CHECK(msg.find(p.string()) != std::string::npos);
    CHECK(msg.find(c.expect) != std::string::npos);
  }
  CHECK(what_of([] { (void)itscale::llama2c_tokenizer::load("/nonexistent/tok.bin"); }).find("file not found") !=
        std::string::npos);
}

TEST_CASE("llama2c: the LogitSource concept suite") {
  require_models();
  for (const std::string name : {"aidreams260K", "stories260K"}) {
    CAPTURE(name);
    const auto w = weights_of(name);
    // Batched and single-row products round differently (see llama2c_model.hpp): a tolerance.
    itscale::testing::check_logit_source([&] { return itscale::llama2c_model(w); }, {.tolerance = 1e-4f});
  }
}
