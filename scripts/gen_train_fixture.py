#!/usr/bin/python3
"""Generates tests/fixtures/train_model/: a tiny DeepSeek-V3 model (MLA, dense + MoE layers, depth-1
MTP) with one batch and the float64 PyTorch reference of its training losses and gradients
(tests/reference/deepseek_train_ref.py). Read by the C++ whole-model test.

    /usr/bin/python3 scripts/gen_train_fixture.py [--out tests/fixtures/train_model]

Files:
  config.json        Hugging Face DeepseekV3 config (YaRN, noaux_tc routing with 4 groups, MTP).
  model.safetensors  every tensor in F32 under its HF checkpoint name, including the routing biases
                     (non-zero) and the MTP copies model.layers.3.embed_tokens.weight and
                     model.layers.3.shared_head.head.weight (equal to the main embedding / head).
  batch.safetensors  inputs, targets I32 [2][7] (targets = inputs shifted by one, one target -1)
                     and grad.<name> F32: d loss / d <name> for every trainable tensor (the MTP's
                     use of the shared embedding and head is included in the main names).
  expected.json      loss, main, mtp, balance, mtp_lambda, balance_alpha, tokens, expert_counts
                     [MoE layer][expert] (layers 1, 2 and the MTP block 3), plus informational
                     routed_experts [layer][token][k] (descending biased score), mtp_tokens,
                     min_margins and seed.
The model is computed in float64 from the stored f32 values. Deterministic: the weights and the
batch come from numpy generators with fixed seeds; a seed is skipped (next one tried) unless every
routing decision has a margin > MIN_MARGIN (so an f32 implementation selects the same experts and
groups) and the routing biases change some selection. Before writing, the script checks:
  * the main logits and routing against deepseek_ref.DeepseekRef (inference reference, both of its
    computation paths), and the MTP logits against a DeepseekRef-based recomputation of the MTP;
  * the losses against torch.nn.functional.cross_entropy and a per-token loop for the balance term;
  * a few gradient entries against central finite differences.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import safetensors_io  # noqa: E402
from deepseek_ref import DeepseekRef, is_moe_layer, rms_norm  # noqa: E402
from deepseek_train_ref import (IGNORE, DeepseekTrainRef, is_buffer, mtp_copy_names,  # noqa: E402
                                param_shapes)

CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "attention_bias": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 32,
    "initializer_range": 0.006,
    "intermediate_size": 48,
    "kv_lora_rank": 12,
    "max_position_embeddings": 64,
    "moe_intermediate_size": 16,
    "moe_layer_freq": 1,
    "n_group": 4,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 2,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 3,
    "num_key_value_heads": 2,
    "num_nextn_predict_layers": 1,
    "q_lora_rank": 16,
    "qk_nope_head_dim": 8,
    "qk_rope_head_dim": 4,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 16,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 1, "mscale_all_dim": 1},
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "tie_word_embeddings": False,
    "topk_group": 2,
    "topk_method": "noaux_tc",
    "torch_dtype": "float32",
    "v_head_dim": 8,
    "vocab_size": 61,
}
B, T = 2, 7
IGNORED = (1, 3)  # the one ignored target [b][i] (not the last position)
MTP_LAMBDA = 0.3
BALANCE_ALPHA = 0.01
MIN_MARGIN = 1e-3
FIRST_SEED = 2024


# ----------------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------------


def draw_weights(config, rng):
    """name -> f32 array. Matrices ~ N(0, (1.5 / sqrt(fan_in))^2) (0.19-0.38 here), the
    embedding ~ N(0, 1), norm weights 1 + N(0, 0.1^2), routing biases ~ N(0, 0.1^2)."""
    w = {}
    copies = mtp_copy_names(config)
    for name, shape in param_shapes(config).items():
        if name in copies:
            continue
        if is_buffer(name):
            v = rng.normal(0.0, 0.1, shape)
        elif len(shape) == 1:
            v = 1.0 + rng.normal(0.0, 0.1, shape)
        elif name == "model.embed_tokens.weight":
            v = rng.normal(0.0, 1.0, shape)
        else:
            v = rng.normal(0.0, 1.5 / np.sqrt(shape[1]), shape)
        w[name] = v.astype(np.float32)
    for copy, main in copies.items():
        w[copy] = w[main].copy()
    return w


def draw_batch(config, rng):
    seq = rng.integers(0, config["vocab_size"], size=(B, T + 1))
    inputs, targets = seq[:, :T].copy(), seq[:, 1:].copy()
    targets[IGNORED] = IGNORE
    return inputs.astype(np.int32), targets.astype(np.int32)


def run(config, weights, inputs, targets):
    ref = DeepseekTrainRef(config, weights)
    out = ref.forward(inputs, targets, MTP_LAMBDA, BALANCE_ALPHA)
    out["loss"].backward()
    return ref, out


def min_margins(routing):
    return {k: min(float(r["margins"][k].min()) for r in routing)
            for k in ("expert", "group", "pos")}


def acceptable(ref):
    m = min_margins(ref.routing)
    if min(m.values()) <= MIN_MARGIN:
        return False
    # the biases and the group limit must change some selections
    def changed(ids, other):
        return int((ids.sort(-1).values != other.sort(-1).values).any(-1).sum())

    by_bias = sum(changed(r["ids"], r["unbiased_ids"]) for r in ref.routing)
    by_group = sum(changed(r["ids"], r["unlimited_ids"]) for r in ref.routing)
    return by_bias > 0 and by_group > 0


# ----------------------------------------------------------------------------------------------
# cross-checks
# ----------------------------------------------------------------------------------------------


def close(a, b, tol, what):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    err = float((a - b).abs().max() / max(1.0, float(b.abs().max())))
    if not err <= tol:
        raise AssertionError(f"{what}: relative error {err:.3g} > {tol:g}")
    return err


def check_against_inference(config, weights, inputs, ref, out):
    """(a) main logits and routing vs DeepseekRef; MTP logits vs DeepseekRef's layer functions."""
    w64 = {k: v.astype(np.float64) for k, v in weights.items()}
    inf = DeepseekRef(config=config, weights=w64)
    L = config["num_hidden_layers"]
    p = f"model.layers.{L}."
    # DeepseekRef.hidden_states returns model.norm(h_L); with model.norm.weight := hnorm.weight
    # the same call yields hnorm(h_L), the MTP's hidden input.
    w_h = dict(w64, **{"model.norm.weight": w64[p + "hnorm.weight"]})
    inf_h = DeepseekRef(config=config, weights=w_h)
    moe_layers = [i for i in range(L) if is_moe_layer(config, i)]
    for b in range(B):
        toks = inputs[b].tolist()
        for alt in (False, True):
            logits = inf.forward_logits(toks, alt=alt, record_routing=not alt)
            close(out["logits"][b].detach(), logits, 1e-11, f"main logits b={b} alt={alt}")
        for k, stats in enumerate(inf.routing_log):
            assert stats["layer"] == moe_layers[k]
            mine = ref.routing[k]["ids"][b * T:(b + 1) * T].sort(-1).values
            assert torch.equal(mine, stats["idx"].sort(-1).values), f"routing layer {k} b={b}"
        # MTP: m = eh_proj([enorm(embed(next)) ; hnorm(h_L)]), then layer L, shared_head.norm
        nxt = toks[1:] + toks[-1:]
        e = rms_norm(inf.W("model.embed_tokens.weight")[nxt], inf.W(p + "enorm.weight"), inf.eps)
        h = inf_h.hidden_states(toks)
        m = torch.cat([e, h], dim=-1) @ inf.W(p + "eh_proj.weight").t()
        close(out["mtp_input"][b].detach(), m, 1e-11, f"MTP input b={b}")
        x = m + inf.mla_naive(rms_norm(m, inf.W(p + "input_layernorm.weight"), inf.eps),
                              p + "self_attn.")
        y, stats = inf.moe(rms_norm(x, inf.W(p + "post_attention_layernorm.weight"), inf.eps),
                           p + "mlp.")
        mine = ref.routing[-1]["ids"][b * T:(b + 1) * T].sort(-1).values
        assert torch.equal(mine, stats["idx"].sort(-1).values), f"MTP routing b={b}"
        logits = rms_norm(x + y, inf.W(p + "shared_head.norm.weight"), inf.eps) @ inf.lm_head().t()
        close(out["mtp_logits"][b].detach(), logits, 1e-11, f"MTP logits b={b}")


