#!/usr/bin/python3
"""Writes tests/fixtures/gguf/models/: tiny DeepSeek models as llama.cpp's converter writes them
(architecture "deepseek2"), and tiny R1-Distill-shaped dense models ("qwen2", "llama"), with
float64 reference logits.

    PYTHONPATH=<llama.cpp>/gguf-py /usr/bin/python3 tests/reference/gguf_model_fixture.py [CASE...]

The GGUF files are written with llama.cpp's own gguf-py (GGUFWriter, gguf.quants), an independent
writer: metadata keys, tensor names, the split attn_k_b / attn_v_b (W_UK transposed per head) or the
older unsplit attn_kv_b, stacked experts [E, rows, cols], exp_probs_b.bias, MQA head_count_kv = 1,
yarn_log_multiplier = 0.1 * mscale_all_dim, all as conversion/deepseek.py does. The weights come from
scripts/gen_model.py (a HF checkpoint in a temporary folder). The reference is
tests/reference/deepseek_ref.py (float64 PyTorch) run on the weights that gguf-py's own dequantize
gives back from the file, so whale's logits on the file must equal it up to f32 rounding.

Also writes tests/fixtures/gguf/quantize.gguf, gguf-py's quantization of fixed rows, against
which whale's quantizers are checked byte for byte.

Each case NAME writes NAME.gguf (or, split, NAME-0000K-of-0000N.gguf) and NAME.json {"tokens",
"greedy", "max_abs_logit", "logits" (file), "types" (tensor type counts), "files" (the GGUF files,
the first one first)} with NAME.logits.bin float32 [tokens][vocab].
"""

import json
import os
import sys
import tempfile

import numpy as np
import torch

import gguf
from gguf import GGMLQuantizationType as QT

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import gen_model  # noqa: E402
import safetensors_io  # noqa: E402
from deepseek_ref import DeepseekRef  # noqa: E402
from dense_ref import DenseRef  # noqa: E402

OUT = os.path.join(ROOT, "tests", "fixtures", "gguf", "models")
N_TOKENS = 10
N_GREEDY = 6

# Every matrix dimension a multiple of 32 so the 32-value block types apply everywhere.
V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "vocab_size": 256, "hidden_size": 64, "intermediate_size": 96,
    "moe_intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
    "num_key_value_heads": 2, "q_lora_rank": 64, "kv_lora_rank": 32, "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 32, "v_head_dim": 32, "n_routed_experts": 8, "n_shared_experts": 1,
    "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2, "topk_method": "noaux_tc",
    "scoring_func": "sigmoid", "norm_topk_prob": True, "routed_scaling_factor": 2.5,
    "first_k_dense_replace": 1, "moe_layer_freq": 1, "rope_theta": 10000,
    "max_position_embeddings": 163840,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                     "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                     "type": "yarn"},
}
V2 = {
    "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2",
    "vocab_size": 256, "hidden_size": 64, "intermediate_size": 96,
    "moe_intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 2, "q_lora_rank": None, "kv_lora_rank": 32, "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 32, "v_head_dim": 32, "n_routed_experts": 8, "n_shared_experts": 2,
    "num_experts_per_tok": 3, "n_group": 1, "topk_group": 1, "topk_method": "greedy",
    "scoring_func": "softmax", "norm_topk_prob": False, "routed_scaling_factor": 1.0,
    "first_k_dense_replace": 1, "moe_layer_freq": 1, "rope_theta": 10000,
    "max_position_embeddings": 163840,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707,
                     "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096,
                     "type": "yarn"},
}

