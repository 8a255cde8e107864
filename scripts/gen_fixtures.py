#!/usr/bin/python3
"""Generates the tiny DeepSeek checkpoint fixtures in tests/fixtures/models/<name>/ with float64
reference outputs from tests/reference/deepseek_ref.py, and the dense Qwen2 / Llama fixtures (the
R1-Distill architectures) with tests/reference/dense_ref.py.

    /usr/bin/python3 scripts/gen_fixtures.py [--out tests/fixtures/models] [--only NAME ...]

Each fixture directory holds a HF-layout model (config.json + safetensors, see scripts/gen_model.py)
and
  reference.json          {"tokens": [...12 ids], "greedy": [8 ids], "vocab_size": V,
                           "logits": "reference_logits.bin", plus informational fields
                           "max_abs_logit", "min_route_margin", "min_group_margin",
                           "min_greedy_gap"}
  reference_logits.bin    float32 little-endian, row-major [len(tokens)][vocab]: the logits of every
                          position of `tokens` (no BOS, empty context), computed in float64 from the
                          dequantised stored weights, then cast to f32.
`greedy` are 8 greedy continuation ids (argmax, full recompute every step).

Everything is deterministic (fixed seeds). Before writing, each fixture is cross-checked:
a second computation path (absorbed MLA in latent space, complex interleaved RoPE, per-token Python
routing) must agree to ~1e-12, prefix logits must equal (causality), routing must be non-trivial
(several experts used, group limits / bias actually change choices), and the token sequence is
re-drawn until routing margins and greedy top-1/top-2 logit gaps are not tiny, so an f32 engine
reproduces the same discrete decisions, and the greedy continuation is not degenerate (>= 4
distinct ids).
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import gen_model  # noqa: E402
from deepseek_ref import DeepseekRef, is_moe_layer  # noqa: E402
from dense_ref import DenseRef  # noqa: E402

N_TOKENS = 12
N_GREEDY = 8
MIN_ROUTE_MARGIN = 1e-3  # gap between the k-th chosen and best rejected (biased) score
MIN_GREEDY_GAP = 2e-2  # top-1 minus top-2 logit at each greedy step

YARN_V3 = {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
           "original_max_position_embeddings": 4096, "type": "yarn"}

FIXTURES = [
    {
        "name": "v2_lite",
        "about": "DeepSeek-V2-Lite style: q_proj (q_lora_rank null), softmax + greedy top-k, 1 "
                 "dense layer then MoE, 2 shared experts, norm_topk_prob false, "
                 "routed_scaling_factor 1, no rope_scaling. BF16.",
        "dtype": "bf16", "shards": 1, "seed": 11,
        "config": {
            "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2",
            "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
            "moe_intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
            "num_key_value_heads": 4, "q_lora_rank": None, "kv_lora_rank": 32,
            "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
            "n_routed_experts": 8, "n_shared_experts": 2, "num_experts_per_tok": 3,
            "n_group": 1, "topk_group": 1, "topk_method": "greedy", "scoring_func": "softmax",
            "norm_topk_prob": False, "routed_scaling_factor": 1.0, "first_k_dense_replace": 1,
            "moe_layer_freq": 1, "rope_scaling": None, "rope_theta": 10000,
            "max_position_embeddings": 4096, "bos_token_id": 0, "eos_token_id": 1,
        },
    },
    {
        "name": "v2_group",
        "about": "V2 with q_lora, group_limited_greedy (group score = max), norm_topk_prob true "
                 "and routed_scaling_factor 1.5 (V2 rule: normalised, NOT scaled), YaRN with "
                 "mscale 1.0 != mscale_all_dim 0.707 (cos/sin scaled by the ratio). F16.",
        "dtype": "f16", "shards": 1, "seed": 22,
        "config": {
            "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2",
            "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
            "moe_intermediate_size": 24, "num_hidden_layers": 3, "num_attention_heads": 4,
            "num_key_value_heads": 4, "q_lora_rank": 48, "kv_lora_rank": 32,
            "qk_nope_head_dim": 16, "qk_rope_head_dim": 16, "v_head_dim": 16,
            "n_routed_experts": 12, "n_shared_experts": 1, "num_experts_per_tok": 4,
            "n_group": 4, "topk_group": 2, "topk_method": "group_limited_greedy",
            "scoring_func": "softmax", "norm_topk_prob": True, "routed_scaling_factor": 1.5,
            "first_k_dense_replace": 1, "moe_layer_freq": 1, "rope_theta": 10000,
            "max_position_embeddings": 163840, "bos_token_id": 0, "eos_token_id": 1,
            "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                             "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096,
                             "type": "yarn"},
        },
    },
    {
        "name": "v2_scaled",
        "about": "DeepSeek-V2 (236B) style routing: group_limited_greedy, norm_topk_prob false and "
                 "routed_scaling_factor 16 (V2 rule: scaled, not normalised). BF16.",
        "dtype": "bf16", "shards": 1, "seed": 33,
        "config": {
            "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2",
            "vocab_size": 256, "hidden_size": 64, "intermediate_size": 96,
            "moe_intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "q_lora_rank": 32, "kv_lora_rank": 32,
            "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
            "n_routed_experts": 8, "n_shared_experts": 2, "num_experts_per_tok": 3,
            "n_group": 4, "topk_group": 2, "topk_method": "group_limited_greedy",
            "scoring_func": "softmax", "norm_topk_prob": False, "routed_scaling_factor": 16.0,
            "first_k_dense_replace": 1, "moe_layer_freq": 1, "rope_theta": 10000,
            "max_position_embeddings": 4096, "rope_scaling": None, "bos_token_id": 0,
            "eos_token_id": 1,
        },
    },
    {
        "name": "v3",
        "about": "DeepSeek-V3 style: q_lora, sigmoid + noaux_tc (bias with negative entries, group "
                 "score = sum of top-2), norm_topk_prob true, routed_scaling_factor 2.5, YaRN "
                 "factor 40 mscale = mscale_all_dim = 1.0, 1 dense layer then MoE, 1 MTP layer in "
                 "the file. BF16 (e_score_correction_bias F32).",
        "dtype": "bf16", "shards": 1, "seed": 44,
        "config": {
            "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
            "vocab_size": 256, "hidden_size": 96, "intermediate_size": 192,
            "moe_intermediate_size": 16, "num_hidden_layers": 3, "num_nextn_predict_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 4, "q_lora_rank": 64,
            "kv_lora_rank": 48, "qk_nope_head_dim": 24, "qk_rope_head_dim": 16, "v_head_dim": 24,
            "n_routed_experts": 12, "n_shared_experts": 1, "num_experts_per_tok": 3,
            "n_group": 4, "topk_group": 2, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
            "norm_topk_prob": True, "routed_scaling_factor": 2.5, "first_k_dense_replace": 1,
            "moe_layer_freq": 1, "rope_theta": 10000, "max_position_embeddings": 163840,
            "rope_scaling": YARN_V3,
        },
    },
    {
        "name": "v3_fp8",
        "about": "The V3 architecture with FP8 e4m3 128x128 block-scaled weights "
                 "(quantization_config as the release): hidden 192, q_lora 136, kv_lora 136, "
                 "kv_b out 320, dense intermediate 136 -> partial edge blocks everywhere; 1% of "
                 "every Linear weight scaled by 1e-4 so they become e4m3 subnormals/zeros. MTP "
                 "layer (FP8 eh_proj).",
        "dtype": "fp8", "shards": 1, "seed": 55, "tiny_frac": 0.01,
        "config": {
            "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
            "vocab_size": 256, "hidden_size": 192, "intermediate_size": 136,
            "moe_intermediate_size": 32, "num_hidden_layers": 2, "num_nextn_predict_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 4, "q_lora_rank": 136,
            "kv_lora_rank": 136, "qk_nope_head_dim": 48, "qk_rope_head_dim": 16, "v_head_dim": 32,
            "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2,
            "n_group": 2, "topk_group": 1, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
            "norm_topk_prob": True, "routed_scaling_factor": 2.5, "first_k_dense_replace": 1,
            "moe_layer_freq": 1, "rope_theta": 10000, "max_position_embeddings": 163840,
            "rope_scaling": YARN_V3,
        },
    },
    {
        "name": "v3_sharded",
        "about": "Exactly the v3 model (same seed, identical tensors and reference) split into 3 "
                 "shards with model.safetensors.index.json.",
        "dtype": "bf16", "shards": 3, "seed": 44, "same_as": "v3",
    },
    {
        "name": "v3_tied",
        "about": "V3 with tie_word_embeddings true (no lm_head in the file), no shared experts "
                 "(n_shared_experts null), moe_layer_freq 2 (layers 0, 1 dense, 2 MoE), one group "
                 "(n_group 1), YaRN factor 8 with mscale 0.8 and NO mscale_all_dim key (HF default "
                 "0: softmax scale not multiplied, cos/sin scaled by yarn_get_mscale(8, 0.8)), "
                 "rope_theta 1000, rms_norm_eps 1e-2 (the latent norms q_a_layernorm and kv_a_layernorm keep 1e-6, as HF), no MTP. F32.",
        "dtype": "f32", "shards": 1, "seed": 66,
        "config": {
            "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
            "vocab_size": 256, "hidden_size": 64, "intermediate_size": 96,
            "moe_intermediate_size": 16, "num_hidden_layers": 3, "num_nextn_predict_layers": 0,
            "num_attention_heads": 2, "num_key_value_heads": 2, "q_lora_rank": 32,
            "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
            "n_routed_experts": 8, "n_shared_experts": None, "num_experts_per_tok": 2,
            "n_group": 1, "topk_group": 1, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
            "norm_topk_prob": True, "routed_scaling_factor": 2.5, "first_k_dense_replace": 1,
            "moe_layer_freq": 2, "rope_theta": 1000, "max_position_embeddings": 32768,
            "tie_word_embeddings": True, "rms_norm_eps": 1e-2,
            "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 8, "mscale": 0.8,
                             "original_max_position_embeddings": 4096, "type": "yarn"},
        },
    },
]


# The R1-Distill architectures: grouped-query attention with ratios 6 (Qwen2.5-1.5B's 12 / 2) and
# 4 (Llama-3.1-8B's 32 / 8).
FIXTURES += [
    {
        "name": "qwen2",
        "about": "Qwen2ForCausalLM as R1-Distill-Qwen-1.5B: q/k/v biases, 6 query heads per KV "
                 "head, untied lm_head, rope_theta 10000, use_sliding_window false. BF16.",
        "dtype": "bf16", "shards": 1, "seed": 77,
        "config": {
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "vocab_size": 256, "hidden_size": 96, "intermediate_size": 160,
            "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 1,
            "rope_theta": 10000.0, "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "bos_token_id": 0, "eos_token_id": 1,
        },
    },
    {
        "name": "qwen2_tied",
        "about": "Qwen2 with tie_word_embeddings true (no lm_head in the file), 2 query heads per "
                 "KV head (head_dim 32), rms_norm_eps 1e-5, in 3 shards with an index. F16.",
        "dtype": "f16", "shards": 3, "seed": 88,
        "config": {
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "vocab_size": 256, "hidden_size": 128, "intermediate_size": 192,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-05, "max_position_embeddings": 4096,
            "tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 1,
        },
    },
    {
        "name": "llama3",
        "about": "LlamaForCausalLM as R1-Distill-Llama-8B: 4 query heads per KV head, no biases, "
                 "rope_scaling llama3 (factor 8, low 1, high 4) with "
                 "original_max_position_embeddings 32 so that at these short positions some "
                 "frequencies are divided by 8, one is blended and the rest kept; rms_norm_eps "
                 "1e-5, head_dim 32 (not hidden / heads). BF16.",
        "dtype": "bf16", "shards": 1, "seed": 99,
        "config": {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": 256, "hidden_size": 128, "intermediate_size": 224,
            "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 2,
            "head_dim": 32, "rope_theta": 10000.0, "rms_norm_eps": 1e-05,
            "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 32, "rope_type": "llama3"},
            "bos_token_id": 0, "eos_token_id": 1,
        },
    },
]


def check_paths(ref, seq):
    """Main vs second computation path, and causality; returns the max abs difference."""
    main = ref.forward_logits(seq)
    alt = ref.forward_logits(seq, alt=True)
    diff = float((main - alt).abs().max())
    scale = 1.0 + float(main.abs().max())
    assert diff < 1e-9 * scale, f"second path disagrees: {diff}"
    prefix = ref.forward_logits(seq[:5])
    assert float((prefix - main[:5]).abs().max()) < 1e-9 * scale, "not causal"
    return diff


def routing_summary(ref, seq):
    """Runs the sequence, returns routing statistics over all MoE layers and positions."""
    ref.forward_logits(seq, record_routing=True)
    c = ref.config
    out = {"layers": [], "margin": float("inf"), "group_margin": float("inf"),
           "group_changed": 0, "bias_changed": 0}
    for st in ref.routing_log:
        used = sorted(set(st["idx"].flatten().tolist()))
        out["layers"].append((st["layer"], len(used)))
        out["margin"] = min(out["margin"], st["margin"])
        out["group_margin"] = min(out["group_margin"], st["group_margin"])
        out["group_changed"] += st["group_changed"]
        out["bias_changed"] += st["bias_changed"]
        # several experts must be used across tokens
        assert len(used) >= min(c["n_routed_experts"], c["num_experts_per_tok"] + 3), used
    return out


def greedy_with_gaps(ref, tokens):
    seq, out, gaps = list(tokens), [], []
    for _ in range(N_GREEDY):
        last = ref.forward_logits(seq)[-1]
        top = last.topk(2)
        gaps.append(float(top.values[0] - top.values[1]))
        out.append(int(top.indices[0]))
        seq.append(out[-1])
    return out, min(gaps)


def build(fx, out_root):
    cfg = fx.get("config") or next(f["config"] for f in FIXTURES if f["name"] == fx["same_as"])
    out = os.path.join(out_root, fx["name"])
    config, _ = gen_model.generate(cfg, out, fx["dtype"], fx["shards"], fx["seed"],
                                   tiny_frac=fx.get("tiny_frac", 0.0))
    dense = gen_model.dense_arch(config) is not None
    ref = DenseRef(out) if dense else DeepseekRef(out)
    V = config["vocab_size"]
    moe = not dense and any(is_moe_layer(config, i) for i in range(config["num_hidden_layers"]))
    for attempt in range(50):
        rng = np.random.default_rng([fx["seed"], 1000 + attempt])
        tokens = [int(t) for t in rng.integers(2, V, N_TOKENS)]
        greedy, gap = greedy_with_gaps(ref, tokens)
        seq = tokens + greedy[:-1]  # every position whose routing the decoding depends on
        routing = routing_summary(ref, seq) if moe else None
        if gap >= MIN_GREEDY_GAP and len(set(greedy)) >= 4 and (routing is None or (
                routing["margin"] >= MIN_ROUTE_MARGIN and
                routing["group_margin"] >= MIN_ROUTE_MARGIN)):
            break
    else:
        raise RuntimeError(f"{fx['name']}: no robust token sequence found")
    diff = check_paths(ref, seq)
    logits = ref.forward_logits(tokens)
    assert logits.shape == (N_TOKENS, V)
    # the greedy ids must be the argmax of the full-sequence logits (consistency of the two ways)
    full = ref.forward_logits(tokens + greedy)
    assert [int(full[N_TOKENS - 1 + k].argmax()) for k in range(N_GREEDY)] == greedy
    f32 = logits.to(torch.float32).numpy().astype("<f4")
    f32.tofile(os.path.join(out, "reference_logits.bin"))
    reference = {
        "tokens": tokens, "greedy": greedy, "vocab_size": V, "logits": "reference_logits.bin",
        "max_abs_logit": round(float(logits.abs().max()), 4),
        "min_route_margin": None if routing is None else round(routing["margin"], 6),
        "min_group_margin": (None if routing is None or routing["group_margin"] == float("inf")
                             else round(routing["group_margin"], 6)),
        "min_greedy_gap": round(gap, 6),
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print(f"  {fx['name']}: max|logit| {float(logits.abs().max()):.3f}, attempt {attempt}, "
          f"second-path diff {diff:.1e}, min greedy gap {gap:.4f}")
    if routing:
        layers = ", ".join(f"L{i}: {n} experts" for i, n in routing["layers"])
        print(f"    routing: {layers}; min margin {routing['margin']:.4f}, group margin "
              f"{routing['group_margin']:.4f}, group limit changed {routing['group_changed']} "
              f"choices, bias changed {routing['bias_changed']}")
    return reference, routing


def main():
    ap = argparse.ArgumentParser(description="Generate tests/fixtures/models")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "models"))
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)  # deterministic reductions
    results = {}
    for fx in FIXTURES:
        if args.only and fx["name"] not in args.only:
            continue
        results[fx["name"]] = build(fx, args.out)
    # the routing of each case must exercise what the case is about
    if "v2_group" in results:
        assert results["v2_group"][1]["group_changed"] > 0, "v2_group: groups never matter"
    if "v2_scaled" in results:
        assert results["v2_scaled"][1]["group_changed"] > 0, "v2_scaled: groups never matter"
    if "v3" in results:
        assert results["v3"][1]["group_changed"] > 0, "v3: groups never matter"
        assert results["v3"][1]["bias_changed"] > 0, "v3: bias never matters"
    if "v3" in results and "v3_sharded" in results:
        assert results["v3"][0] == results["v3_sharded"][0], "v3_sharded must equal v3"
    print("fixtures written to", args.out)


if __name__ == "__main__":
    main()
