"""Independent float64 PyTorch (autograd) reference of the DeepSeek-V3 TRAINING forward: the main
model, the depth-1 multi-token-prediction (MTP) module and the sequence-wise balance loss, batched
over B sequences of T tokens. Used by scripts/gen_train_fixture.py to write
tests/fixtures/train_model/; no code is shared with whale (src/train/model_train.h states the same
contract on the C++ side).

Runs with /usr/bin/python3 (torch 1.13 CPU, numpy). Usage:

    from deepseek_train_ref import DeepseekTrainRef
    ref = DeepseekTrainRef(config, weights)      # weights: dict name -> array (f32 values)
    out = ref.forward(inputs, targets, mtp_lambda=0.3, balance_alpha=0.01)
    out["loss"].backward();  ref.grads()         # dict name -> d loss / d param

The configuration helpers (YaRN frequencies, softmax scale, RMSNorm) come from deepseek_ref.py;
the layers are written here again in batched form (RoPE as real rotations of the checkpoint's
interleaved pairs, vectorised routing, dense per-expert evaluation) so that comparing the main
model with deepseek_ref.DeepseekRef (per-sequence, gathered experts) is a real cross-check.

Losses (must match the C++ model exactly):
  main    = mean over targets != -1 of CE(lm_head(norm(h_L)), target).
  MTP     : position i embeds inputs[i+1] (inputs[T-1] at i = T-1), e = enorm(embed(.)),
            m = eh_proj([e ; hnorm(h_L)]) (embedding first), one decoder block (checkpoint layer
            index L, positions 0..T-1, causal), logits = lm_head(shared_head.norm(m)); position i
            predicts targets[i+1], nothing at T-1. mtp = mean CE over the counted MTP targets.
  balance = sum over MoE layers (MTP block included) of alpha * mean_b sum_e f_e P_e with
            f_e = E / (K T) * (tokens of sequence b that selected e), a constant, and
            P_e = mean_t s_e,t / sum_j s_j,t, s = sigmoid(router logits) (unbiased).
  loss    = main + mtp_lambda * mtp + balance.
Routing (noaux_tc): choice = s + e_score_correction_bias; group score = sum of the top-2 choices
of the group; keep topk_group groups; top-K choices among their experts; gate weights = s of the
picked (unbiased), / (sum + 1e-20) if norm_topk_prob and K > 1, * routed_scaling_factor. The
selection is a constant for the gradient (the gate weights are not).
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deepseek_ref import (is_moe_layer, rms_norm, rope_inv_freq_and_mscale,  # noqa: E402
                          softmax_scale)

IGNORE = -1


def is_buffer(name):
    """Saved but not trained by gradient."""
    return name.endswith("e_score_correction_bias")


def mtp_copy_names(config):
    """The checkpoint copies of the shared embedding and head inside the MTP layer."""
    p = f"model.layers.{config['num_hidden_layers']}."
    return {p + "embed_tokens.weight": "model.embed_tokens.weight",
            p + "shared_head.head.weight": "lm_head.weight"}


def param_shapes(config):
    """Every checkpoint tensor (trainable, buffers and the MTP copies) -> shape, in the C++
    registration order (embedding, layers, norm, head, MTP), buffers and copies last."""
    c = config
    C, V, L = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    H, nope, rope, vd = (c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"],
                         c["v_head_dim"])
    r, E = c["kv_lora_rank"], c["n_routed_experts"]
    F, I = c["moe_intermediate_size"], c["intermediate_size"]
    Fs = F * (c.get("n_shared_experts") or 0)
    shapes, buffers = {}, {}

    def layer(i):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = [C]
        a = p + "self_attn."
        if c.get("q_lora_rank") is None:
            shapes[a + "q_proj.weight"] = [H * (nope + rope), C]
        else:
            q = c["q_lora_rank"]
            shapes[a + "q_a_proj.weight"] = [q, C]
            shapes[a + "q_a_layernorm.weight"] = [q]
            shapes[a + "q_b_proj.weight"] = [H * (nope + rope), q]
        shapes[a + "kv_a_proj_with_mqa.weight"] = [r + rope, C]
        shapes[a + "kv_a_layernorm.weight"] = [r]
        shapes[a + "kv_b_proj.weight"] = [H * (nope + vd), r]
        shapes[a + "o_proj.weight"] = [C, H * vd]
        shapes[p + "post_attention_layernorm.weight"] = [C]
        m = p + "mlp."
        if not is_moe_layer(c, i):
            shapes.update({m + "gate_proj.weight": [I, C], m + "up_proj.weight": [I, C],
                           m + "down_proj.weight": [C, I]})
            return
        shapes[m + "gate.weight"] = [E, C]
        buffers[m + "gate.e_score_correction_bias"] = [E]
        for e in range(E):
            x = f"{m}experts.{e}."
            shapes.update({x + "gate_proj.weight": [F, C], x + "up_proj.weight": [F, C],
                           x + "down_proj.weight": [C, F]})
        if Fs:
            x = m + "shared_experts."
            shapes.update({x + "gate_proj.weight": [Fs, C], x + "up_proj.weight": [Fs, C],
                           x + "down_proj.weight": [C, Fs]})

    shapes["model.embed_tokens.weight"] = [V, C]
    for i in range(L):
        layer(i)
    shapes["model.norm.weight"] = [C]
    shapes["lm_head.weight"] = [V, C]
    if c.get("num_nextn_predict_layers", 0):
        p = f"model.layers.{L}."
        shapes[p + "enorm.weight"] = [C]
        shapes[p + "hnorm.weight"] = [C]
        shapes[p + "eh_proj.weight"] = [C, 2 * C]
        layer(L)
        shapes[p + "shared_head.norm.weight"] = [C]
        for copy, main in mtp_copy_names(c).items():
            buffers[copy] = shapes[main]
    shapes.update(buffers)
    return shapes


def cross_entropy(logits, targets):
    """Mean CE over targets != IGNORE; logits [..., V], targets [...] long. -> (loss, count)."""
    logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    keep = targets != IGNORE
    lse = torch.logsumexp(logits[keep], dim=-1)
    picked = logits[keep].gather(1, targets[keep, None])[:, 0]
    n = int(keep.sum())
    return (lse - picked).sum() / n, n


class DeepseekTrainRef:
    def __init__(self, config, weights):
        self.c = config
        if config.get("num_nextn_predict_layers", 0) not in (0, 1):
            raise ValueError("num_nextn_predict_layers must be 0 or 1")
        if config.get("scoring_func") != "sigmoid" or config.get("topk_method") != "noaux_tc":
            raise ValueError("the training reference covers V3 routing (sigmoid, noaux_tc) only")
        copies = mtp_copy_names(config)
        self.p = {}  # trainable: float64 leaves with requires_grad
        self.b = {}  # buffers (routing biases)
        for name, shape in param_shapes(config).items():
            if name in copies:
                continue
            if name not in weights:
                raise KeyError(f"missing tensor {name}")
            t = torch.as_tensor(np.asarray(weights[name], dtype=np.float64)).reshape(shape)
            if is_buffer(name):
                self.b[name] = t
            else:
                self.p[name] = t.clone().requires_grad_(True)
        self.eps = config.get("rms_norm_eps", 1e-6)
        inv_freq, self.rope_ratio = rope_inv_freq_and_mscale(config)
        self.inv_freq = inv_freq.to(torch.float64)
        self.routing = []  # per MoE layer of the last forward: dict (see moe)

    def W(self, name):
        return self.p[name]

    def lin(self, x, name):
        return x @ self.p[name].t()

    def swiglu(self, x, pre):
        g, u = self.lin(x, pre + "gate_proj.weight"), self.lin(x, pre + "up_proj.weight")
        return self.lin(torch.nn.functional.silu(g) * u, pre + "down_proj.weight")

    # -- attention ---------------------------------------------------------------------------------

    def rope(self, x):
        """x [B, T, H, d] in the checkpoint's interleaved-pair layout: pair j = (x[2j], x[2j+1])
        is rotated by angle t * inv_freq[j] (real form of the complex product), then scaled by the
        YaRN cos/sin factor. The layout is kept (q.k does not depend on the order)."""
        B, T, H, d = x.shape
        ang = torch.arange(T, dtype=torch.float64)[:, None] * self.inv_freq[None, :]  # [T, d/2]
        cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        y0, y1 = x0 * cos - x1 * sin, x0 * sin + x1 * cos
        return torch.stack((y0, y1), dim=-1).reshape(B, T, H, d) * self.rope_ratio

    def mla(self, x, a):
        c = self.c
        B, T, _ = x.shape
        H, nope, rope, vd, r = (c["num_attention_heads"], c["qk_nope_head_dim"],
                                c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"])
        if c.get("q_lora_rank") is None:
            q = self.lin(x, a + "q_proj.weight")
        else:
            cq = rms_norm(self.lin(x, a + "q_a_proj.weight"), self.W(a + "q_a_layernorm.weight"),
                          1e-6)
            q = self.lin(cq, a + "q_b_proj.weight")
        q = q.reshape(B, T, H, nope + rope)
        kv_a = self.lin(x, a + "kv_a_proj_with_mqa.weight")
        c_kv = rms_norm(kv_a[..., :r], self.W(a + "kv_a_layernorm.weight"), 1e-6)
        k_pe = self.rope(kv_a[..., None, r:])  # one rope key shared by the heads
        kv = self.lin(c_kv, a + "kv_b_proj.weight").reshape(B, T, H, nope + vd)
        scores = (torch.einsum("bshd,bthd->bhst", q[..., :nope], kv[..., :nope]) +
                  torch.einsum("bshd,btd->bhst", self.rope(q[..., nope:]), k_pe[:, :, 0]))
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        probs = (scores * softmax_scale(c)).masked_fill(future, float("-inf")).softmax(dim=-1)
        out = torch.einsum("bhst,bthd->bshd", probs, kv[..., nope:]).reshape(B, T, H * vd)
        return self.lin(out, a + "o_proj.weight")

    # -- DeepSeekMoE -------------------------------------------------------------------------------

    def select(self, s, bias):
        """noaux_tc selection on detached scores s [N, E] -> (ids [N, K] in descending choice
        order, margins dict). Margins: expert = K-th picked minus best unpicked candidate of the
        kept groups; group = topk_group-th kept minus best dropped group score; pos = K-th picked
        choice (> 0 means HF's 0.0 fill of dropped groups selects the same experts as -inf)."""
        c = self.c
        N, E = s.shape
        K, G, KG = c["num_experts_per_tok"], c["n_group"], c["topk_group"]
        choice = s + bias
        gscore = choice.reshape(N, G, E // G).topk(min(2, E // G), dim=-1).values.sum(-1)
        gs = gscore.sort(dim=-1, descending=True)
        kept = torch.zeros(N, G, dtype=torch.bool)
        kept.scatter_(1, gs.indices[:, :KG], True)
        masked = choice.masked_fill(~kept.repeat_interleave(E // G, dim=1), float("-inf"))
        top = masked.sort(dim=-1, descending=True)
        inf = torch.full((N,), float("inf"), dtype=s.dtype)
        cand = KG * (E // G)
        margins = {
            "expert": top.values[:, K - 1] - top.values[:, K] if K < cand else inf,
            "group": gs.values[:, KG - 1] - gs.values[:, KG] if KG < G else inf,
            "pos": top.values[:, K - 1],
        }
        return top.indices[:, :K], margins

    def moe(self, x, m, bias):
        """x [B, T, C] -> (output, balance term without alpha, routing record)."""
        c = self.c
        B, T, C = x.shape
        E, K = c["n_routed_experts"], c["num_experts_per_tok"]
        u = x.reshape(B * T, C)
        s = self.lin(u, m + "gate.weight").sigmoid()  # [N, E]
        ids, margins = self.select(s.detach(), bias)
        g = s.gather(1, ids)
        if K > 1 and c.get("norm_topk_prob", False):
            g = g / (g.sum(-1, keepdim=True) + 1e-20)
        g = g * c.get("routed_scaling_factor", 1.0)
        # weight of expert e for each token (0 where not selected); experts run densely
        onehot = torch.nn.functional.one_hot(ids, E).to(s.dtype)  # [N, K, E]
        w = (g[..., None] * onehot).sum(1)  # [N, E]
        y = sum(w[:, e, None] * self.swiglu(u, f"{m}experts.{e}.") for e in range(E))
        if c.get("n_shared_experts"):
            y = y + self.swiglu(u, m + "shared_experts.")
        # sequence-wise balance: f constant, P from the normalised unbiased scores
        picked = onehot.sum(1).reshape(B, T, E)
        f = picked.sum(1) * (E / (K * T))  # [B, E]
        P = (s / s.sum(-1, keepdim=True)).reshape(B, T, E).mean(1)  # [B, E]
        balance = (f * P).sum(-1).mean()
        record = {"ids": ids, "counts": picked.sum((0, 1)).long(), "margins": margins,
                  "scores": s.detach(),
                  "unbiased_ids": s.detach().topk(K, dim=-1).indices,
                  "unlimited_ids": (s.detach() + bias).topk(K, dim=-1).indices}
        return y.reshape(B, T, C), balance, record

    # -- layers and the model ----------------------------------------------------------------------

    def block(self, x, i):
        """Decoder layer i (the MTP block is i = num_hidden_layers) -> (output, balance)."""
        p = f"model.layers.{i}."
        x = x + self.mla(rms_norm(x, self.W(p + "input_layernorm.weight"), self.eps),
                         p + "self_attn.")
        h = rms_norm(x, self.W(p + "post_attention_layernorm.weight"), self.eps)
        if not is_moe_layer(self.c, i):
            return x + self.swiglu(h, p + "mlp."), 0.0
        y, balance, record = self.moe(h, p + "mlp.", self.b[p + "mlp.gate.e_score_correction_bias"])
        record["layer"] = i
        self.routing.append(record)
        return x + y, balance

    def trunk(self, inputs):
        """inputs [B, T] long -> (h_L [B, T, C] before the final norm, balance sum)."""
        x = self.W("model.embed_tokens.weight")[inputs]
        balance = 0.0
        for i in range(self.c["num_hidden_layers"]):
            x, b = self.block(x, i)
            balance = balance + b
        return x, balance

    def head(self, x, norm_name):
        return rms_norm(x, self.W(norm_name), self.eps) @ self.W("lm_head.weight").t()

    def forward_logits(self, inputs):
        self.routing = []
        return self.head(self.trunk(torch.as_tensor(inputs, dtype=torch.long))[0],
                         "model.norm.weight")

    def mtp(self, inputs, targets, hL):
        """-> (mtp logits [B, T, V], MTP targets [B, T], block input m [B, T, C], balance)."""
        L = self.c["num_hidden_layers"]
        p = f"model.layers.{L}."
        nxt = torch.cat([inputs[:, 1:], inputs[:, -1:]], dim=1)  # t_{i+1}; inputs[T-1] at T-1
        e = rms_norm(self.W("model.embed_tokens.weight")[nxt], self.W(p + "enorm.weight"), self.eps)
        h = rms_norm(hL, self.W(p + "hnorm.weight"), self.eps)
        m = self.lin(torch.cat([e, h], dim=-1), p + "eh_proj.weight")  # embedding first
        out, balance = self.block(m, L)
        tgt = torch.cat([targets[:, 1:], torch.full_like(targets[:, :1], IGNORE)], dim=1)
        return self.head(out, p + "shared_head.norm.weight"), tgt, m, balance

    def forward(self, inputs, targets, mtp_lambda, balance_alpha):
        """inputs, targets [B, T] ints (targets may hold -1). -> dict of float64 tensors "loss",
        "main", "mtp", "balance", and "tokens" (int), "logits", "mtp_logits", "mtp_input"."""
        inputs = torch.as_tensor(np.asarray(inputs), dtype=torch.long)
        targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        self.routing = []
        hL, balance = self.trunk(inputs)
        logits = self.head(hL, "model.norm.weight")
        main, tokens = cross_entropy(logits, targets)
        out = {"main": main, "tokens": tokens, "logits": logits}
        mtp = torch.zeros((), dtype=torch.float64)
        if self.c.get("num_nextn_predict_layers", 0) and mtp_lambda > 0:
            mtp_logits, mtp_targets, m, b = self.mtp(inputs, targets, hL)
            mtp, _ = cross_entropy(mtp_logits, mtp_targets)
            balance = balance + b
            out.update(mtp_logits=mtp_logits, mtp_input=m)
        balance = balance_alpha * balance
        if not torch.is_tensor(balance):
            balance = torch.tensor(float(balance), dtype=torch.float64)
        out.update(mtp=mtp, balance=balance, loss=main + mtp_lambda * mtp + balance)
        return out

    def grads(self):
        """name -> gradient (float64 numpy) of every trainable tensor after backward()."""
        return {n: (t.grad if t.grad is not None else torch.zeros_like(t)).detach().numpy()
                for n, t in self.p.items()}
