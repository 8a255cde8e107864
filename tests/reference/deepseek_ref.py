"""Independent float64 PyTorch reference of DeepseekV2ForCausalLM / DeepseekV3ForCausalLM
(forward only).

Written from the Hugging Face `modeling_deepseek.py` files of deepseek-ai/DeepSeek-V2-Lite and
deepseek-ai/DeepSeek-V3 and the official DeepSeek-V3 `inference/model.py`; no code is shared with
whale. Runs with /usr/bin/python3 (torch 1.13 CPU, numpy). Usage:

    from deepseek_ref import DeepseekRef
    ref = DeepseekRef("tests/fixtures/models/v3")
    logits = ref.forward_logits([1, 2, 3])     # torch.float64 [3, vocab], every position
    ids = ref.greedy([1, 2, 3], 8)             # 8 greedy continuation ids (full recompute per step)

Semantics (deliberate choices, each checked against the sources named above):
  * RMSNorm(x) = w * x / sqrt(mean(x^2) + eps). The hidden-size norms (input_layernorm,
    post_attention_layernorm, model.norm) use config.rms_norm_eps; q_a_layernorm and kv_a_layernorm
    are constructed in HF without an eps argument, i.e. always 1e-6 (the official code also uses
    1e-6 everywhere). All released configs have rms_norm_eps = 1e-6, so this only matters for
    unusual configs.
  * Decoder layer: h = x + attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h)).
    Then model.norm and lm_head (or the embedding matrix if tie_word_embeddings).
  * MLA: q = q_proj(x) if q_lora_rank is null else q_b_proj(q_a_layernorm(q_a_proj(x))), split per
    head into q_nope | q_pe. kv_a_proj_with_mqa(x) = compressed_kv (kv_lora_rank) | k_pe (one head
    shared by all heads). kv_b_proj(kv_a_layernorm(compressed_kv)) per head = k_nope | v.
    Causal softmax attention over [q_nope, q_pe] . [k_nope, k_pe], then o_proj.
  * RoPE as HF: the rope part of q and k is de-interleaved (view(d/2, 2).transpose: pairs
    (x0,x1),(x2,x3).. -> x0,x2,..,x1,x3,..) and rotated with rotate_half, cos/sin of t * inv_freq
    with inv_freq = 1 / theta^(arange(0, d, 2) / d). (Equivalent to the official complex form on
    interleaved pairs; the output order differs but q.k is the same; see `_rope_complex`.)
    With rope_scaling {"type": "yarn"} (applied whenever present, as HF does, whatever the
    sequence length; the official code only applies it when max_seq_len > original length):
    inv_freq = freq_inter * (1 - mask) + freq_extra * mask, freq_extra = plain inv_freq,
    freq_inter = inv_freq / factor, mask = 1 - linear_ramp(low, high, d/2) with (low, high) =
    yarn_find_correction_range(beta_fast, beta_slow, d, theta, original_max_position_embeddings);
    cos and sin are multiplied by yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor,
    mscale_all_dim) (HF defaults: mscale 1, mscale_all_dim 0, beta_fast 32, beta_slow 1,
    original_max_position_embeddings 4096).
    HF computes inv_freq, positions and cos/sin in float32; we use float64 (differences ~1e-7).
  * Softmax scale = (qk_nope_head_dim + qk_rope_head_dim)^-0.5, times mscale^2 with
    mscale = yarn_get_mscale(factor, mscale_all_dim) when rope_scaling has a nonzero mscale_all_dim.
  * MoE in layer i iff n_routed_experts and i >= first_k_dense_replace and i % moe_layer_freq == 0,
    else a dense SwiGLU MLP of intermediate_size. MoE output = sum_k w_k expert_k(x) + shared(x);
    the shared experts are ONE SwiGLU MLP of width moe_intermediate_size * n_shared_experts.
    SwiGLU(x) = down(silu(gate(x)) * up(x)).
  * Gate: logits = x @ gate.weight^T (float64 here, HF uses f32); scores = softmax or sigmoid
    (scoring_func).
      greedy:               top-k of scores.
      group_limited_greedy: group score = max score in group; keep topk_group groups; top-k among
                            experts of kept groups (V2).
      noaux_tc:             choice = scores + e_score_correction_bias (selection only); group
                            score = sum of the top-2 choice scores in the group; keep topk_group
                            groups; experts of other groups get -inf (official inference code; HF
                            fills 0.0, which only differs when biased scores are negative); top-k
                            on choice; gate values = unbiased scores of the chosen experts.
    Weights: DeepseekV3 (HF V3 MoEGate): if top_k > 1 and norm_topk_prob: w /= sum(w) + 1e-20;
    then ALWAYS w *= routed_scaling_factor. DeepseekV2 (HF V2 MoEGate): if top_k > 1 and
    norm_topk_prob: w /= sum(w) + 1e-20, ELSE w *= routed_scaling_factor.
  * MTP layers (model.layers.{num_hidden_layers + k}.*) are ignored by the forward.
"""

