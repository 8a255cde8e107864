#!/usr/bin/env python3
"""Writes tests/fixtures/gguf/types.gguf with llama.cpp's own GGUF writer (gguf-py), the
independent reference for whale's GGUF reader and dequantizers (src/formats/gguf.cpp,
src/tensor/quant.cpp).

    PYTHONPATH=<llama.cpp>/gguf-py /usr/bin/python3 tests/reference/gguf_fixture.py [OUT]

(gguf-py is pure Python: `git archive HEAD gguf-py` of the peer's llama.cpp sources is enough.)

The file holds:
  - metadata of every value type, arrays of integers, floats, strings and booleans, an array of
    arrays, and general.alignment = 64 (not the default 32);
  - for each type whale dequantizes, `q.<TYPE>`: 2 rows x 512 values of random blocks (random
    bytes with sane f16 scales), and `ref.<TYPE>`: the same values dequantized by gguf-py
    (gguf.quants.dequantize), as F32;
  - `shape.3d`: an F32 tensor of row-major shape [2, 3, 4] holding 0..23, for the dimension order.
"""
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import quants

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/gguf/types.gguf"

# Byte ranges of the f16 scales inside each block (random bytes there could be inf or NaN).
F16_FIELDS = {
    QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
    QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
    QT.IQ4_NL: [0], QT.IQ4_XS: [0],
}
ROWS, COLS = 2, 512


def random_blocks(rng, qtype):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = ROWS * COLS // block
    b = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        scales = rng.uniform(-0.05, 0.05, size=n_blocks).astype(np.float16)
        b[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return b.reshape(ROWS, COLS // block * size)


def main():
    rng = np.random.default_rng(20261205)
    w = gguf.GGUFWriter(OUT, arch="whale-test")
    w.add_custom_alignment(64)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.15625)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo <｜Assistant｜>")
    w.add_uint64("test.u64", 18000000000000000000)
    w.add_int64("test.i64", -9000000000000000000)
    w.add_float64("test.f64", 2.718281828459045)
    w.add_key_value("test.ints", [1, -2, 3], VT.ARRAY, sub_type=VT.INT32)
    w.add_key_value("test.floats", [0.5, -1.25], VT.ARRAY, sub_type=VT.FLOAT32)
    w.add_key_value("test.strings", ["a", "", "ü ü"], VT.ARRAY, sub_type=VT.STRING)
    w.add_key_value("test.bools", [True, False], VT.ARRAY, sub_type=VT.BOOL)
    w.add_key_value("test.nested", [[1, 2], [3]], VT.ARRAY, sub_type=VT.ARRAY)

    for qtype in F16_FIELDS:
        raw = random_blocks(rng, qtype)
        w.add_tensor(f"q.{qtype.name}", raw, raw_dtype=qtype)
        ref = quants.dequantize(raw, qtype).astype(np.float32)
        assert ref.shape == (ROWS, COLS), ref.shape
        w.add_tensor(f"ref.{qtype.name}", ref)
    for qtype, dtype in ((QT.F16, np.float16), (QT.BF16, None)):
        vals = rng.standard_normal((ROWS, COLS)).astype(np.float32)
        if dtype is None:
            raw = quants.quantize(vals, QT.BF16)
        else:
            raw = vals.astype(np.float16)
        w.add_tensor(f"q.{qtype.name}", raw, raw_dtype=qtype)
        w.add_tensor(f"ref.{qtype.name}", quants.dequantize(raw.view(np.uint8), qtype)
                     .astype(np.float32).reshape(ROWS, COLS))
    w.add_tensor("shape.3d", np.arange(24, dtype=np.float32).reshape(2, 3, 4))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
