// GGUF reading and GGML dequantization: a file written by llama.cpp's own writer (gguf-py,
// tests/reference/gguf_fixture.py) parses to the values it holds, every quantized type
// dequantizes to what gguf-py computes, and malformed files are errors naming the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "tensor/dtype.h"
#include "tensor/quant.h"
#include "test_util.h"

using namespace whale;
using whale::testing::kRoot;

namespace {

const std::string kTypesFile = kRoot + "/tests/fixtures/gguf/types.gguf";

// A GGUF file built field by field, for malformed variants.
struct Builder {
  std::string b;
  template <class T>
  Builder& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof v);
    return *this;
  }
  Builder& str(const std::string& s) {
    put<uint64_t>(s.size());
    b += s;
    return *this;
  }
  Builder& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b += "GGUF";
    return put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  }
  // A tensor info: name, dims (ne order), type, offset.
  Builder& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type,
                  uint64_t offset) {
    str(name).put<uint32_t>(uint32_t(ne.size()));
    for (uint64_t n : ne) put<uint64_t>(n);
    return put<uint32_t>(type).put<uint64_t>(offset);
  }
  Builder& pad(size_t align = 32) {
    while (b.size() % align) b += '\0';
    return *this;
  }
  Builder& data(size_t n, char c = 0) {
    b.append(n, c);
    return *this;
  }
};

GgufHeader parse(const std::string& bytes) {
  return parse_gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.gguf");
}

