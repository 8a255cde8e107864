// Q4_0 and Q8_0 rows repacked at load for the AVX-512 VNNI kernels (DType::Q4_0_X16, Q8_0_X16).
//
// A GGUF Q4_0 row is a run of 18-byte blocks: an f16 scale d and 16 bytes qs whose low nibbles
// are values 0..15 of the block and high nibbles values 16..31 (w = d (u - 8)); a Q8_0 block is
// d and 32 int8 values (34 bytes). Reading one row at a time, a kernel must sum each block's 32
// products across lanes before scaling them, which costs more instructions than the bytes take
// to arrive from memory.
//
// The _X16 layouts store the same blocks for groups of 16 rows, block by block:
//   [ 16 f16 scales: d of rows 0..15 ]
//   [ chunk c: 64 bytes, bytes 4i..4i+3 = row i's data bytes 4c..4c+3 ]
// Q4_0_X16: chunks c = 0..3 (288 bytes a block): chunk c's low nibbles are values 4c..4c+3 of
// the 16 rows, one int32 lane per row, its high nibbles values 16+4c..16+4c+3.
// Q8_0_X16: chunks c = 0..7 (544 bytes a block), values 4c..4c+3 stored as u = q + 128 (the
// unsigned operand vpdpbusd takes).
// One vpdpbusd with a token's 4 activation bytes broadcast adds 4 products to each of the 16
// rows' lanes; eight of them finish the block, and one multiply-add by the 16 scales (times the
// activation scale) accumulates it: no horizontal sums, and the prefill GEMM reads the same
// layout without building panels.
//
// A matrix is repacked in place (the bytes per row do not change), only when its row count is a
// multiple of 16. Views of it (WeightRef::slice_rows) must start on a group. Every kernel path
// accepts the _X16 types: the AVX-512 int8 kernels natively, the others through plain_row, which
// rebuilds a row's GGML bytes.
#pragma once

#include <cstdint>

#include "kernels/linear.h"

namespace whale {

constexpr int64_t kX16Rows = 16;

// Bytes of one block of a group of 16 rows: 288 (Q4_0_X16), 544 (Q8_0_X16).
constexpr int64_t x16_block_bytes(DType t) {
  return t == DType::Q8_0_X16 ? 544 : 288;
}
// The repacked type of a GGML type (Q4_0 -> Q4_0_X16, Q8_0 -> Q8_0_X16), or F32 when it has none.
DType x16_of(DType t);

// Rewrites `rows` rows of `cols` values of type `t` (Q4_0 or Q8_0) at `data` (rows a multiple
// of 16) as x16_of(t).
void repack_x16(DType t, uint8_t* data, int64_t rows, int64_t cols);
// The GGML bytes of row r of an _X16 matrix `t` whose first group starts at `data`, into `out`
// (dtype_row_bytes(t, cols) bytes).
void unpack_x16_row(DType t, const uint8_t* data, int64_t cols, int64_t r, uint8_t* out);

// Row r of w in its GGML block layout: w's own bytes, or for an _X16 type the row rebuilt into a
// per-thread buffer (valid until the next call on this thread).
const uint8_t* plain_row(const WeightRef& w, int64_t r);

// Whether GGUF Q4_0 / Q8_0 matrices are repacked when a model is read into RAM: on when the
// active instruction set is AVX-512 (it has the kernels) unless WHALE_REPACK=0; tests switch it.
bool repack_enabled();
void set_repack(bool on);

}  // namespace whale