def check_losses(config, inputs, targets, ref, out):
    """The three loss terms recomputed another way."""
    F = torch.nn.functional
    tg = torch.as_tensor(targets, dtype=torch.long)
    main = F.cross_entropy(out["logits"].detach().reshape(B * T, -1), tg.reshape(-1),
                           ignore_index=IGNORE)
    close(out["main"].detach(), main, 1e-13, "main loss")
    mtp_t = torch.cat([tg[:, 1:], torch.full((B, 1), IGNORE)], dim=1)
    mtp = F.cross_entropy(out["mtp_logits"].detach().reshape(B * T, -1), mtp_t.reshape(-1),
                          ignore_index=IGNORE)
    close(out["mtp"].detach(), mtp, 1e-13, "MTP loss")
    # balance: per layer, per sequence, per expert loops over the recorded scores and selections
    E, K = config["n_routed_experts"], config["num_experts_per_tok"]
    total = 0.0
    for r in ref.routing:
        s, ids = r["scores"].tolist(), r["ids"].tolist()
        for b in range(B):
            rows = range(b * T, (b + 1) * T)
            acc = 0.0
            for e in range(E):
                f = E / (K * T) * sum(e in ids[t] for t in rows)
                P = sum(s[t][e] / sum(s[t]) for t in rows) / T
                acc += f * P
            total += BALANCE_ALPHA * acc / B
    close(out["balance"].detach(), total, 1e-12, "balance loss")
    assert out["tokens"] == B * T - 1


