// handle_guard: every adopted handle is released exactly once, whether by value (in any order,
// through its hash index) or at destruction — with keys that collide in the low bits.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include <itscale/search.hpp>

namespace {

// Only what handle_guard touches is real: release counts per handle.
struct counting_source {
  using handle = std::uint64_t;
  std::map<handle, int>* released;
  [[nodiscard]] std::size_t vocab_size() const { return 1; }
  handle prefill(std::span<const itscale::token_id>) { return 0; }
  void extend(std::span<const handle>, std::span<const itscale::token_id>, std::span<handle>) {}
  [[nodiscard]] itscale::logits_view logits() { return {}; }
  void release(handle h) noexcept { ++(*released)[h]; }
};
static_assert(itscale::LogitSource<counting_source>);

}  // namespace

TEST_CASE("handle_guard releases each handle exactly once, by value in any order or at the end") {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 20; ++round) {
    std::map<std::uint64_t, int> released;
    counting_source src{&released};
    std::vector<std::uint64_t> hs;
    for (std::uint64_t i = 0; i < 1000; ++i) hs.push_back((i << 32) | 0xABCDu);  // equal low bits
    {
      itscale::detail::handle_guard<counting_source> guard(src);
      for (std::size_t i = 0; i < hs.size(); ++i) {
        if (i % 7 == 0) guard.reserve(7);
        guard.adopt(hs[i]);
      }
      std::shuffle(hs.begin(), hs.end(), rng);
      const std::size_t early = static_cast<std::size_t>(round) * 50;
      for (std::size_t i = 0; i < early; ++i) guard.release(hs[i]);
      for (std::size_t i = 0; i < early; ++i) guard.release(hs[i]);  // second release: ignored
      CHECK(guard.size() == hs.size() - early);
    }
    REQUIRE(released.size() == hs.size());
    for (const auto& [h, n] : released) CHECK(n == 1);
  }
}
