#pragma once
/// \file rng.hpp
/// Counter-based randomness: every random number is a pure function of
/// (seed, stream, step, index), so results never depend on batch composition, on the order in
/// which sequences are processed, or on the number of threads.
///
/// The generator is Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
/// SC 2011), the counter-based generator of cuRAND, JAX and PyTorch's CUDA backend. It passes
/// BigCrush; the 64-bit seed is the key, the 128-bit counter is (stream, step, index).

#include <array>
#include <cstdint>

#include "itscale/core/abi.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Philox4x32 with 10 rounds: four 32-bit words out of a 128-bit counter and a 64-bit key.
[[nodiscard]] constexpr std::array<std::uint32_t, 4> philox4x32(std::array<std::uint32_t, 4> ctr,
                                                                std::uint64_t key) noexcept {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
  auto k0 = static_cast<std::uint32_t>(key), k1 = static_cast<std::uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = std::uint64_t{m0} * ctr[0];
    const std::uint64_t p1 = std::uint64_t{m1} * ctr[2];
    ctr = {static_cast<std::uint32_t>(p1 >> 32) ^ ctr[1] ^ k0, static_cast<std::uint32_t>(p1),
           static_cast<std::uint32_t>(p0 >> 32) ^ ctr[3] ^ k1, static_cast<std::uint32_t>(p0)};
    k0 += w0;
    k1 += w1;
  }
  return ctr;
}

/// The random stream of one sequence: `uniform(step, index)` is the `index`-th uniform number
/// drawn at decoding step `step`. Copying a stream copies its identity, not a position.
class counter_rng {
 public:
  constexpr counter_rng(std::uint64_t seed, std::uint64_t stream) noexcept
      : seed_(seed), stream_(stream) {}

  /// 128 random bits for (step, index).
  [[nodiscard]] constexpr std::array<std::uint32_t, 4> bits(std::uint32_t step,
                                                            std::uint32_t index) const noexcept {
    return philox4x32({static_cast<std::uint32_t>(stream_),
                       static_cast<std::uint32_t>(stream_ >> 32), step, index},
                      seed_);
  }

  /// A double uniform in [0, 1) with 53 random bits.
  [[nodiscard]] constexpr double uniform(std::uint32_t step, std::uint32_t index = 0) const noexcept {
    const auto r = bits(step, index);
    const std::uint64_t x = (std::uint64_t{r[0]} << 32 | r[1]) >> 11;
    return static_cast<double>(x) * 0x1.0p-53;
  }

  [[nodiscard]] constexpr std::uint64_t seed() const noexcept { return seed_; }
  [[nodiscard]] constexpr std::uint64_t stream() const noexcept { return stream_; }

 private:
  std::uint64_t seed_;
  std::uint64_t stream_;
};

ITSCALE_END_NAMESPACE