def check_finite_differences(config, weights, inputs, targets, ref, rng):
    """Central differences of the total loss (float64) on a few entries of several tensors."""
    grads = ref.grads()
    names = ["model.embed_tokens.weight", "lm_head.weight", "model.layers.0.mlp.up_proj.weight",
             "model.layers.1.self_attn.q_a_layernorm.weight",
             "model.layers.1.self_attn.kv_b_proj.weight", "model.layers.2.mlp.gate.weight",
             "model.layers.2.mlp.experts.5.down_proj.weight",
             "model.layers.2.mlp.shared_experts.gate_proj.weight",
             "model.layers.3.eh_proj.weight", "model.layers.3.enorm.weight",
             "model.layers.3.self_attn.kv_a_proj_with_mqa.weight",
             "model.layers.3.shared_head.norm.weight"]
    w64 = {k: v.astype(np.float64) for k, v in weights.items()}
    ids0 = [r["ids"] for r in ref.routing]
    h = 1e-6
    for name in names:
        flat = w64[name].reshape(-1)
        for j in rng.choice(flat.size, 2, replace=False):
            vals = []
            for sign in (1, -1):
                w = dict(w64)
                w[name] = w64[name].copy()
                w[name].reshape(-1)[j] += sign * h
                r2 = DeepseekTrainRef(config, w)
                with torch.no_grad():
                    vals.append(float(r2.forward(inputs, targets, MTP_LAMBDA,
                                                 BALANCE_ALPHA)["loss"]))
                assert all(torch.equal(a["ids"], b) for a, b in zip(r2.routing, ids0))
            fd = (vals[0] - vals[1]) / (2 * h)
            g = float(grads[name].reshape(-1)[j])
            if abs(fd - g) > 1e-6 * max(1.0, abs(g)):
                raise AssertionError(f"d loss / d {name}[{j}]: autograd {g!r}, FD {fd!r}")


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def write(out_dir, config, weights, inputs, targets, ref, out, seed):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    shapes = param_shapes(config)
    safetensors_io.write_safetensors(
        os.path.join(out_dir, "model.safetensors"),
        [(n, "F32", weights[n].reshape(shapes[n])) for n in shapes], {"format": "pt"})
    grads = ref.grads()
    batch = [("inputs", "I32", inputs), ("targets", "I32", targets)]
    batch += [("grad." + n, "F32", grads[n].astype(np.float32)) for n in grads]
    safetensors_io.write_safetensors(os.path.join(out_dir, "batch.safetensors"), batch)
    counts = [r["counts"].tolist() for r in ref.routing]
    expected = {
        "loss": float(out["loss"]), "main": float(out["main"]), "mtp": float(out["mtp"]),
        "balance": float(out["balance"]), "mtp_lambda": MTP_LAMBDA,
        "balance_alpha": BALANCE_ALPHA, "tokens": out["tokens"],
        "mtp_tokens": int((torch.as_tensor(targets)[:, 1:] != IGNORE).sum()),
        "expert_counts": counts,
        "moe_layers": [r["layer"] for r in ref.routing],
        "routed_experts": [r["ids"].tolist() for r in ref.routing],
        "min_margins": min_margins(ref.routing), "seed": seed,
    }
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        # one line per field
        f.write("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}"
                                    for k, v in expected.items()) + "\n}\n")
    return expected


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "train_model"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # fixed summation order: byte-identical output
    config = dict(CONFIG)
    for seed in range(FIRST_SEED, FIRST_SEED + 200):
        rng = np.random.default_rng(seed)
        weights = draw_weights(config, rng)
        inputs, targets = draw_batch(config, rng)
        ref, out = run(config, weights, inputs, targets)
        if acceptable(ref):
            break
        print(f"seed {seed}: routing margins {min_margins(ref.routing)} or biases inert, next")
    else:
        raise SystemExit("no seed gives robust routing")
    check_against_inference(config, weights, inputs, ref, out)
    check_losses(config, inputs, targets, ref, out)
    check_finite_differences(config, weights, inputs, targets, ref, np.random.default_rng(seed))
    expected = write(args.out, config, weights, inputs, targets, ref, out, seed)
    print(json.dumps({k: expected[k] for k in ("loss", "main", "mtp", "balance", "tokens",
                                               "expert_counts", "min_margins", "seed")}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
