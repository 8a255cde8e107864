// The _X16 layouts: the repacking and the way back (kernels/repack.h).
#include "kernels/repack.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/cpu.h"

namespace whale {

namespace {

// Per GGML block: its bytes, the data bytes after the f16 scale, and what is added to each
// data byte in the repacked layout (Q8_0: 128, the int8 value as unsigned).
struct Layout {
  int64_t block, data;
  uint8_t add;
};

Layout layout_of(DType t) {
  switch (block_dtype(t)) {
    case DType::Q4_0:
      return {18, 16, 0};
    case DType::Q8_0:
      return {34, 32, 128};
    default:
      throw std::invalid_argument("no repacked layout for " + std::string(dtype_name(t)));
  }
}

std::atomic<int>& repack_slot() {  // -1: not decided yet
  static std::atomic<int> slot{-1};
  return slot;
}

}  // namespace

DType x16_of(DType t) {
  return t == DType::Q4_0 ? DType::Q4_0_X16 : t == DType::Q8_0 ? DType::Q8_0_X16 : DType::F32;
}

void repack_x16(DType t, uint8_t* data, int64_t rows, int64_t cols) {
  const Layout L = layout_of(t);
  if (rows % kX16Rows != 0 || cols % 32 != 0)
    throw std::invalid_argument("repack_x16: rows must be a multiple of 16, cols of 32");
  const int64_t nb = cols / 32, bb = x16_block_bytes(x16_of(block_dtype(t)));
  const size_t group = size_t(kX16Rows * nb * L.block);
  const int64_t groups = rows / kX16Rows;
  // Groups are independent: both threads for a large matrix (a model's load time).
#pragma omp parallel num_threads(num_threads()) if (size_t(groups) * group >= (size_t(1) << 22))
  {
    std::vector<uint8_t> plain(group);
#pragma omp for schedule(static)
    for (int64_t g = 0; g < groups; g++) {
      uint8_t* p = data + size_t(g) * group;
      std::memcpy(plain.data(), p, group);
      for (int64_t b = 0; b < nb; b++) {
        uint8_t* out = p + b * bb;
        for (int64_t i = 0; i < kX16Rows; i++) {
          const uint8_t* blk = plain.data() + (i * nb + b) * L.block;
          std::memcpy(out + 2 * i, blk, 2);
          for (int64_t c = 0; c < L.data / 4; c++)
            for (int j = 0; j < 4; j++)
              out[32 + 64 * c + 4 * i + j] = uint8_t(blk[2 + 4 * c + j] + L.add);
        }
      }
    }
  }
}

void unpack_x16_row(DType t, const uint8_t* data, int64_t cols, int64_t r, uint8_t* out) {
  const Layout L = layout_of(t);
  const int64_t nb = cols / 32, i = r % kX16Rows, bb = x16_block_bytes(t);
  const uint8_t* g = data + size_t(r / kX16Rows) * size_t(kX16Rows * nb * L.block);
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t* in = g + b * bb;
    uint8_t* blk = out + b * L.block;
    std::memcpy(blk, in + 2 * i, 2);
    for (int64_t c = 0; c < L.data / 4; c++)
      for (int j = 0; j < 4; j++) blk[2 + 4 * c + j] = uint8_t(in[32 + 64 * c + 4 * i + j] - L.add);
  }
}

const uint8_t* plain_row(const WeightRef& w, int64_t r) {
  const size_t row_bytes = dtype_row_bytes(w.dtype, w.cols);
  if (!dtype_is_x16(w.dtype)) return static_cast<const uint8_t*>(w.data) + size_t(r) * row_bytes;
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < row_bytes) buf.resize(row_bytes);
  unpack_x16_row(w.dtype, static_cast<const uint8_t*>(w.data), w.cols, r, buf.data());
  return buf.data();
}

bool repack_enabled() {
  int v = repack_slot().load(std::memory_order_relaxed);
  if (v < 0) {
    const char* env = std::getenv("WHALE_REPACK");
    v = env && std::string_view(env) == "0" ? 0 : 1;
    repack_slot().store(v, std::memory_order_relaxed);
  }
  return v == 1 && active_isa() == Isa::Avx512;
}

void set_repack(bool on) {
  repack_slot().store(on ? 1 : 0, std::memory_order_relaxed);
}

}  // namespace whale
