"""Minimal, dependency-free safetensors reader/writer plus the numeric formats whale reads.

Runs with /usr/bin/python3 (numpy 1.24; torch optional, only for `load_checkpoint`).

File format (https://github.com/huggingface/safetensors):
    [u64 little-endian N][N bytes of JSON header][raw tensor bytes]
The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
relative to the start of the data section, contiguous, no holes) plus an optional "__metadata__"
map of string -> string. We pad the header with spaces to a multiple of 8 bytes, as the reference
library does.

Numeric formats:
  * BF16: upper 16 bits of an IEEE f32, produced with round-to-nearest-even.
  * F16:  IEEE half (numpy's astype rounds to nearest even).
  * F8_E4M3: OCP "e4m3fn" (torch.float8_e4m3fn): 1 sign, 4 exponent (bias 7), 3 mantissa bits, no
    infinities, 0x7f/0xff are NaN, largest finite 448, subnormals k * 2^-9 for k = 1..7.
    Encoding rounds to nearest even and saturates to +-448 (NaN stays NaN).
  * FP8 block quantisation as in the DeepSeek-V3 release (README_WEIGHTS.md): for each 128x128 block
    (edge blocks may be partial; zero padding does not change the max) scale_inv = amax / 448 in
    f32, q = e4m3(w / scale_inv); stored as `<name>` (F8_E4M3) and `<name>_scale_inv` (F32, shape
    [ceil(rows/128), ceil(cols/128)]); dequantisation
    w[i, j] = q[i, j] * scale_inv[i // 128, j // 128].
"""

import json
import math
import os
import struct

import numpy as np

# ----------------------------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------------------------

# safetensors dtype string -> (numpy storage dtype, bytes per element)
STORAGE = {
    "F64": (np.float64, 8),
    "F32": (np.float32, 4),
    "F16": (np.float16, 2),
    "BF16": (np.uint16, 2),
    "F8_E4M3": (np.uint8, 1),
    "I64": (np.int64, 8),
    "I32": (np.int32, 4),
    "U8": (np.uint8, 1),
}

FP8_MAX = 448.0
FP8_BLOCK = 128