# name, config, seed, split k_b/v_b, default matrix type, per-tensor overrides (substring -> type)
CASES = [
    ("v3_q8_0", V3, 71, True, QT.Q8_0, {"token_embd": QT.F16}),
    ("v3_mixed", V3, 72, False, QT.Q4_0,
     {"attn_q_a.": QT.Q4_1, "attn_q_b": QT.Q5_0, "attn_kv_a_mqa": QT.Q5_1, "attn_output": QT.BF16,
      "shexp": QT.Q5_1, "ffn_down_exps": QT.Q8_0, "=output.weight": QT.Q8_0, "token_embd": QT.F16}),
    ("v2_bf16", V2, 73, True, QT.BF16, {"token_embd": QT.F32, "=output.weight": QT.F16}),
    # v3_q8_0's weights again, split by gguf-py into shards of at most 20 tensors
    # (v3_split-0000K-of-0000N.gguf, llama.cpp's gguf-split naming and split.* keys).
    ("v3_split", V3, 71, True, QT.Q8_0, {"token_embd": QT.F16}),
]
SPLIT_MAX_TENSORS = {"v3_split": 20}

# The R1-Distill architectures (conversion/qwen2.py, conversion/llama.py in llama.cpp's converter):
# q/k/v biases and 6 query heads per KV head (Qwen2.5-1.5B's ratio); Llama 3 with 4 per KV head,
# its rope_scaling stored as the rope_freqs tensor and q_proj / k_proj rows permuted.
QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 256,
    "hidden_size": 192, "intermediate_size": 256, "num_hidden_layers": 2,
    "num_attention_heads": 6, "num_key_value_heads": 1, "rope_theta": 10000.0,
    "max_position_embeddings": 131072, "tie_word_embeddings": False,
}
LLAMA3 = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256,
    "hidden_size": 128, "intermediate_size": 224, "num_hidden_layers": 2,
    "num_attention_heads": 8, "num_key_value_heads": 2, "rope_theta": 10000.0,
    "rms_norm_eps": 1e-05, "max_position_embeddings": 131072, "tie_word_embeddings": False,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 32, "rope_type": "llama3"},
}
DENSE_CASES = [
    ("qwen2_q8_0", QWEN2, 81, QT.Q8_0, {"token_embd": QT.F16}),
    ("llama3_q4_0", LLAMA3, 82, QT.Q4_0, {"attn_v": QT.Q8_0, "=output.weight": QT.Q5_1}),
]