import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

# ----------------------------------------------------------------------------------------------
# config helpers
# ----------------------------------------------------------------------------------------------


def is_v3(config):
    arch = (config.get("architectures") or [""])[0]
    return config.get("model_type") == "deepseek_v3" or arch.startswith("DeepseekV3")


def is_moe_layer(config, i):
    return (config.get("n_routed_experts") is not None and i >= config["first_k_dense_replace"]
            and i % config["moe_layer_freq"] == 0)


def yarn_get_mscale(scale=1.0, mscale=1.0):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_find_correction_dim(num_rotations, dim, base, max_pos):
    # the rotary dimension whose wavelength completes `num_rotations` turns over max_pos positions
    return (dim * math.log(max_pos / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def yarn_find_correction_range(low_rot, high_rot, dim, base, max_pos):
    low = math.floor(yarn_find_correction_dim(low_rot, dim, base, max_pos))
    high = math.ceil(yarn_find_correction_dim(high_rot, dim, base, max_pos))
    return max(low, 0), min(high, dim - 1)


def yarn_linear_ramp(low, high, n):
    if low == high:
        high += 0.001  # as HF: avoid division by zero
    return ((torch.arange(n, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)


def rope_inv_freq_and_mscale(config):
    """-> (inv_freq float64 [d/2], factor applied to cos and sin)."""
    d = config["qk_rope_head_dim"]
    base = float(config.get("rope_theta", 10000.0))
    freq_extra = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    rs = config.get("rope_scaling")
    if not rs:
        return freq_extra, 1.0
    kind = rs.get("type", rs.get("rope_type"))
    if kind != "yarn":
        raise NotImplementedError(f"rope_scaling type {kind}")
    factor = float(rs["factor"])
    freq_inter = freq_extra / factor
    low, high = yarn_find_correction_range(rs.get("beta_fast", 32), rs.get("beta_slow", 1), d, base,
                                           rs.get("original_max_position_embeddings", 4096))
    # mask = 1 keeps the original (high) frequency, mask = 0 uses the interpolated one
    mask = 1.0 - yarn_linear_ramp(low, high, d // 2)
    inv_freq = freq_inter * (1 - mask) + freq_extra * mask
    ratio = yarn_get_mscale(factor, rs.get("mscale", 1)) / yarn_get_mscale(
        factor, rs.get("mscale_all_dim", 0))
    return inv_freq, ratio


def softmax_scale(config):
    scale = (config["qk_nope_head_dim"] + config["qk_rope_head_dim"]) ** -0.5
    rs = config.get("rope_scaling")
    if rs and rs.get("mscale_all_dim", 0):
        m = yarn_get_mscale(float(rs["factor"]), rs["mscale_all_dim"])
        scale = scale * m * m
    return scale


def rms_norm(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------


class DeepseekRef:
    """Float64 reference forward. `path` is a HF model directory (config.json + safetensors).
    Alternatively pass `config` (dict) and `weights` (dict name -> array/tensor)."""

    def __init__(self, path=None, config=None, weights=None, dtype=torch.float64):
        if path is not None:
            with open(os.path.join(path, "config.json")) as f:
                config = json.load(f)
            n_main = config["num_hidden_layers"]

            def skip_mtp(name):  # MTP layers are not used by the forward
                parts = name.split(".")
                return len(parts) > 2 and parts[1] == "layers" and int(parts[2]) >= n_main

            np_out = np.float64 if dtype == torch.float64 else np.float32
            weights = safetensors_io.load_checkpoint(path, out=np_out, skip=skip_mtp)
        self.config = config
        self.dtype = dtype
        self.w = {k: torch.as_tensor(np.asarray(v)).to(dtype) for k, v in weights.items()}
        self.v3 = is_v3(config)
        self.eps = config.get("rms_norm_eps", 1e-6)
        self.routing_log = []  # filled by forward when record_routing=True

    # -- building blocks -------------------------------------------------------------------------

    def W(self, name):
        return self.w[name]

    def linear(self, x, name):
        return x @ self.W(name).t()

    def swiglu(self, x, prefix):
        g = self.linear(x, prefix + "gate_proj.weight")
        u = self.linear(x, prefix + "up_proj.weight")
        return self.linear(torch.nn.functional.silu(g) * u, prefix + "down_proj.weight")

    def rope_cos_sin(self, n):
        inv_freq, ratio = rope_inv_freq_and_mscale(self.config)
        t = torch.arange(n, dtype=torch.float64)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * ratio).to(self.dtype), (emb.sin() * ratio).to(self.dtype)

    def rope_hf(self, x, cos, sin):
        """x: [n, heads, d] -> HF RoPE (de-interleave, rotate_half)."""
        n, h, d = x.shape
        x = x.reshape(n, h, d // 2, 2).transpose(-1, -2).reshape(n, h, d)
        return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]

    def rope_complex(self, x):
        """Second path: the official complex form on interleaved pairs (output stays
        interleaved)."""
        n, h, d = x.shape
        inv_freq, ratio = rope_inv_freq_and_mscale(self.config)
        ang = torch.outer(torch.arange(n, dtype=torch.float64), inv_freq)  # [n, d/2]
        rot = torch.polar(torch.full_like(ang, ratio), ang)
        xc = torch.view_as_complex(x.to(torch.float64).reshape(n, h, d // 2, 2).contiguous())
        return torch.view_as_real(xc * rot[:, None, :]).reshape(n, h, d).to(self.dtype)

    # -- attention -------------------------------------------------------------------------------

    def mla_inputs(self, x, p):
        c = self.config
        nh, nope, rope = c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"]
        n = x.shape[0]
        if c.get("q_lora_rank") is None:
            q = self.linear(x, p + "q_proj.weight")
        else:
            qa = rms_norm(self.linear(x, p + "q_a_proj.weight"), self.W(p + "q_a_layernorm.weight"),
                          1e-6)
            q = self.linear(qa, p + "q_b_proj.weight")
        q = q.reshape(n, nh, nope + rope)
        q_nope, q_pe = q[..., :nope], q[..., nope:]
        kv = self.linear(x, p + "kv_a_proj_with_mqa.weight")
        compressed, k_pe = kv[:, :c["kv_lora_rank"]], kv[:, c["kv_lora_rank"]:]
        c_kv = rms_norm(compressed, self.W(p + "kv_a_layernorm.weight"), 1e-6)
        return q_nope, q_pe, c_kv, k_pe.reshape(n, 1, rope)

    def causal_softmax(self, scores):
        n = scores.shape[-1]
        mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
        return scores.masked_fill(mask, float("-inf")).softmax(dim=-1)

    def mla_naive(self, x, p):
        """HF form: expand k_nope / v per head from the latent, concatenate the rope part."""
        c = self.config
        nh, nope, vd = c["num_attention_heads"], c["qk_nope_head_dim"], c["v_head_dim"]
        n = x.shape[0]
        q_nope, q_pe, c_kv, k_pe = self.mla_inputs(x, p)
        kv = self.linear(c_kv, p + "kv_b_proj.weight").reshape(n, nh, nope + vd)
        k_nope, v = kv[..., :nope], kv[..., nope:]
        cos, sin = self.rope_cos_sin(n)
        q_pe, k_pe = self.rope_hf(q_pe, cos, sin), self.rope_hf(k_pe, cos, sin)
        q = torch.cat([q_nope, q_pe], dim=-1)  # [n, h, dq]
        k = torch.cat([k_nope, k_pe.expand(n, nh, -1)], dim=-1)
        scores = torch.einsum("shd,thd->hst", q, k) * softmax_scale(c)
        probs = self.causal_softmax(scores)
        out = torch.einsum("hst,thd->shd", probs, v).reshape(n, nh * vd)
        return self.linear(out, p + "o_proj.weight")

    def mla_absorbed(self, x, p):
        """Second path: attention in the latent space (weight absorption, official 'absorb' mode)
        with the complex RoPE."""
        c = self.config
        nh, nope, vd, r = (c["num_attention_heads"], c["qk_nope_head_dim"], c["v_head_dim"],
                           c["kv_lora_rank"])
        n = x.shape[0]
        q_nope, q_pe, c_kv, k_pe = self.mla_inputs(x, p)
        wkv_b = self.W(p + "kv_b_proj.weight").reshape(nh, nope + vd, r)
        w_uk, w_uv = wkv_b[:, :nope], wkv_b[:, nope:]
        q_lat = torch.einsum("shd,hdc->shc", q_nope, w_uk)  # query mapped into the latent space
        q_pe, k_pe = self.rope_complex(q_pe), self.rope_complex(k_pe)[:, 0]
        scores = (torch.einsum("shc,tc->hst", q_lat, c_kv) +
                  torch.einsum("shr,tr->hst", q_pe, k_pe)) * softmax_scale(c)
        probs = self.causal_softmax(scores)
        o_lat = torch.einsum("hst,tc->shc", probs, c_kv)
        out = torch.einsum("shc,hdc->shd", o_lat, w_uv).reshape(n, nh * vd)
        return self.linear(out, p + "o_proj.weight")

    # -- MoE -------------------------------------------------------------------------------------

    def gate_scores(self, x, p):
        logits = x @ self.W(p + "gate.weight").t()
        func = self.config.get("scoring_func", "softmax")
        if func == "softmax":
            return logits.softmax(dim=-1)
        if func == "sigmoid":
            return logits.sigmoid()
        raise NotImplementedError(func)

    def finish_weights(self, w):
        """Normalisation / scaling of the selected gate values (V2 and V3 rules differ)."""
        c = self.config
        top_k, rsf = c["num_experts_per_tok"], c.get("routed_scaling_factor", 1.0)
        norm = top_k > 1 and c.get("norm_topk_prob", False)
        if norm:
            w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
        # V3 (HF V3 MoEGate): normalise if enabled, then ALWAYS scale.
        # V2 (HF V2 MoEGate): normalise if enabled, ELSE scale.
        if self.v3 or not norm:
            w = w * rsf
        return w

    def route(self, x, p):
        """Vectorised routing -> (indices [n, k], weights [n, k], stats dict)."""
        c = self.config
        n_exp, top_k = c["n_routed_experts"], c["num_experts_per_tok"]
        method = c.get("topk_method", "greedy")
        scores = self.gate_scores(x, p)
        n = scores.shape[0]
        choice = scores
        stats = {"group_margin": float("inf")}
        if method == "noaux_tc":
            choice = scores + self.W(p + "gate.e_score_correction_bias")
        unrestricted = choice.topk(top_k, dim=-1).indices
        if method in ("group_limited_greedy", "noaux_tc"):
            ng, kg = c["n_group"], c["topk_group"]
            grouped = choice.reshape(n, ng, n_exp // ng)
            if method == "group_limited_greedy":
                gscore = grouped.max(dim=-1).values
            else:
                gscore = grouped.topk(2, dim=-1).values.sum(dim=-1)
            keep = torch.zeros(n, ng, dtype=torch.bool)
            keep.scatter_(1, gscore.topk(kg, dim=-1).indices, True)
            masked = (~keep).unsqueeze(-1).expand(n, ng, n_exp // ng).reshape(n, n_exp)
            choice = choice.masked_fill(masked, float("-inf"))
            if kg < ng:
                gs = gscore.sort(dim=-1, descending=True).values
                stats["group_margin"] = float((gs[:, kg - 1] - gs[:, kg]).min())
        elif method != "greedy":
            raise NotImplementedError(method)
        top = choice.topk(min(top_k + 1, n_exp), dim=-1)
        idx = top.indices[:, :top_k]
        w = self.finish_weights(scores.gather(1, idx))
        # Robustness / non-triviality statistics used by gen_fixtures.py:
        def same(a, b):  # same expert sets per token
            return (a.sort(dim=-1).values == b.sort(dim=-1).values).all(dim=-1)

        stats["idx"] = idx
        stats["group_changed"] = int((~same(idx, unrestricted)).sum())  # group limit mattered
        stats["bias_changed"] = int((~same(idx, scores.topk(top_k, dim=-1).indices)).sum())
        stats["margin"] = float("inf")  # k-th chosen minus best rejected choice score
        if top_k < n_exp:
            gap = top.values[:, top_k - 1] - top.values[:, top_k]
            gap = gap[torch.isfinite(gap)]
            if gap.numel():
                stats["margin"] = float(gap.min())
        return idx, w, stats

    def route_loop(self, x, p):
        """Second path: per-token routing with Python sorting (no torch.topk)."""
        c = self.config
        n_exp, top_k = c["n_routed_experts"], c["num_experts_per_tok"]
        method = c.get("topk_method", "greedy")
        scores = self.gate_scores(x, p).tolist()
        bias = (self.W(p + "gate.e_score_correction_bias").tolist() if method == "noaux_tc"
                else [0.0] * n_exp)
        all_idx, all_w = [], []
        for s in scores:
            choice = [s[e] + bias[e] for e in range(n_exp)]
            allowed = set(range(n_exp))
            if method != "greedy":
                ng, kg = c["n_group"], c["topk_group"]
                per = n_exp // ng
                gs = []
                for g in range(ng):
                    members = sorted(choice[g * per:(g + 1) * per], reverse=True)
                    gs.append(members[0] if method == "group_limited_greedy" else sum(members[:2]))
                kept = sorted(range(ng), key=lambda g: -gs[g])[:kg]
                allowed = {e for g in kept for e in range(g * per, (g + 1) * per)}
            chosen = sorted(allowed, key=lambda e: -choice[e])[:top_k]
            all_idx.append(chosen)
            all_w.append([s[e] for e in chosen])
        idx = torch.tensor(all_idx, dtype=torch.long)
        w = self.finish_weights(torch.tensor(all_w, dtype=self.dtype))
        return idx, w

    def moe(self, x, p, loop=False):
        c = self.config
        if loop:
            idx, w = self.route_loop(x, p)
            stats = None
        else:
            idx, w, stats = self.route(x, p)
        y = torch.zeros_like(x)
        if loop:  # token by token
            for t in range(x.shape[0]):
                for k in range(idx.shape[1]):
                    e = int(idx[t, k])
                    y[t] += w[t, k] * self.swiglu(x[t:t + 1], f"{p}experts.{e}.")[0]
        else:  # expert by expert over the tokens routed to it
            for e in idx.unique().tolist():
                tok, slot = (idx == e).nonzero(as_tuple=True)
                y[tok] += w[tok, slot, None] * self.swiglu(x[tok], f"{p}experts.{e}.")
        if c.get("n_shared_experts"):
            y = y + self.swiglu(x, p + "shared_experts.")
        return y, stats

    # -- full model ------------------------------------------------------------------------------

    def hidden_states(self, tokens, alt=False, record_routing=False):
        c = self.config
        tokens = torch.as_tensor(list(tokens), dtype=torch.long)
        x = self.W("model.embed_tokens.weight")[tokens]
        if record_routing:
            self.routing_log = []
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h_in = rms_norm(x, self.W(p + "input_layernorm.weight"), self.eps)
            attn = self.mla_absorbed if alt else self.mla_naive
            x = x + attn(h_in, p + "self_attn.")
            h = rms_norm(x, self.W(p + "post_attention_layernorm.weight"), self.eps)
            if is_moe_layer(c, i):
                y, stats = self.moe(h, p + "mlp.", loop=alt)
                if record_routing and stats is not None:
                    stats["layer"] = i
                    self.routing_log.append(stats)
            else:
                y = self.swiglu(h, p + "mlp.")
            x = x + y
        return rms_norm(x, self.W("model.norm.weight"), self.eps)

    def lm_head(self):
        if self.config.get("tie_word_embeddings", False) and "lm_head.weight" not in self.w:
            return self.W("model.embed_tokens.weight")
        return self.W("lm_head.weight")

    def forward_logits(self, tokens, alt=False, record_routing=False):
        """-> [len(tokens), vocab] logits at every position (no BOS added). alt=True uses the second
        computation path (absorbed MLA, complex RoPE, per-token Python routing)."""
        return self.hidden_states(tokens, alt, record_routing) @ self.lm_head().t()

    def greedy(self, tokens, n):
        """n greedy continuation ids, recomputing the full sequence each step."""
        seq, out = list(tokens), []
        for _ in range(n):
            nxt = int(self.forward_logits(seq)[-1].argmax())
            seq.append(nxt)
            out.append(nxt)
        return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Run the DeepSeek float64 reference on a model dir")
    ap.add_argument("model_dir")
    ap.add_argument("tokens", nargs="*", type=int, default=[1, 2, 3])
    ap.add_argument("--greedy", type=int, default=8)
    args = ap.parse_args()
    ref = DeepseekRef(args.model_dir)
    logits = ref.forward_logits(args.tokens)
    print("last-position top-5:", logits[-1].topk(5).indices.tolist())
    print("greedy:", ref.greedy(args.tokens, args.greedy))
