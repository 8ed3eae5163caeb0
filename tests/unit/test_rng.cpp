// Counter-based randomness: Philox4x32-10 against the published known answers, and the
// properties the decoders rely on (range, determinism, independent streams).

#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <set>

#include "itscale/core/rng.hpp"

using itscale::counter_rng;
using itscale::philox4x32;
using words = std::array<std::uint32_t, 4>;

namespace {
// Our key is one 64-bit word; Random123 writes it as two 32-bit words {k0, k1}.
constexpr std::uint64_t key_of(std::uint32_t k0, std::uint32_t k1) {
  return std::uint64_t{k1} << 32 | k0;
}
}  // namespace

TEST_CASE("philox4x32-10 reproduces the Random123 known-answer vectors") {
  // kat_vectors of the Random123 distribution, "philox4x32 10" lines.
  SUBCASE("zero counter, zero key") {
    CHECK(philox4x32({0, 0, 0, 0}, key_of(0, 0)) ==
          words{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  }
  SUBCASE("all-ones counter and key") {
    CHECK(philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                     key_of(0xffffffffu, 0xffffffffu)) ==
          words{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  }
  SUBCASE("digits of pi") {
    CHECK(philox4x32({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                     key_of(0xa4093822u, 0x299f31d0u)) ==
          words{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
  }
}

// The generator is constexpr: a known answer checked by the compiler proves it.
static_assert(philox4x32({0, 0, 0, 0}, 0) == words{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});

TEST_CASE("counter_rng: bits are philox of (stream lo, stream hi, step, index) keyed by the seed") {
  // The layout is documented in rng.hpp; decoders in other processes must be able to rebuild it.
  const std::uint64_t seed = 0x0123456789abcdefull, stream = 0xfedcba9876543210ull;
  const counter_rng r(seed, stream);
  CHECK(r.bits(7, 3) == philox4x32({0x76543210u, 0xfedcba98u, 7u, 3u}, seed));
  CHECK(r.seed() == seed);
  CHECK(r.stream() == stream);
}

TEST_CASE("counter_rng: uniform is in [0, 1) and built from the top 53 bits") {
  const counter_rng r(42, 0);
  std::size_t outside = 0;
  double lo = 1, hi = 0;
  for (std::uint32_t step = 0; step < 2000; ++step) {
    for (std::uint32_t index = 0; index < 4; ++index) {
      const double u = r.uniform(step, index);
      outside += (u >= 0.0 && u < 1.0) ? 0u : 1u;
      lo = u < lo ? u : lo;
      hi = u > hi ? u : hi;
    }
  }
  CHECK(outside == 0);
  // 8000 draws spread over the whole interval.
  CHECK(lo < 0.001);
  CHECK(hi > 0.999);
  // Hand-derived from the first two words of the bits: (w0:w1) >> 11, scaled by 2^-53.
  const auto b = r.bits(5, 1);
  const double expect =
      static_cast<double>((std::uint64_t{b[0]} << 32 | b[1]) >> 11) / 9007199254740992.0;
  CHECK(r.uniform(5, 1) == expect);
}

TEST_CASE("counter_rng: same (seed, stream, step, index) gives the same number") {
  const counter_rng a(9, 17), b(9, 17);
  for (std::uint32_t step = 0; step < 100; ++step) CHECK(a.uniform(step, 2) == b.uniform(step, 2));
  // A copy carries the identity, not a position: drawing from one does not move the other.
  const counter_rng c = a;
  (void)a.uniform(0);
  CHECK(c.uniform(0) == a.uniform(0));
}

TEST_CASE("counter_rng: distinct seeds, streams, steps and indices give distinct numbers") {
  std::set<double> seen;
  std::size_t draws = 0;
  for (std::uint64_t seed : {0ull, 1ull, 0x100000000ull}) {
    // Streams differing only in the high word must differ too (both halves enter the counter).
    for (std::uint64_t stream : {0ull, 1ull, 2ull, 0x100000000ull}) {
      const counter_rng r(seed, stream);
      for (std::uint32_t step = 0; step < 8; ++step)
        for (std::uint32_t index = 0; index < 4; ++index) {
          seen.insert(r.uniform(step, index));
          ++draws;
        }
    }
  }
  // 384 draws of 53 bits: any collision would mean two inputs map to one output.
  CHECK(seen.size() == draws);

  // Neighbouring streams are not shifted copies of each other.
  const counter_rng s0(3, 0), s1(3, 1);
  std::size_t equal = 0;
  for (std::uint32_t step = 0; step < 64; ++step) {
    equal += s0.uniform(step) == s1.uniform(step) ? 1u : 0u;
    equal += s0.uniform(step + 1) == s1.uniform(step) ? 1u : 0u;
  }
  CHECK(equal == 0);
}

TEST_CASE("counter_rng: coarse uniformity (chi-square over 10 bins)") {
  constexpr std::size_t bins = 10, n = 100000;
  std::array<std::size_t, bins> count{};
  const counter_rng r(2024, 5);
  for (std::uint32_t i = 0; i < n; ++i) {
    const auto b = static_cast<std::size_t>(r.uniform(i / 4, i % 4) * bins);
    ++count[b < bins ? b : 0];  // out of range is caught by the test above
  }
  const double expected = static_cast<double>(n) / bins;
  double chi2 = 0;
  for (std::size_t c : count) {
    const double d = static_cast<double>(c) - expected;
    chi2 += d * d / expected;
  }
  // 9 degrees of freedom: P(chi2 > 27.88) = 0.001. A generous bound, so the test only fails on
  // a real defect (a stuck bit or a wrong scale would give chi2 in the thousands).
  CHECK(chi2 < 27.88);

  // The mean of the raw uniforms too: 1/2 with standard error 1/sqrt(12 n) ~ 0.0009.
  double sum = 0;
  for (std::uint32_t i = 0; i < n; ++i) sum += counter_rng(77, 0).uniform(i);
  CHECK(sum / n == doctest::Approx(0.5).epsilon(0.01));
}