def llama_permute(w, n_head, n_head_kv=None):
    """The converter's permute: each head's rows (first half, second half) become adjacent pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama_unpermute(w, n_head):
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(cfg):
    """rope_freqs.weight as the converter computes it (float32 frequencies)."""
    import math
    rs = cfg["rope_scaling"]
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    freqs = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    out = []
    for f in freqs.tolist():
        wavelen = 2 * math.pi / f
        if wavelen < old / hi:
            out.append(1.0)
        elif wavelen > old / lo:
            out.append(factor)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def dense_tensors(cfg, w):
    """(gguf name, float32 array) for a qwen2 / llama model, as the converter writes them."""
    llama = gen_model.dense_arch(cfg) == "llama"
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = [("token_embd.weight", w["model.embed_tokens.weight"])]
    if llama and cfg.get("rope_scaling"):
        out.append(("rope_freqs.weight", llama3_rope_factors(cfg)))
    for i in range(cfg["num_hidden_layers"]):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        a = p + "self_attn."
        out.append((b + "attn_norm.weight", w[p + "input_layernorm.weight"]))
        for hf, g in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v")):
            m = w[a + hf + ".weight"]
            if llama and hf == "q_proj":
                m = llama_permute(m, nh, nh)
            if llama and hf == "k_proj":
                m = llama_permute(m, nh, nkv)
            out.append((b + g + ".weight", m))
            if a + hf + ".bias" in w:
                out.append((b + g + ".bias", w[a + hf + ".bias"]))
        out.append((b + "attn_output.weight", w[a + "o_proj.weight"]))
        out.append((b + "ffn_norm.weight", w[p + "post_attention_layernorm.weight"]))
        for g in ("gate", "up", "down"):
            out.append((b + f"ffn_{g}.weight", w[p + f"mlp.{g}_proj.weight"]))
    out.append(("output_norm.weight", w["model.norm.weight"]))
    out.append(("output.weight", w["lm_head.weight"]))
    return out


def dense_gguf_to_hf(cfg, stored):
    llama = gen_model.dense_arch(cfg) == "llama"
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w = {"model.embed_tokens.weight": stored["token_embd.weight"],
         "model.norm.weight": stored["output_norm.weight"],
         "lm_head.weight": stored["output.weight"]}
    for i in range(cfg["num_hidden_layers"]):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        a = p + "self_attn."
        w[p + "input_layernorm.weight"] = stored[b + "attn_norm.weight"]
        w[p + "post_attention_layernorm.weight"] = stored[b + "ffn_norm.weight"]
        for hf, g in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"),
                      ("o_proj", "attn_output")):
            m = stored[b + g + ".weight"]
            if llama and hf in ("q_proj", "k_proj"):
                m = llama_unpermute(m, nh if hf == "q_proj" else nkv)
            w[a + hf + ".weight"] = m
            if b + g + ".bias" in stored:
                w[a + hf + ".bias"] = stored[b + g + ".bias"]
        for g in ("gate", "up", "down"):
            w[p + f"mlp.{g}_proj.weight"] = stored[b + f"ffn_{g}.weight"]
    return w


def write_dense_gguf(path, cfg, tensors, default, overrides):
    arch = gen_model.dense_arch(cfg)
    wr = gguf.GGUFWriter(path, arch)
    wr.add_name("whale-gguf-fixture")
    wr.add_vocab_size(cfg["vocab_size"])
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(cfg["hidden_size"])
    wr.add_feed_forward_length(cfg["intermediate_size"])
    wr.add_block_count(cfg["num_hidden_layers"])
    wr.add_head_count(cfg["num_attention_heads"])
    wr.add_head_count_kv(cfg["num_key_value_heads"])
    wr.add_rope_freq_base(float(cfg["rope_theta"]))
    wr.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    if arch == "llama":
        wr.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    stored, types = {}, {}
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        qt = choose_type(name, arr, default, overrides)
        data = arr if qt == QT.F32 else (arr.astype(np.float16) if qt == QT.F16
                                         else gguf.quants.quantize(arr, qt))
        wr.add_tensor(name, data, raw_dtype=qt)
        stored[name] = gguf.quants.dequantize(data, qt).astype(np.float64).reshape(arr.shape)
        types[qt.name] = types.get(qt.name, 0) + 1
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return stored, types


def hf_to_gguf_tensors(cfg, w, split_kb):
    """(gguf name, float32 array in row-major HF orientation) in converter order."""
    out = [("token_embd.weight", w["model.embed_tokens.weight"])]
    H, Dn, Dv = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
    E = cfg["n_routed_experts"]
    for i in range(cfg["num_hidden_layers"]):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        out.append((b + "attn_norm.weight", w[p + "input_layernorm.weight"]))
        a = p + "self_attn."
        if cfg["q_lora_rank"]:
            out.append((b + "attn_q_a.weight", w[a + "q_a_proj.weight"]))
            out.append((b + "attn_q_a_norm.weight", w[a + "q_a_layernorm.weight"]))
            out.append((b + "attn_q_b.weight", w[a + "q_b_proj.weight"]))
        else:
            out.append((b + "attn_q.weight", w[a + "q_proj.weight"]))
        out.append((b + "attn_kv_a_mqa.weight", w[a + "kv_a_proj_with_mqa.weight"]))
        out.append((b + "attn_kv_a_norm.weight", w[a + "kv_a_layernorm.weight"]))
        kv_b = w[a + "kv_b_proj.weight"]
        if split_kb:
            kv = kv_b.reshape(H, Dn + Dv, -1)
            out.append((b + "attn_k_b.weight", np.ascontiguousarray(kv[:, :Dn].transpose(0, 2, 1))))
            out.append((b + "attn_v_b.weight", np.ascontiguousarray(kv[:, Dn:])))
        else:
            out.append((b + "attn_kv_b.weight", kv_b))
        out.append((b + "attn_output.weight", w[a + "o_proj.weight"]))
        out.append((b + "ffn_norm.weight", w[p + "post_attention_layernorm.weight"]))
        m = p + "mlp."
        if i < cfg["first_k_dense_replace"]:
            for g in ("gate", "up", "down"):
                out.append((b + f"ffn_{g}.weight", w[m + f"{g}_proj.weight"]))
            continue
        out.append((b + "ffn_gate_inp.weight", w[m + "gate.weight"]))
        if cfg["topk_method"] == "noaux_tc":
            out.append((b + "exp_probs_b.bias", w[m + "gate.e_score_correction_bias"]))
        for g in ("gate", "up", "down"):
            out.append((b + f"ffn_{g}_exps.weight",
                        np.stack([w[m + f"experts.{e}.{g}_proj.weight"] for e in range(E)])))
        for g in ("gate", "up", "down"):
            out.append((b + f"ffn_{g}_shexp.weight", w[m + f"shared_experts.{g}_proj.weight"]))
    out.append(("output_norm.weight", w["model.norm.weight"]))
    out.append(("output.weight", w["lm_head.weight"]))
    return out


def choose_type(name, arr, default, overrides):
    if arr.ndim == 1 or "norm" in name or "ffn_gate_inp" in name or "exp_probs_b" in name:
        return QT.F32  # as llama.cpp: norms, router and its bias stay f32
    t = default
    for key, qt in overrides.items():  # "=NAME": that tensor only; else a part of the name
        if (name == key[1:]) if key.startswith("=") else (key in name):
            t = qt
    block = gguf.GGML_QUANT_SIZES[t][0]
    return t if arr.shape[-1] % block == 0 else QT.F32


def gguf_to_hf(cfg, stored, split_kb):
    """HF-named float64 weights from the dequantized GGUF tensors (the converter undone)."""
    H, Dn, Dv = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
    E = cfg["n_routed_experts"]
    w = {"model.embed_tokens.weight": stored["token_embd.weight"],
         "model.norm.weight": stored["output_norm.weight"],
         "lm_head.weight": stored["output.weight"]}
    for i in range(cfg["num_hidden_layers"]):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        a = p + "self_attn."
        w[p + "input_layernorm.weight"] = stored[b + "attn_norm.weight"]
        w[p + "post_attention_layernorm.weight"] = stored[b + "ffn_norm.weight"]
        if cfg["q_lora_rank"]:
            w[a + "q_a_proj.weight"] = stored[b + "attn_q_a.weight"]
            w[a + "q_a_layernorm.weight"] = stored[b + "attn_q_a_norm.weight"]
            w[a + "q_b_proj.weight"] = stored[b + "attn_q_b.weight"]
        else:
            w[a + "q_proj.weight"] = stored[b + "attn_q.weight"]
        w[a + "kv_a_proj_with_mqa.weight"] = stored[b + "attn_kv_a_mqa.weight"]
        w[a + "kv_a_layernorm.weight"] = stored[b + "attn_kv_a_norm.weight"]
        if split_kb:
            k_b = stored[b + "attn_k_b.weight"].transpose(0, 2, 1)  # [H, Dn, L]
            v_b = stored[b + "attn_v_b.weight"]                     # [H, Dv, L]
            w[a + "kv_b_proj.weight"] = np.concatenate([k_b, v_b], axis=1).reshape(H * (Dn + Dv), -1)
        else:
            w[a + "kv_b_proj.weight"] = stored[b + "attn_kv_b.weight"]
        w[a + "o_proj.weight"] = stored[b + "attn_output.weight"]
        m = p + "mlp."
        if i < cfg["first_k_dense_replace"]:
            for g in ("gate", "up", "down"):
                w[m + f"{g}_proj.weight"] = stored[b + f"ffn_{g}.weight"]
            continue
        w[m + "gate.weight"] = stored[b + "ffn_gate_inp.weight"]
        if cfg["topk_method"] == "noaux_tc":
            w[m + "gate.e_score_correction_bias"] = stored[b + "exp_probs_b.bias"]
        for g in ("gate", "up", "down"):
            stack = stored[b + f"ffn_{g}_exps.weight"]
            for e in range(E):
                w[m + f"experts.{e}.{g}_proj.weight"] = stack[e]
            w[m + f"shared_experts.{g}_proj.weight"] = stored[b + f"ffn_{g}_shexp.weight"]
    return w


def write_gguf(path, cfg, tensors, default, overrides, split_max_tensors=0):
    wr = gguf.GGUFWriter(path, "deepseek2", split_max_tensors=split_max_tensors)
    wr.add_name("whale-gguf-fixture")
    wr.add_vocab_size(cfg["vocab_size"])
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(cfg["hidden_size"])
    wr.add_feed_forward_length(cfg["intermediate_size"])
    wr.add_block_count(cfg["num_hidden_layers"])
    wr.add_head_count(cfg["num_attention_heads"])
    wr.add_head_count_kv(1)
    wr.add_rope_freq_base(float(cfg["rope_theta"]))
    wr.add_layer_norm_rms_eps(1e-6)
    wr.add_leading_dense_block_count(cfg["first_k_dense_replace"])
    if cfg["q_lora_rank"]:
        wr.add_q_lora_rank(cfg["q_lora_rank"])
    L, R = cfg["kv_lora_rank"], cfg["qk_rope_head_dim"]
    wr.add_kv_lora_rank(L)
    wr.add_key_length(L + R)
    wr.add_value_length(L)
    wr.add_key_length_mla(cfg["qk_nope_head_dim"] + R)
    wr.add_value_length_mla(cfg["v_head_dim"])
    wr.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
    wr.add_expert_count(cfg["n_routed_experts"])
    wr.add_expert_shared_count(cfg["n_shared_experts"])
    wr.add_expert_used_count(cfg["num_experts_per_tok"])
    wr.add_expert_weights_scale(float(cfg["routed_scaling_factor"]))
    if cfg["norm_topk_prob"]:
        wr.add_expert_weights_norm(True)
    sigmoid = cfg["scoring_func"] == "sigmoid"
    wr.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID if sigmoid
                              else gguf.ExpertGatingFuncType.SOFTMAX)
    if cfg["n_group"] > 1:
        wr.add_expert_group_count(cfg["n_group"])
        wr.add_expert_group_used_count(cfg["topk_group"])
    wr.add_rope_dimension_count(R)
    rs = cfg["rope_scaling"]
    wr.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    wr.add_rope_scaling_factor(float(rs["factor"]))
    wr.add_rope_scaling_orig_ctx_len(rs["original_max_position_embeddings"])
    wr.add_rope_scaling_yarn_log_mul(0.1 * rs["mscale_all_dim"])
    stored, types = {}, {}
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        qt = choose_type(name, arr, default, overrides)
        if qt == QT.F32:
            data = arr
        elif qt == QT.F16:
            data = arr.astype(np.float16)
        else:
            data = gguf.quants.quantize(arr, qt)
        wr.add_tensor(name, data, raw_dtype=qt)
        stored[name] = gguf.quants.dequantize(data, qt).astype(np.float64).reshape(arr.shape)
        types[qt.name] = types.get(qt.name, 0) + 1
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    files = [os.path.basename(str(p)) for p in wr.format_shard_names(wr.path)]
    wr.close()
    return stored, types, files


def write_quantize_fixture(path):
    """quantize.gguf: `src` (F32 rows: normal, tiny, zeros, one outlier, constant, signed ramp)
    and `q.<TYPE>`: the same rows quantized by gguf-py (llama.cpp's reference rounding)."""
    rng = np.random.default_rng(5)
    rows = [rng.standard_normal(256), rng.standard_normal(256) * 1e-3, np.zeros(256),
            np.where(np.arange(256) == 77, 40.0, rng.standard_normal(256) * 0.1),
            np.full(256, -0.75), np.linspace(-3, 3, 256)]
    src = np.stack(rows).astype(np.float32)
    wr = gguf.GGUFWriter(path, "whale-test")
    wr.add_tensor("src", src, raw_dtype=QT.F32)
    for qt in (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.F16, QT.BF16):
        wr.add_tensor("q." + qt.name, gguf.quants.quantize(src, qt), raw_dtype=qt)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    only = set(sys.argv[1:])  # case names to (re)write; all (and quantize.gguf) by default
    if not only:
        write_quantize_fixture(os.path.join(OUT, "..", "quantize.gguf"))
    torch.set_num_threads(1)
    for name, cfg, seed, split_kb, default, overrides in CASES:
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            config, _ = gen_model.generate(cfg, tmp, "f32", 1, seed, verbose=False)
            w = safetensors_io.load_checkpoint(tmp, out=np.float32)
        tensors = hf_to_gguf_tensors(config, w, split_kb)
        stored, types, files = write_gguf(os.path.join(OUT, name + ".gguf"), config, tensors,
                                          default, overrides, SPLIT_MAX_TENSORS.get(name, 0))
        ref = DeepseekRef(config=config, weights=gguf_to_hf(config, stored, split_kb))
        rng = np.random.default_rng(seed)
        tokens = [int(t) for t in rng.integers(2, config["vocab_size"], N_TOKENS)]
        logits = ref.forward_logits(tokens)
        greedy = ref.greedy(tokens, N_GREEDY)
        logits.to(torch.float32).numpy().astype("<f4").tofile(
            os.path.join(OUT, name + ".logits.bin"))
        info = {"tokens": tokens, "greedy": [int(g) for g in greedy],
                "vocab_size": config["vocab_size"], "logits": name + ".logits.bin",
                "max_abs_logit": round(float(logits.abs().max()), 4), "types": types,
                "files": files}
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(info, f, indent=1)
            f.write("\n")
        size = sum(os.path.getsize(os.path.join(OUT, f)) for f in files)
        print(f"{name}: {len(files)} file(s), {size} bytes, types {types}, "
              f"max|logit| {info['max_abs_logit']}")
    for name, cfg, seed, default, overrides in DENSE_CASES:
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            config, _ = gen_model.generate(cfg, tmp, "f32", 1, seed, verbose=False)
            w = safetensors_io.load_checkpoint(tmp, out=np.float32)
        stored, types = write_dense_gguf(os.path.join(OUT, name + ".gguf"), config,
                                         dense_tensors(config, w), default, overrides)
        ref = DenseRef(config=config, weights=dense_gguf_to_hf(config, stored))
        # The second path (token by token, complex RoPE) and the unpermuted rows agree.
        rng = np.random.default_rng(seed)
        tokens = [int(t) for t in rng.integers(2, config["vocab_size"], N_TOKENS)]
        logits = ref.forward_logits(tokens)
        assert float((logits - ref.forward_logits(tokens, alt=True)).abs().max()) < 1e-9
        greedy = ref.greedy(tokens, N_GREEDY)
        logits.to(torch.float32).numpy().astype("<f4").tofile(
            os.path.join(OUT, name + ".logits.bin"))
        info = {"tokens": tokens, "greedy": [int(g) for g in greedy],
                "vocab_size": config["vocab_size"], "logits": name + ".logits.bin",
                "max_abs_logit": round(float(logits.abs().max()), 4), "types": types,
                "files": [name + ".gguf"]}
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(info, f, indent=1)
            f.write("\n")
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name + '.gguf'))} bytes, types {types}, "
              f"max|logit| {info['max_abs_logit']}")


if __name__ == "__main__":
    main()
