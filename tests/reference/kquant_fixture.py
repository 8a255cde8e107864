#!/usr/bin/python3
"""Writes tests/fixtures/gguf/kquant.gguf: fixed F32 rows (`src`) and the same rows quantized to
Q4_K, Q5_K and Q6_K (`q.Q4_K`, ...) by llama.cpp's own C quantizers, against which whale's
k-quant writers (src/tensor/quant.cpp) are checked.

    PYTHONPATH=<llama.cpp>/gguf-py /usr/bin/python3 tests/reference/kquant_fixture.py <llama.cpp>/build/bin

gguf-py has no k-quant quantizers, so the bytes come from ggml_quantize_chunk() of the peer's
libggml-base.so (../shared/peer/build_llama.sh builds it), called through ctypes without an
importance matrix: the path llama-quantize takes (quantize_row_q*_K_ref). The rows: normal, tiny,
zeros, one outlier, constant, a signed ramp, all-positive, and a heavy-tailed row, 512 values each
(two super-blocks).
"""

import ctypes
import os
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf", "kquant.gguf")


def rows():
    rng = np.random.default_rng(11)
    n = 512
    r = [rng.standard_normal(n), rng.standard_normal(n) * 1e-3, np.zeros(n),
         np.where(np.arange(n) == 77, 40.0, rng.standard_normal(n) * 0.1),
         np.full(n, -0.75), np.linspace(-3, 3, n), np.abs(rng.standard_normal(n)) + 0.5,
         rng.standard_t(2, n)]
    return np.stack(r).astype(np.float32)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    lib = ctypes.CDLL(os.path.join(sys.argv[1], "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_void_p]
    src = rows()
    wr = gguf.GGUFWriter(OUT, "whale-test")
    wr.add_tensor("src", src, raw_dtype=QT.F32)
    for qt in (QT.Q4_K, QT.Q5_K, QT.Q6_K):
        block, size = gguf.GGML_QUANT_SIZES[qt]
        nrow, ncol = src.shape
        dst = np.zeros((nrow, ncol // block * size), dtype=np.uint8)
        n = lib.ggml_quantize_chunk(int(qt), src.ctypes.data, dst.ctypes.data, 0, nrow, ncol, None)
        assert n == dst.size, (qt, n, dst.size)
        # Round trip through gguf-py's dequantizer: the bytes are the layout gguf-py reads.
        back = gguf.quants.dequantize(dst, qt)
        err = float(np.abs(back - src).max() / np.abs(src).max())
        print(f"{qt.name}: {dst.size} bytes, max error {err:.4f} of max |x|")
        wr.add_tensor("q." + qt.name, dst, raw_dtype=qt)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


if __name__ == "__main__":
    main()