def f32_to_bf16_bits(x):
    """f32 array -> uint16 bf16 bit patterns, round-to-nearest-even; NaN -> quiet NaN."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    lsb = (u >> np.uint32(16)) & np.uint32(1)
    rounded = ((u + np.uint32(0x7FFF) + lsb) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return rounded


def bf16_bits_to_f32(b):
    """uint16 bf16 bit patterns -> f32 (exact)."""
    b = np.ascontiguousarray(b, dtype=np.uint16)
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _fp8_decode_table():
    table = np.zeros(256, dtype=np.float32)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        exp = (code >> 3) & 0xF
        man = code & 0x7
        if exp == 0xF and man == 0x7:
            table[code] = np.nan
        elif exp == 0:
            table[code] = sign * man * 2.0**-9  # subnormal: 0.mmm * 2^-6
        else:
            table[code] = sign * (1.0 + man / 8.0) * 2.0 ** (exp - 7)
    return table


FP8_TABLE = _fp8_decode_table()


def fp8_e4m3_decode(codes):
    """uint8 e4m3fn codes -> f32 values (exact)."""
    return FP8_TABLE[np.asarray(codes, dtype=np.uint8)]


def fp8_e4m3_encode(x):
    """f32 array -> uint8 e4m3fn codes: round-to-nearest-even, saturating to +-448,
    NaN -> 0x7f/0xff."""
    x = np.asarray(x, dtype=np.float32)
    sign = np.signbit(x).astype(np.uint8) << np.uint8(7)
    a = np.abs(x)
    nan = np.isnan(a)
    a = np.minimum(np.where(nan, 0, a), FP8_MAX).astype(np.float32)
    # The quantum (spacing of representable values) is 2^(e-3) for a in [2^e, 2^(e+1)), e >= -6, and
    # 2^-9 in the subnormal range a < 2^-6. Dividing by a power of two and rint are exact in f32,
    # and np.rint rounds half to even, which is exactly RNE on the 3-bit mantissa.
    _, e2 = np.frexp(a)  # a = f * 2^e2, f in [0.5, 1)  =>  floor(log2 a) = e2 - 1
    e = np.maximum(e2.astype(np.int32) - 1, -6)
    quantum = np.ldexp(np.float32(1), e - 3).astype(np.float32)
    v = (np.rint(a / quantum) * quantum).astype(np.float32)  # rounded magnitude (may reach 2^(e+1))
    v = np.minimum(v, FP8_MAX)
    sub = v < 2.0**-6
    # Normal: exponent field E + 7, mantissa v / 2^E * 8 - 8. Subnormal (and 2^-6 itself): v / 2^-9.
    _, ev = np.frexp(np.where(sub, 1, v))
    ev = ev.astype(np.int32) - 1
    man = np.rint(np.ldexp(v, 3 - ev)).astype(np.int32) - 8
    code_norm = ((ev + 7) << 3) | man
    code_sub = np.rint(v * 2.0**9).astype(np.int32)
    code = np.where(sub, code_sub, code_norm).astype(np.uint8)
    code = np.where(nan, np.uint8(0x7F), code)
    return code | sign


def fp8_block_quantize(w, block=FP8_BLOCK):
    """f32 [rows, cols] -> (uint8 codes [rows, cols],
    f32 scale_inv [ceil(rows/b), ceil(cols/b)])."""
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    br, bc = math.ceil(rows / block), math.ceil(cols / block)
    scale_inv = np.empty((br, bc), dtype=np.float32)
    codes = np.empty((rows, cols), dtype=np.uint8)
    for i in range(br):
        for j in range(bc):
            blk = w[i * block:(i + 1) * block, j * block:(j + 1) * block]
            amax = np.float32(np.abs(blk).max())
            s = amax / np.float32(FP8_MAX) if amax > 0 else np.float32(1.0)
            scale_inv[i, j] = s
            codes[i * block:(i + 1) * block, j * block:(j + 1) * block] = fp8_e4m3_encode(blk / s)
    return codes, scale_inv


def fp8_block_dequantize(codes, scale_inv, block=FP8_BLOCK, dtype=np.float64):
    """w[i, j] = e4m3(codes[i, j]) * scale_inv[i // block, j // block] (computed in `dtype`)."""
    rows, cols = codes.shape
    vals = fp8_e4m3_decode(codes).astype(dtype)
    s = np.repeat(np.repeat(scale_inv.astype(dtype), block, axis=0), block, axis=1)[:rows, :cols]
    return vals * s


def encode(array_f32, dtype):
    """f32 numpy array -> raw storage array for safetensors dtype `dtype` (F8: use the block
    API)."""
    if dtype == "F32":
        return np.ascontiguousarray(array_f32, dtype=np.float32)
    if dtype == "BF16":
        return f32_to_bf16_bits(array_f32)
    if dtype == "F16":
        return np.ascontiguousarray(array_f32, dtype=np.float32).astype(np.float16)
    if dtype == "F64":
        return np.ascontiguousarray(array_f32, dtype=np.float64)
    raise ValueError(f"unsupported dtype {dtype}")


def decode(raw, dtype, out=np.float64):
    """raw storage array -> float array (exact)."""
    if dtype == "BF16":
        return bf16_bits_to_f32(raw).astype(out)
    if dtype == "F8_E4M3":
        return fp8_e4m3_decode(raw).astype(out)
    return np.asarray(raw).astype(out)


def nbytes(dtype, shape):
    return STORAGE[dtype][1] * int(np.prod(shape, dtype=np.int64))


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


class SafetensorsWriter:
    """Streams tensors into one .safetensors file. All (name, dtype, shape) are declared up front
    (the header precedes the data); data is then appended in declaration order, possibly in
    chunks."""

    def __init__(self, path, specs, metadata=None):
        self.path = path
        self.specs = list(specs)
        header = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        for name, dtype, shape in self.specs:
            size = nbytes(dtype, shape)
            header[name] = {"dtype": dtype, "shape": [int(s) for s in shape],
                            "data_offsets": [offset, offset + size]}
            offset += size
        self.total = offset
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)
        self.f = open(path, "wb")
        self.f.write(struct.pack("<Q", len(text)))
        self.f.write(text)
        self.index = 0  # spec currently being written
        self.pending = nbytes(*self.specs[0][1:]) if self.specs else 0  # its missing bytes

    def write(self, name, raw):
        """Append raw storage data (numpy array in storage dtype) of tensor `name`; a tensor may be
        written in several consecutive chunks."""
        if self.index >= len(self.specs) or self.specs[self.index][0] != name:
            raise ValueError(f"unexpected data for {name}")
        buf = np.ascontiguousarray(raw).astype(np.dtype(raw.dtype).newbyteorder("<"), copy=False)
        buf = buf.tobytes()
        if len(buf) > self.pending:
            raise ValueError(f"too much data for {name}")
        self.f.write(buf)
        self.pending -= len(buf)
        if self.pending == 0:
            self.index += 1
            if self.index < len(self.specs):
                self.pending = nbytes(*self.specs[self.index][1:])

    def close(self):
        if self.index != len(self.specs) or self.pending:
            raise ValueError(f"{self.path}: only {self.index}/{len(self.specs)} tensors written")
        self.f.close()


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype, raw numpy array in storage dtype)."""
    w = SafetensorsWriter(path, [(n, d, a.shape) for n, d, a in tensors], metadata)
    for n, _, a in tensors:
        w.write(n, a)
    w.close()


def shard_file_name(i, n):
    return f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def plan_shards(specs, n_shards):
    """Split an ordered spec list into n_shards contiguous groups of roughly equal byte size.
    Returns a list of lists of specs."""
    if n_shards <= 1:
        return [list(specs)]
    total = sum(nbytes(d, s) for _, d, s in specs)
    target = total / n_shards
    groups, cur, acc = [], [], 0
    for spec in specs:
        # close the current shard once it reaches its share of the cumulative byte target
        # (a weight's `_scale_inv` stays in the weight's shard: they are written together)
        if (cur and acc >= target * (len(groups) + 1) and len(groups) < n_shards - 1
                and not spec[0].endswith("_scale_inv")):
            groups.append(cur)
            cur = []
        cur.append(spec)
        acc += nbytes(spec[1], spec[2])
    groups.append(cur)
    while len(groups) < n_shards:  # tiny models: make sure every shard exists and is non-empty
        big = max(range(len(groups)), key=lambda k: len(groups[k]))
        g = groups[big]
        half = len(g) // 2
        while half < len(g) - 1 and g[half][0].endswith("_scale_inv"):
            half += 1
        groups[big:big + 1] = [g[:half], g[half:]]
    return groups


def write_index(out_dir, groups):
    n = len(groups)
    weight_map, total = {}, 0
    for i, g in enumerate(groups):
        for name, dtype, shape in g:
            weight_map[name] = shard_file_name(i, n)
            total += nbytes(dtype, shape)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    return header, 8 + n


def read_safetensors(path):
    """-> (dict name -> raw numpy array (memory-mapped, storage dtype), dict name -> dtype string,
    metadata dict)."""
    header, base = read_header(path)
    meta = header.pop("__metadata__", {})
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    arrays, dtypes = {}, {}
    for name, info in header.items():
        dtype = info["dtype"]
        b, e = info["data_offsets"]
        np_dtype, _ = STORAGE[dtype]
        arrays[name] = mm[base + b:base + e].view(np_dtype).reshape(info["shape"])
        dtypes[name] = dtype
    return arrays, dtypes, meta


def checkpoint_files(model_dir):
    """The safetensors files of a HF model directory (index json or a single model.safetensors)."""
    index_path = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
        return sorted(set(index["weight_map"].values()))
    files = sorted(p for p in os.listdir(model_dir) if p.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors in {model_dir}")
    return files


def read_checkpoint_raw(model_dir):
    """-> (dict name -> raw array, dict name -> dtype) over all shards."""
    arrays, dtypes = {}, {}
    for fn in checkpoint_files(model_dir):
        a, d, _ = read_safetensors(os.path.join(model_dir, fn))
        for k in a:
            if k in arrays:
                raise ValueError(f"tensor {k} present in two shards")
        arrays.update(a)
        dtypes.update(d)
    return arrays, dtypes


def load_checkpoint(model_dir, out=np.float64, skip=None):
    """Loads and dequantises a HF checkpoint: dict name -> float numpy array (`out` dtype).
    FP8 tensors are combined with their `<name>_scale_inv` (128x128 blocks); the `_scale_inv`
    entries themselves are not returned. `skip(name) -> bool` drops tensors (e.g. MTP layers)."""
    arrays, dtypes = read_checkpoint_raw(model_dir)
    result = {}
    for name, raw in arrays.items():
        if name.endswith("_scale_inv") or (skip is not None and skip(name)):
            continue
        if dtypes[name] == "F8_E4M3":
            scale = arrays.get(name + "_scale_inv")
            if scale is None:
                raise ValueError(f"FP8 tensor {name} has no {name}_scale_inv")
            result[name] = fp8_block_dequantize(np.asarray(raw), np.asarray(scale), dtype=out)
        else:
            result[name] = decode(np.asarray(raw), dtypes[name], out)
    return result


# ----------------------------------------------------------------------------------------------
# self test:  /usr/bin/python3 tests/reference/safetensors_io.py
# ----------------------------------------------------------------------------------------------


def _nearest_fp8_bruteforce(x):
    """Reference e4m3 rounding by exhaustive search (ties to even code), saturating."""
    finite = [(float(FP8_TABLE[c]), c) for c in range(128) if not np.isnan(FP8_TABLE[c])]
    a = min(abs(float(x)), FP8_MAX)
    best = min(finite, key=lambda vc: (abs(vc[0] - a), vc[1] & 1))
    return best[1] | (0x80 if math.copysign(1.0, x) < 0 else 0)


def _self_test():
    import tempfile

    rng = np.random.default_rng(0)
    # bf16 RNE against float64 reasoning: the nearest representable, ties to even.
    xs = rng.standard_normal(20000).astype(np.float32) * np.float32(3.0)
    bits = f32_to_bf16_bits(xs)
    back = bf16_bits_to_f32(bits).astype(np.float64)
    up = bf16_bits_to_f32(bits + 1).astype(np.float64)
    down = bf16_bits_to_f32(bits - 1).astype(np.float64)
    err = np.abs(back - xs)
    assert np.all(err <= np.abs(up - xs)) and np.all(err <= np.abs(down - xs))
    # an exact tie: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 -> even (1.0)
    assert f32_to_bf16_bits(np.array([1 + 2**-8], np.float32))[0] == 0x3F80
    assert f32_to_bf16_bits(np.array([1 + 3 * 2**-8], np.float32))[0] == 0x3F82
    # fp8: every finite code round-trips; random values match brute force; ties, saturation, NaN.
    for c in range(256):
        if not np.isnan(FP8_TABLE[c]) and c != 0x80:
            assert fp8_e4m3_encode(np.array([FP8_TABLE[c]]))[0] == c, c
    ys = np.concatenate([rng.standard_normal(3000) * 50, rng.standard_normal(3000) * 0.01,
                         rng.uniform(-600, 600, 500), np.array([0.0, -0.0, 2**-10, 3 * 2**-10,
                                                                 2**-9 * 1.5, 2**-9 * 2.5, 464.0,
                                                                 1e9, -1e9, 240.0, 0.017578125])])
    ys = ys.astype(np.float32)
    got = fp8_e4m3_encode(ys)
    for y, g in zip(ys, got):
        assert g == _nearest_fp8_bruteforce(y), (y, g, _nearest_fp8_bruteforce(y))
    assert fp8_e4m3_encode(np.array([np.nan]))[0] == 0x7F
    assert fp8_e4m3_decode(np.array([0x7E]))[0] == 448
    assert fp8_e4m3_decode(np.array([0x01]))[0] == 2**-9
    # block quantisation round trip with partial blocks
    w = rng.standard_normal((200, 130)).astype(np.float32)
    q, s = fp8_block_quantize(w)
    assert s.shape == (2, 2)
    d = fp8_block_dequantize(q, s)
    assert np.max(np.abs(d - w)) <= 0.07 * np.abs(w).max()
    assert abs(np.abs(d[:128, :128]).max() - np.abs(w[:128, :128]).max()) < 1e-6
    # sharded write/read round trip
    with tempfile.TemporaryDirectory() as tmp:
        t1 = rng.standard_normal((3, 5)).astype(np.float32)
        specs = [("a", "BF16", (3, 5)), ("b", "F32", (7,)), ("c.weight", "F8_E4M3", (200, 130)),
                 ("c.weight_scale_inv", "F32", (2, 2)), ("d", "F16", (4,))]
        groups = plan_shards(specs, 3)
        assert len(groups) == 3 and sum(len(g) for g in groups) == len(specs)
        data = {"a": encode(t1, "BF16"), "b": encode(np.arange(7, dtype=np.float32), "F32"),
                "c.weight": q, "c.weight_scale_inv": s,
                "d": encode(np.array([1, 2, 3, 0.1], np.float32), "F16")}
        for i, g in enumerate(groups):
            write_safetensors(os.path.join(tmp, shard_file_name(i, 3)),
                              [(n, dt, data[n]) for n, dt, _ in g], {"format": "pt"})
        write_index(tmp, groups)
        loaded = load_checkpoint(tmp)
        assert set(loaded) == {"a", "b", "c.weight", "d"}
        assert np.array_equal(loaded["a"], bf16_bits_to_f32(data["a"]))
        assert np.array_equal(loaded["c.weight"], d)
        assert loaded["d"][3] == np.float64(np.float16(0.1))
    print("safetensors_io self test OK")


if __name__ == "__main__":
    _self_test()
