#!/usr/bin/python3
"""Writes a random DeepSeek-V2/V3 model in exactly the Hugging Face checkpoint layout.

    /usr/bin/python3 scripts/gen_model.py --config CONFIG.json --out DIR
        [--dtype bf16|f32|f16|fp8] [--shards N] [--seed S] [--std X] [--tiny-frac F]
        [--tokenizer DIR]

CONFIG.json holds HF config fields; missing ones get the HF defaults of the model type
("model_type": "deepseek_v2" or "deepseek_v3", default v3). The output directory gets
config.json (all HF fields, keys sorted like HF writes them), model.safetensors (or N shards
model-0000i-of-0000N.safetensors plus model.safetensors.index.json) and optionally the tokenizer
files.

Tensors (names and shapes as in the released checkpoints):
  model.embed_tokens.weight [V, H]; per layer i (main layers and MTP layers):
  input_layernorm, post_attention_layernorm [H];
  self_attn.q_proj [nh*(nope+rope), H]  or  q_a_proj [q_lora, H], q_a_layernorm [q_lora],
  q_b_proj [nh*(nope+rope), q_lora]; kv_a_proj_with_mqa [kv_lora+rope, H]; kv_a_layernorm [kv_lora];
  kv_b_proj [nh*(nope+v), kv_lora]; o_proj [H, nh*v];
  mlp.{gate,up,down}_proj (dense) or mlp.gate.weight [E, H], mlp.gate.e_score_correction_bias [E]
  (noaux_tc, always F32), mlp.experts.{j}.{gate,up,down}_proj,
  mlp.shared_experts.{gate,up,down}_proj;
  MTP layers (index >= num_hidden_layers) also: embed_tokens [V, H], enorm, hnorm [H],
  eh_proj [H, 2H], shared_head.norm [H], shared_head.head [V, H] (copies of the main ones);
  model.norm.weight [H]; lm_head.weight [V, H] unless tie_word_embeddings.
With --dtype fp8 every Linear weight inside the layers (attention projections, all MLP/expert
projections, eh_proj) is F8_E4M3 with a F32 `<name>_scale_inv` (128x128 blocks, as the V3 release);
embeddings, heads, norms and mlp.gate.weight are BF16; the config gets the release's
quantization_config.

Initialisation (deterministic: each tensor has its own generator seeded by (seed, crc32(name)), so
values do not depend on sharding or order): norms 1 + 0.1 N(0,1); linear weights
N(0,1) / sqrt(fan_in) (or N(0, std^2) with --std) so activations stay O(1); embedding N(0,1);
lm_head N(0,1) * 2.5 / sqrt(H) so logits are O(1-10) (a tied embedding uses 1/sqrt(H)); router
N(0,1) / sqrt(H); e_score_correction_bias N(0, 0.1^2) (has negative entries). --tiny-frac F
multiplies a fraction F of every Linear weight's entries by 1e-4 (with fp8 they become e4m3
subnormals or zero).

Memory stays bounded (tensors are generated and written in row chunks), so ~1B-parameter models
are fine: roughly 10-20 s per 1B parameters for bf16 on one core.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "reference"))
import safetensors_io as sio  # noqa: E402

V3_DEFAULTS = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekV3Config",
        "AutoModel": "modeling_deepseek.DeepseekV3Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
    },
    "aux_loss_alpha": 0.001,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 3,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "pretraining_tp": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.3",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 129280,
}

V2_DEFAULTS = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekV2Config",
        "AutoModel": "modeling_deepseek.DeepseekV2Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM",
    },
    "aux_loss_alpha": 0.001,
    "bos_token_id": 100000,
    "eos_token_id": 100001,
    "ep_size": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 10944,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v2",
    "moe_intermediate_size": 1408,
    "moe_layer_freq": 1,
    "n_group": 1,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts_per_tok": 6,
    "num_hidden_layers": 27,
    "num_key_value_heads": 16,
    "pretraining_tp": 1,
    "q_lora_rank": None,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 10000,
    "routed_scaling_factor": 1.0,
    "scoring_func": "softmax",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 1,
    "topk_method": "greedy",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.39.3",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 102400,
}

FP8_QUANT_CONFIG = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                    "weight_block_size": [128, 128]}

TORCH_DTYPE = {"bf16": "bfloat16", "f32": "float32", "f16": "float16", "fp8": "bfloat16"}
STORE = {"bf16": "BF16", "f32": "F32", "f16": "F16", "fp8": "BF16"}

CHUNK_ELEMS = 1 << 24  # rows are generated and written in chunks of about this many values


def complete_config(user, dtype):
    v2 = user.get("model_type") == "deepseek_v2" or (
        user.get("architectures") or [""])[0].startswith("DeepseekV2")
    config = dict(V2_DEFAULTS if v2 else V3_DEFAULTS)
    config.update(user)
    config["torch_dtype"] = TORCH_DTYPE[dtype]
    config.pop("quantization_config", None)
    if dtype == "fp8":
        config["quantization_config"] = dict(FP8_QUANT_CONFIG)
    return dict(sorted(config.items()))


def is_moe_layer(c, i):
    return (c.get("n_routed_experts") is not None and i >= c["first_k_dense_replace"]
            and i % c["moe_layer_freq"] == 0)


class T:
    """One tensor to write: name, shape, init kind, whether it is a Linear weight inside a layer
    (FP8 candidate), and the name whose generator it uses (MTP copies share the main tensors')."""

    def __init__(self, name, shape, kind, linear=False, source=None):
        self.name, self.shape, self.kind, self.linear = name, tuple(shape), kind, linear
        self.source = source or name


def layer_tensors(c, i):
    p = f"model.layers.{i}."
    H, nh = c["hidden_size"], c["num_attention_heads"]
    nope, rope, vd = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    out = [T(p + "input_layernorm.weight", [H], "norm")]
    a = p + "self_attn."
    if c.get("q_lora_rank") is None:
        out.append(T(a + "q_proj.weight", [nh * (nope + rope), H], "linear", True))
    else:
        q = c["q_lora_rank"]
        out += [T(a + "q_a_proj.weight", [q, H], "linear", True),
                T(a + "q_a_layernorm.weight", [q], "norm"),
                T(a + "q_b_proj.weight", [nh * (nope + rope), q], "linear", True)]
    r = c["kv_lora_rank"]
    out += [T(a + "kv_a_proj_with_mqa.weight", [r + rope, H], "linear", True),
            T(a + "kv_a_layernorm.weight", [r], "norm"),
            T(a + "kv_b_proj.weight", [nh * (nope + vd), r], "linear", True),
            T(a + "o_proj.weight", [H, nh * vd], "linear", True),
            T(p + "post_attention_layernorm.weight", [H], "norm")]
    m = p + "mlp."

    def mlp(prefix, inter):
        return [T(prefix + "gate_proj.weight", [inter, H], "linear", True),
                T(prefix + "up_proj.weight", [inter, H], "linear", True),
                T(prefix + "down_proj.weight", [H, inter], "linear", True)]

    if is_moe_layer(c, i):
        E, mi = c["n_routed_experts"], c["moe_intermediate_size"]
        out.append(T(m + "gate.weight", [E, H], "router"))
        if c.get("topk_method") == "noaux_tc":
            out.append(T(m + "gate.e_score_correction_bias", [E], "bias"))
        for j in range(E):
            out += mlp(f"{m}experts.{j}.", mi)
        if c.get("n_shared_experts"):
            out += mlp(m + "shared_experts.", mi * c["n_shared_experts"])
    else:
        out += mlp(m, c["intermediate_size"])
    if i >= c["num_hidden_layers"]:  # MTP module
        V = c["vocab_size"]
        out += [T(p + "embed_tokens.weight", [V, H], "embed", source="model.embed_tokens.weight"),
                T(p + "enorm.weight", [H], "norm"),
                T(p + "hnorm.weight", [H], "norm"),
                T(p + "eh_proj.weight", [H, 2 * H], "linear", True),
                T(p + "shared_head.norm.weight", [H], "norm"),
                # with tied embeddings the output head is the embedding matrix
                T(p + "shared_head.head.weight", [V, H],
                  "embed" if c.get("tie_word_embeddings") else "head",
                  source="model.embed_tokens.weight" if c.get("tie_word_embeddings")
                  else "lm_head.weight")]
    return out


def model_tensors(c):
    V, H = c["vocab_size"], c["hidden_size"]
    out = [T("model.embed_tokens.weight", [V, H], "embed")]
    n_layers = c["num_hidden_layers"] + c.get("num_nextn_predict_layers", 0)
    for i in range(n_layers):
        out += layer_tensors(c, i)
    out.append(T("model.norm.weight", [H], "norm"))
    if not c.get("tie_word_embeddings", False):
        out.append(T("lm_head.weight", [V, H], "head"))
    return out


def storage_specs(tensors, dtype):
    """-> list of (name, st_dtype, shape) in file order (FP8 weights followed by their scales)."""
    specs = []
    for t in tensors:
        if dtype == "fp8" and t.linear:
            rows, cols = t.shape
            specs.append((t.name, "F8_E4M3", t.shape))
            specs.append((t.name + "_scale_inv", "F32", (math.ceil(rows / 128),
                                                         math.ceil(cols / 128))))
        elif t.kind == "bias":
            specs.append((t.name, "F32", t.shape))
        else:
            specs.append((t.name, STORE[dtype], t.shape))
    return specs


def init_scale(t, c, std):
    """-> (mean, std) of the normal distribution the tensor is drawn from."""
    H = c["hidden_size"]
    if t.kind == "norm":
        return 1.0, 0.1
    if t.kind == "bias":
        return 0.0, 0.1
    if t.kind == "embed":
        # A tied embedding is also the output head: keep it small so logits stay O(1-10) and the
        # current token's own embedding (still in the residual) does not dominate its logits.
        return 0.0, (1.0 / math.sqrt(H) if c.get("tie_word_embeddings") else 1.0)
    if t.kind == "head":
        return 0.0, (std if std is not None else 2.5 / math.sqrt(H))
    if t.kind == "router":
        return 0.0, 1.0 / math.sqrt(H)
    return 0.0, (std if std is not None else 1.0 / math.sqrt(t.shape[1]))


def generate_chunks(t, c, seed, std, tiny_frac, row_multiple):
    """Yields f32 row chunks of tensor t (deterministic in (seed, t.source))."""
    rng = np.random.default_rng([seed, zlib.crc32(t.source.encode())])
    mean, sd = init_scale(t, c, std)
    rows = t.shape[0]
    cols = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
    step = max(1, CHUNK_ELEMS // cols)
    step = max(row_multiple, step // row_multiple * row_multiple)
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        x = rng.standard_normal((n, cols), dtype=np.float32)
        x *= np.float32(sd)
        x += np.float32(mean)
        if tiny_frac > 0 and t.linear:
            tiny = rng.random((n, cols)) < tiny_frac
            x[tiny] *= np.float32(1e-4)
        yield x.reshape((n,) + t.shape[1:])


def write_tensor(writer, t, c, dtype, seed, std, tiny_frac):
    if dtype == "fp8" and t.linear:
        scales = []
        for chunk in generate_chunks(t, c, seed, std, tiny_frac, 128):
            codes, s = sio.fp8_block_quantize(chunk)
            writer.write(t.name, codes)
            scales.append(s)
        writer.write(t.name + "_scale_inv", np.concatenate(scales, axis=0))
        return
    st = "F32" if t.kind == "bias" else STORE[dtype]
    for chunk in generate_chunks(t, c, seed, std, tiny_frac, 1):
        writer.write(t.name, sio.encode(chunk, st))


def generate(user_config, out_dir, dtype="bf16", shards=1, seed=0, std=None, tiny_frac=0.0,
             tokenizer=None, verbose=True):
    """Writes the model; returns (config dict, list of (name, st_dtype, shape))."""
    if dtype not in STORE:
        raise ValueError(f"--dtype must be one of {sorted(STORE)}")
    c = complete_config(user_config, dtype)
    os.makedirs(out_dir, exist_ok=True)
    for old in os.listdir(out_dir):  # never leave stale shards / index behind
        if old.endswith(".safetensors") or old == "model.safetensors.index.json":
            os.remove(os.path.join(out_dir, old))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
        f.write("\n")
    tensors = model_tensors(c)
    by_name = {t.name: t for t in tensors}
    specs = storage_specs(tensors, dtype)
    groups = sio.plan_shards(specs, shards)
    t0 = time.time()
    for gi, group in enumerate(groups):
        fn = "model.safetensors" if shards <= 1 else sio.shard_file_name(gi, len(groups))
        writer = sio.SafetensorsWriter(os.path.join(out_dir, fn), group, {"format": "pt"})
        for name, _, _ in group:
            if name in by_name:  # scale_inv specs are written together with their weight
                write_tensor(writer, by_name[name], c, dtype, seed, std, tiny_frac)
        writer.close()
    if shards > 1:
        sio.write_index(out_dir, groups)
    if tokenizer:
        for fn in ("tokenizer.json", "tokenizer_config.json"):
            src = os.path.join(tokenizer, fn)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(out_dir, fn))
    if verbose:
        n_params = sum(int(np.prod(t.shape)) for t in tensors)
        n_bytes = sum(sio.nbytes(d, s) for _, d, s in specs)
        print(f"{out_dir}: {len(specs)} tensors, {n_params / 1e6:.2f}M params, "
              f"{n_bytes / 2**20:.2f} MiB, {len(groups)} file(s), {time.time() - t0:.1f}s")
    return c, specs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="JSON file with HF config fields")
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--dtype", default="bf16", choices=sorted(STORE))
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=None,
                    help="std of Linear weights and lm_head (default: 1/sqrt(fan_in), lm_head "
                         "2.5/sqrt(hidden))")
    ap.add_argument("--tiny-frac", type=float, default=0.0,
                    help="fraction of Linear weight entries scaled by 1e-4")
    ap.add_argument("--tokenizer", default=None,
                    help="directory with tokenizer.json / tokenizer_config.json to copy")
    args = ap.parse_args()
    with open(args.config) as f:
        user = json.load(f)
    generate(user, args.out, args.dtype, args.shards, args.seed, args.std, args.tiny_frac,
             args.tokenizer)


if __name__ == "__main__":
    main()
