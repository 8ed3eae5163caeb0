#pragma once
/// \file binary_reader.hpp
/// Internal: bounds-checked reading of little-endian int32 / float32 data from a file or a
/// memory buffer, for the llama2.c loaders. Every read checks the remaining size first, so a
/// truncated or hostile file ends in a `format_error` naming the file, never a read past the end.

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

/// `a * b`, or `false` when it overflows 64 bits (header values multiply into sizes).
inline bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t& out) noexcept {
  if (a != 0 && b > UINT64_MAX / a) return false;
  out = a * b;
  return true;
}

class binary_reader {
 public:
  /// Reads from memory; `name` is how messages refer to the data. The bytes must outlive the reader.
  binary_reader(std::span<const std::byte> bytes, std::string name)
      : name_(std::move(name)), mem_(bytes), size_(bytes.size()) {}

  /// Opens a regular file; throws `format_error` when it is missing, not a regular file or unreadable.
  static binary_reader open(const std::filesystem::path& path) {
    binary_reader r(std::span<const std::byte>(), path.string());
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(st)) r.fail("file not found");
    if (!std::filesystem::is_regular_file(st)) r.fail("not a regular file");
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) r.fail("cannot read its size (" + ec.message() + ")");
    r.file_.open(path, std::ios::binary);
    if (!r.file_) r.fail("cannot open it for reading");
    r.size_ = size;
    r.is_file_ = true;
    return r;
  }

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  [[nodiscard]] std::uint64_t offset() const noexcept { return pos_; }
  [[nodiscard]] std::uint64_t remaining() const noexcept { return size_ - pos_; }

  /// Throws `format_error` "<name>: <problem>".
  [[noreturn]] void fail(const std::string& problem) const {
    throw format_error("itscale: " + name_ + ": " + problem);
  }

  /// Copies `n` bytes to `dst`; `what` names the field for the message when the data ends first.
  void read_bytes(void* dst, std::uint64_t n, const std::string& what) {
    if (n > remaining())
      fail("truncated: " + what + " needs " + std::to_string(n) + " bytes at offset " + std::to_string(pos_) +
           ", but the data is " + std::to_string(size_) + " bytes");
    if (n == 0) return;
    if (is_file_) {
      file_.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
      if (static_cast<std::uint64_t>(file_.gcount()) != n)
        fail("read error in " + what + " at offset " + std::to_string(pos_) + " (the file changed size?)");
    } else {
      std::memcpy(dst, mem_.data() + pos_, static_cast<std::size_t>(n));
    }
    pos_ += n;
  }

  std::int32_t read_i32(const std::string& what) {
    std::uint32_t u = 0;
    read_bytes(&u, 4, what);
    return std::bit_cast<std::int32_t>(from_le(u));
  }

  float read_f32(const std::string& what) {
    std::uint32_t u = 0;
    read_bytes(&u, 4, what);
    return std::bit_cast<float>(from_le(u));
  }

  /// Reads `n` float32 values into `dst` (room for `n` floats).
  void read_f32s(float* dst, std::uint64_t n, const std::string& what) {
    std::uint64_t bytes = 0;
    if (!checked_mul(n, 4, bytes)) fail(what + " is too large");
    read_bytes(dst, bytes, what);
    if constexpr (std::endian::native == std::endian::big) {
      for (std::uint64_t i = 0; i < n; ++i) {
        std::uint32_t u = 0;
        std::memcpy(&u, dst + i, 4);
        u = from_le(u);
        std::memcpy(dst + i, &u, 4);
      }
    }
  }

 private:
  static std::uint32_t from_le(std::uint32_t u) noexcept {
    if constexpr (std::endian::native == std::endian::big)
      return (u >> 24) | ((u >> 8) & 0xFF00u) | ((u << 8) & 0xFF0000u) | (u << 24);
    else
      return u;
  }

  std::string name_;
  std::span<const std::byte> mem_;
  std::ifstream file_;
  bool is_file_ = false;
  std::uint64_t size_ = 0;
  std::uint64_t pos_ = 0;
};

}  // namespace detail
ITSCALE_END_NAMESPACE