std::string error_of(const std::string& bytes) {
  try {
    parse(bytes);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

// One valid file: a u32 key and an F32 [2 x 32] tensor.
std::string valid_file() {
  Builder f;
  f.header(1, 1).str("a.key").put<uint32_t>(4).put<uint32_t>(7);
  f.tensor("w", {32, 2}, 0, 0).pad().data(2 * 32 * 4, 1);
  return f.b;
}

}  // namespace

TEST(Gguf, ReadsEveryValueTypeWrittenByGgufPy) {
  GgufFile f(kTypesFile);
  EXPECT_EQ(f.header().version, 3u);
  EXPECT_EQ(f.header().alignment, 64u);
  EXPECT_EQ(f.header().data_offset % 64, 0u);
  EXPECT_EQ(f.get_string("general.architecture"), "whale-test");
  EXPECT_EQ(f.get_int("test.u8"), 200);
  EXPECT_EQ(f.get_int("test.i8"), -100);
  EXPECT_EQ(f.get_int("test.u16"), 60000);
  EXPECT_EQ(f.get_int("test.i16"), -30000);
  EXPECT_EQ(f.get_int("test.u32"), 4000000000);
  EXPECT_EQ(f.get_int("test.i32"), -2000000000);
  EXPECT_EQ(f.get_float("test.f32"), 0.15625);
  EXPECT_TRUE(f.get_bool("test.bool"));
  EXPECT_EQ(f.get_string("test.string"), "héllo <｜Assistant｜>");
  EXPECT_EQ(f.find("test.u64")->u, 18000000000000000000ull);
  EXPECT_EQ(f.get_int("test.i64"), -9000000000000000000ll);
  EXPECT_DOUBLE_EQ(f.get_float("test.f64"), 2.718281828459045);
  EXPECT_EQ(f.get_array("test.ints", GgufValueType::I64).ints, (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.get_array("test.floats", GgufValueType::F32).floats,
            (std::vector<double>{0.5, -1.25}));
  EXPECT_EQ(f.get_array("test.strings", GgufValueType::STRING).strings,
            (std::vector<std::string>{"a", "", "ü ü"}));
  EXPECT_EQ(f.get_array("test.bools", GgufValueType::BOOL).ints, (std::vector<int64_t>{1, 0}));
  const GgufValue& nested = *f.find("test.nested");
  ASSERT_EQ(nested.items.size(), 2u);
  EXPECT_EQ(nested.items[0].ints, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(nested.items[1].ints, (std::vector<int64_t>{3}));

  // Wrong kinds and missing keys name the file and the key.
  auto message = [&](auto&& fn) {
    try {
      fn();
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message([&] { f.get_string("test.u8"); }).find("'test.u8': expected a string"),
            std::string::npos);
  EXPECT_NE(message([&] { f.get_int("test.u64"); }).find("does not fit in int64"),
            std::string::npos);
  EXPECT_NE(message([&] { f.get_int("nope"); }).find("types.gguf: metadata 'nope': missing"),
            std::string::npos);
  EXPECT_NE(message([&] {
              f.get_array("test.strings", GgufValueType::I32);
            }).find("expected an array of i32, found one of string"),
            std::string::npos);
}

TEST(Gguf, DimensionOrderIsRowMajorReversed) {
  GgufFile f(kTypesFile);
  const GgufTensor* t = f.find_tensor("shape.3d");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->ne, (std::vector<int64_t>{4, 3, 2}));
  EXPECT_EQ(t->shape(), (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(t->shape_str(), "[2, 3, 4]");
  ASSERT_EQ(t->nbytes, 24u * 4);
  std::vector<float> v(24);
  std::memcpy(v.data(), t->data, 96);
  for (int i = 0; i < 24; i++) EXPECT_EQ(v[size_t(i)], float(i));
}

// Every type against gguf-py's dequantization of the same random blocks.
TEST(Gguf, DequantizationMatchesGgufPy) {
  GgufFile f(kTypesFile);
  int checked = 0;
  for (const GgufTensor& q : f.tensors()) {
    if (q.name.rfind("q.", 0) != 0) continue;
    const std::string type = q.name.substr(2);
    SCOPED_TRACE(type);
    const GgufTensor* ref = f.find_tensor("ref." + type);
    ASSERT_NE(ref, nullptr);
    ASSERT_EQ(ref->type, GgmlType::F32);
    ASSERT_EQ(q.shape(), ref->shape());
    EXPECT_EQ(ggml_type_info(uint32_t(q.type))->name, type);
    const int64_t rows = q.shape()[0], cols = q.shape()[1];
    const size_t row_bytes = ggml_row_bytes(q.type, cols);
    ASSERT_EQ(q.nbytes, row_bytes * size_t(rows));
    std::vector<float> got(static_cast<size_t>(cols)), want(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; r++) {
      dequantize_row(q.type, q.data + size_t(r) * row_bytes, cols, got.data());
      std::memcpy(want.data(), ref->data + size_t(r * cols) * 4, size_t(cols) * 4);
      float scale = 0;
      for (float w : want) scale = std::max(scale, std::fabs(w));
      ASSERT_GT(scale, 0.0f);
      for (int64_t c = 0; c < cols; c++)
        // gguf-py computes in f32 numpy, in the same order; only a fused multiply-add may differ.
        ASSERT_NEAR(got[size_t(c)], want[size_t(c)], 1e-6f * scale) << "row " << r << " col " << c;
    }
    checked++;
  }
  EXPECT_EQ(checked, 14);  // Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K..Q6_K IQ4_NL IQ4_XS F16 BF16
}

// Hand-computed blocks, independent of gguf-py.
TEST(Gguf, DequantizesHandMadeBlocks) {
  // Q4_0: d = 0.5 (f16 0x3800); qs[j] = 0x9 << 4 | 0x7: low nibbles 7 - 8 = -1, high 9 - 8 = 1.
  uint8_t q4[18] = {0x00, 0x38};
  for (int j = 0; j < 16; j++) q4[2 + j] = 0x97;
  float y[32];
  dequantize_row(GgmlType::Q4_0, q4, 32, y);
  for (int j = 0; j < 16; j++) {
    EXPECT_EQ(y[j], -0.5f);
    EXPECT_EQ(y[16 + j], 0.5f);
  }
  // Q8_0: d = 2 (0x4000), q = -3, 0, 5, ...
  uint8_t q8[34] = {0x00, 0x40};
  q8[2] = uint8_t(int8_t(-3));
  q8[4] = 5;
  dequantize_row(GgmlType::Q8_0, q8, 32, y);
  EXPECT_EQ(y[0], -6.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 10.0f);
  // Q5_0: d = 1 (0x3c00), qh bit 0 and bit 16 set, qs[0] = 0x21: value 0 = (1 | 16) - 16 = 1,
  // value 16 = (2 | 16) - 16 = 2, value 1 = 0 - 16.
  uint8_t q5[22] = {0x00, 0x3c, 0x01, 0x00, 0x01, 0x00, 0x21};
  dequantize_row(GgmlType::Q5_0, q5, 32, y);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[16], 2.0f);
  EXPECT_EQ(y[1], -16.0f);
  // Ragged rows and types without a conversion are refused.
  EXPECT_THROW(dequantize_row(GgmlType::Q4_0, q4, 31, y), std::invalid_argument);
  EXPECT_THROW(dequantize_row(GgmlType::Q8_K, q4, 256, y), std::invalid_argument);
  EXPECT_EQ(ggml_type_info(16), nullptr);  // IQ2_XXS: not read by whale
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q4_K, 512), 288u);
}

TEST(Gguf, ParsesAHandMadeFile) {
  const GgufHeader h = parse(valid_file());
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.metadata.at("a.key").i, 7);
  EXPECT_EQ(h.data_offset % 32, 0u);
  EXPECT_EQ(h.tensors[0].shape(), (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(h.tensors[0].nbytes, 256u);
}

TEST(Gguf, TruncatedFilesAreErrorsAtEveryLength) {
  const std::string full = valid_file();
  for (size_t n = 0; n < full.size(); n++) {
    const std::string e = error_of(full.substr(0, n));
    EXPECT_NE(e, "(no error)") << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(e.rfind("x.gguf: ", 0), 0u) << e;
  }
  EXPECT_NE(error_of(full.substr(0, full.size() - 1)).find("tensor 'w'"), std::string::npos);
}

TEST(Gguf, MalformedFilesAreErrorsNamingTheProblem) {
  auto expect = [](const std::string& bytes, const std::string& needle) {
    const std::string e = error_of(bytes);
    EXPECT_NE(e.find(needle), std::string::npos) << "got: " << e;
  };
  expect("GGML" + valid_file().substr(4), "not a GGUF file");
  {
    Builder f;
    f.header(0, 0, 1);
    expect(f.b, "version 1");
  }
  {
    Builder f;
    f.header(0, 0, 0x03000000);
    expect(f.b, "big-endian");
  }
  {
    Builder f;
    f.header(1, 0).tensor("w", {32, 2}, 16, 0).pad().data(1024);
    expect(f.b, "tensor 'w': unknown or unsupported tensor type 16");
  }
  {
    Builder f;
    f.header(1, 0).tensor("w", {30, 2}, 2, 0).pad().data(1024);
    expect(f.b, "rows of 30 values are not whole Q4_0 blocks of 32");
  }
  {
    Builder f;
    f.header(1, 0).tensor("w", {32, 2}, 0, 8).pad().data(1024);
    expect(f.b, "offset 8 is not a multiple of the alignment 32");
  }
  {
    Builder f;
    f.header(1, 0).tensor("w", {32, 1, 1, 1, 1}, 0, 0).pad().data(1024);
    expect(f.b, "5 dimensions");
  }
  {
    Builder f;
    f.header(1, 0).tensor("w", {1ull << 40, 1ull << 40}, 0, 0);
    expect(f.b, "tensor 'w': shape too large");
  }
  {
    Builder f;
    f.header(2, 0).tensor("w", {32}, 0, 0).tensor("w", {32}, 0, 128).pad().data(1024);
    expect(f.b, "tensor 'w' appears twice");
  }
  {
    Builder f;
    f.header(0, 2).str("k").put<uint32_t>(4).put<uint32_t>(1);
    f.str("k").put<uint32_t>(4).put<uint32_t>(2);
    expect(f.b, "metadata key 'k' appears twice");
  }
  {
    Builder f;
    f.header(0, 1).str("k").put<uint32_t>(13).put<uint32_t>(1);
    expect(f.b, "k: unknown value type 13");
  }
  {
    Builder f;  // an array claiming 2^40 strings in a few bytes
    f.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(1ull << 40).data(64);
    expect(f.b, "k: an array of 1099511627776 string runs past the end");
  }
  {
    Builder f;
    f.header(0, 1).str("k").put<uint32_t>(8).put<uint64_t>(1000).data(10);
    expect(f.b, "k: a string of 1000 bytes runs past the end");
  }
  {
    Builder f;
    f.header(0, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(48);
    expect(f.b, "general.alignment must be a positive power of two, got 48");
  }
  {
    Builder g;  // arrays of arrays 6 deep
    g.header(0, 1).str("k").put<uint32_t>(9);
    for (int i = 0; i < 6; i++) g.put<uint32_t>(9).put<uint64_t>(1);
    g.put<uint32_t>(4).put<uint64_t>(1).put<uint32_t>(1);
    expect(g.b, "arrays nested deeper than 4");
  }
  {
    Builder f;
    f.header(1ull << 60, 0);
    expect(f.b, "tensor count 1152921504606846976 is larger than the file");
  }
  {
    Builder f;
    f.header(1, 0).tensor("w", {32, 2}, 0, 0).pad().data(100);
    expect(f.b, "tensor 'w' ([2, 32] F32, 256 bytes at data offset 0) runs past the end");
  }
}
