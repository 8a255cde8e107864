#!/usr/bin/python3
"""PyTorch baseline for whale's training benchmark: the training step of the DeepSeek-V3
architecture described by a Hugging Face config.json (MLA, dense + DeepSeekMoE layers with
noaux_tc routing, depth-1 MTP, sequence-wise balance loss, auxiliary-loss-free bias update),
AdamW and gradient clipping, in float32 on CPU. Prints one JSON line:

    {"impl": "pytorch", "tok_s": ..., "step_ms": ..., "params": ..., ...}

    /usr/bin/python3 bench/train_bench_torch.py --config bench/configs/train-10m.json \\
        --batch 8 --seq 256 --steps 5 [--threads 2]
    /usr/bin/python3 bench/train_bench_torch.py --check tests/fixtures/train_model

Vectorised like a production PyTorch implementation: routing with topk/gather on the whole batch,
tokens dispatched to experts by one sort and index_select, one batched matmul chain per expert,
results combined with index_add_; attention as batched matmuls with a causal mask. Same losses as
tests/reference/deepseek_train_ref.py (main CE + mtp_lambda * MTP CE + alpha * balance);
`--check DIR` verifies that on the fixture written by scripts/gen_train_fixture.py (float64).
Data are uniformly random token ids (the speed does not depend on them). tok_s counts the B*T
input tokens of a step; step_ms is the mean over the timed steps (after --warmup steps), step_ms_min
the fastest one (the machine may be shared).
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = -1


def is_moe_layer(c, i):
    return (c.get("n_routed_experts") is not None and i >= c["first_k_dense_replace"]
            and i % c.get("moe_layer_freq", 1) == 0)


def yarn_mscale(scale, m):
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def rope_tables(c, T, dtype):
    """cos, sin [T, d/2] for the interleaved-pair rotation (YaRN as HF DeepseekV3)."""
    d, base = c["qk_rope_head_dim"], float(c.get("rope_theta", 10000.0))
    inv = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ratio, rs = 1.0, c.get("rope_scaling")
    if rs:
        factor = float(rs["factor"])
        orig = rs.get("original_max_position_embeddings", 4096)

        def dim(rot):
            return d * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

        lo = max(math.floor(dim(rs.get("beta_fast", 32))), 0)
        hi = min(math.ceil(dim(rs.get("beta_slow", 1))), d - 1)
        ramp = ((torch.arange(d // 2, dtype=torch.float64) - lo) / max(hi - lo, 1e-3)).clamp(0, 1)
        inv = inv / factor * ramp + inv * (1 - ramp)
        ratio = yarn_mscale(factor, rs.get("mscale", 1)) / yarn_mscale(
            factor, rs.get("mscale_all_dim", 0))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    return (ang.cos() * ratio).to(dtype), (ang.sin() * ratio).to(dtype)


def softmax_scale(c):
    s = (c["qk_nope_head_dim"] + c["qk_rope_head_dim"]) ** -0.5
    rs = c.get("rope_scaling")
    if rs and rs.get("mscale_all_dim", 0):
        m = yarn_mscale(float(rs["factor"]), rs["mscale_all_dim"])
        s *= m * m
    return s


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


class Model:
    """Parameters in a dict keyed by Hugging Face names, except that the routed experts of a layer
    are stacked: <layer>.mlp.experts.{gate,up,down}_proj [E, out, in]."""

    def __init__(self, c, dtype=torch.float32, std=0.006, seed=0):
        self.c, self.dtype = c, dtype
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.mtp = c.get("num_nextn_predict_layers", 0) == 1
        g = torch.Generator().manual_seed(seed)
        self.p, self.bias = {}, {}
        for name, shape in self.shapes().items():
            if len(shape) == 1:
                t = torch.ones(shape, dtype=dtype)
            else:
                t = torch.randn(shape, generator=g, dtype=torch.float32).to(dtype) * std
            self.p[name] = t.requires_grad_(True)
        self.scale = softmax_scale(c)

    def shapes(self):
        c = self.c
        C, V, L, H = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"], \
            c["num_attention_heads"]
        nope, rope, vd, r = (c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"],
                             c["kv_lora_rank"])
        E, Fm, I = c.get("n_routed_experts"), c["moe_intermediate_size"], c["intermediate_size"]
        Fs = Fm * (c.get("n_shared_experts") or 0)
        s = {"model.embed_tokens.weight": [V, C]}

        def layer(i):
            p = f"model.layers.{i}."
            a = p + "self_attn."
            s[p + "input_layernorm.weight"] = [C]
            if c.get("q_lora_rank") is None:
                s[a + "q_proj.weight"] = [H * (nope + rope), C]
            else:
                q = c["q_lora_rank"]
                s.update({a + "q_a_proj.weight": [q, C], a + "q_a_layernorm.weight": [q],
                          a + "q_b_proj.weight": [H * (nope + rope), q]})
            s.update({a + "kv_a_proj_with_mqa.weight": [r + rope, C],
                      a + "kv_a_layernorm.weight": [r],
                      a + "kv_b_proj.weight": [H * (nope + vd), r],
                      a + "o_proj.weight": [C, H * vd], p + "post_attention_layernorm.weight": [C]})
            m = p + "mlp."
            if not is_moe_layer(c, i):
                s.update({m + "gate_proj.weight": [I, C], m + "up_proj.weight": [I, C],
                          m + "down_proj.weight": [C, I]})
                return
            self.bias[m] = torch.zeros(E, dtype=self.dtype)
            s.update({m + "gate.weight": [E, C], m + "experts.gate_proj": [E, Fm, C],
                      m + "experts.up_proj": [E, Fm, C], m + "experts.down_proj": [E, C, Fm]})
            if Fs:
                x = m + "shared_experts."
                s.update({x + "gate_proj.weight": [Fs, C], x + "up_proj.weight": [Fs, C],
                          x + "down_proj.weight": [C, Fs]})

        for i in range(L):
            layer(i)
        s["model.norm.weight"] = [C]
        s["lm_head.weight"] = [V, C]
        if self.mtp:
            p = f"model.layers.{L}."
            s.update({p + "enorm.weight": [C], p + "hnorm.weight": [C],
                      p + "eh_proj.weight": [C, 2 * C]})
            layer(L)
            s[p + "shared_head.norm.weight"] = [C]
        return s

    def num_params(self):
        return sum(t.numel() for t in self.p.values())

    def lin(self, x, name):
        return x @ self.p[name].t()

    def swiglu(self, x, pre):
        return self.lin(F.silu(self.lin(x, pre + "gate_proj.weight")) *
                        self.lin(x, pre + "up_proj.weight"), pre + "down_proj.weight")

    # -- MLA ---------------------------------------------------------------------------------------

    def rope(self, x, cos, sin):
        """x [..., T, d] interleaved pairs rotated by cos/sin [T, d/2]."""
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)

    def mla(self, x, a, cos, sin, mask):
        c = self.c
        B, T, _ = x.shape
        H, nope, rope, vd, r = (c["num_attention_heads"], c["qk_nope_head_dim"],
                                c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"])
        if c.get("q_lora_rank") is None:
            q = self.lin(x, a + "q_proj.weight")
        else:
            q = self.lin(rms(self.lin(x, a + "q_a_proj.weight"),
                             self.p[a + "q_a_layernorm.weight"], 1e-6), a + "q_b_proj.weight")
        q = q.view(B, T, H, nope + rope).transpose(1, 2)  # [B, H, T, dq]
        kv_a = self.lin(x, a + "kv_a_proj_with_mqa.weight")
        k_pe = self.rope(kv_a[..., r:], cos, sin)[:, None]  # [B, 1, T, rope], shared by heads
        kv = self.lin(rms(kv_a[..., :r], self.p[a + "kv_a_layernorm.weight"], 1e-6),
                      a + "kv_b_proj.weight").view(B, T, H, nope + vd).transpose(1, 2)
        q = torch.cat([q[..., :nope], self.rope(q[..., nope:], cos, sin)], dim=-1)
        k = torch.cat([kv[..., :nope], k_pe.expand(B, H, T, rope)], dim=-1)
        att = (q @ k.transpose(-1, -2)) * self.scale
        att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
        out = (att @ kv[..., nope:]).transpose(1, 2).reshape(B, T, H * vd)
        return self.lin(out, a + "o_proj.weight")

    # -- DeepSeekMoE -------------------------------------------------------------------------------

    @torch.no_grad()
    def select(self, s, bias):
        """noaux_tc: top-K of (s + bias) among the experts of the topk_group best groups."""
        c = self.c
        N, E = s.shape
        K, G, KG = c["num_experts_per_tok"], c.get("n_group") or 1, c.get("topk_group") or 1
        choice = s + bias
        if G > 1:
            gscore = choice.view(N, G, E // G).topk(min(2, E // G), dim=-1).values.sum(-1)
            drop = torch.ones(N, G, dtype=torch.bool)
            drop.scatter_(1, gscore.topk(KG, dim=-1).indices, False)
            choice = choice.masked_fill(drop.repeat_interleave(E // G, dim=1), float("-inf"))
        return choice.topk(K, dim=-1).indices

    def moe(self, x, m, stats):
        """x [B, T, C] -> (output, balance term without alpha); adds expert counts to stats."""
        c = self.c
        B, T, C = x.shape
        E, K = c["n_routed_experts"], c["num_experts_per_tok"]
        u = x.reshape(B * T, C)
        s = self.lin(u, m + "gate.weight").sigmoid()
        ids = self.select(s.detach(), self.bias[m])  # [N, K]
        g = s.gather(1, ids)
        if K > 1 and c.get("norm_topk_prob", False):
            g = g / (g.sum(-1, keepdim=True) + 1e-20)
        g = g * c.get("routed_scaling_factor", 1.0)
        # dispatch: sort the N*K (token, slot) pairs by expert, run each expert on its slice
        flat = ids.reshape(-1)
        order = flat.argsort()
        counts = torch.bincount(flat, minlength=E)
        tok = order // K
        xs = u.index_select(0, tok)
        # unbind once: its backward stacks the per-expert gradients in one operation (indexing
        # the stacked tensor per expert would materialise a full-size gradient per expert)
        w1, w3, w2 = (self.p[m + "experts." + k].unbind(0)
                      for k in ("gate_proj", "up_proj", "down_proj"))
        outs, start = [], 0
        for e, n in enumerate(counts.tolist()):
            if n:
                xe = xs[start:start + n]
                outs.append((F.silu(xe @ w1[e].t()) * (xe @ w3[e].t())) @ w2[e].t())
                start += n
        ys = torch.cat(outs) * g.reshape(-1)[order, None]
        y = torch.zeros_like(u).index_add(0, tok, ys)
        if c.get("n_shared_experts"):
            y = y + self.swiglu(u, m + "shared_experts.")
        # sequence-wise balance: f (constant) from the selections, P from normalised scores
        per_seq = F.one_hot(ids, E).sum(1).view(B, T, E).sum(1).to(s.dtype)
        f = per_seq * (E / (K * T))
        P = (s / s.sum(-1, keepdim=True)).view(B, T, E).mean(1)
        stats[m] = stats.get(m, 0) + counts
        return y.view(B, T, C), (f * P).sum(-1).mean()

    # -- model -------------------------------------------------------------------------------------

    def block(self, x, i, cos, sin, mask, stats):
        p = f"model.layers.{i}."
        x = x + self.mla(rms(x, self.p[p + "input_layernorm.weight"], self.eps), p + "self_attn.",
                         cos, sin, mask)
        h = rms(x, self.p[p + "post_attention_layernorm.weight"], self.eps)
        if not is_moe_layer(self.c, i):
            return x + self.swiglu(h, p + "mlp."), 0.0
        y, bal = self.moe(h, p + "mlp.", stats)
        return x + y, bal

    def head_ce(self, x, norm, targets):
        logits = rms(x, self.p[norm], self.eps) @ self.p["lm_head.weight"].t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=IGNORE)

    def loss(self, inputs, targets, mtp_lambda, alpha, stats):
        """-> (total, main, mtp, balance) tensors."""
        B, T = inputs.shape
        L = self.c["num_hidden_layers"]
        cos, sin = rope_tables(self.c, T, self.dtype)
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        emb = self.p["model.embed_tokens.weight"]
        x = emb[inputs]
        bal = 0.0
        for i in range(L):
            x, b = self.block(x, i, cos, sin, mask, stats)
            bal = bal + b
        main = self.head_ce(x, "model.norm.weight", targets)
        mtp = torch.zeros((), dtype=self.dtype)
        if self.mtp and mtp_lambda > 0:
            p = f"model.layers.{L}."
            nxt = torch.cat([inputs[:, 1:], inputs[:, -1:]], dim=1)
            e = rms(emb[nxt], self.p[p + "enorm.weight"], self.eps)
            h = rms(x, self.p[p + "hnorm.weight"], self.eps)
            m, b = self.block(self.lin(torch.cat([e, h], dim=-1), p + "eh_proj.weight"), L, cos,
                              sin, mask, stats)
            bal = bal + b
            tgt = torch.cat([targets[:, 1:], torch.full_like(targets[:, :1], IGNORE)], dim=1)
            mtp = self.head_ce(m, p + "shared_head.norm.weight", tgt)
        bal = alpha * bal
        return main + mtp_lambda * mtp + bal, main, mtp, bal

    @torch.no_grad()
    def update_biases(self, stats, gamma):
        """Auxiliary-loss-free balancing: bias += gamma * sign(mean load - load)."""
        for m, counts in stats.items():
            cf = counts.to(self.dtype)
            self.bias[m] += gamma * torch.sign(cf.mean() - cf)


# ----------------------------------------------------------------------------------------------
# fixture check: same losses and gradients as the float64 reference
# ----------------------------------------------------------------------------------------------


def check(fixture):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                    "reference"))
    import safetensors_io

    with open(os.path.join(fixture, "config.json")) as f:
        c = json.load(f)
    with open(os.path.join(fixture, "expected.json")) as f:
        exp = json.load(f)
    w, _, _ = safetensors_io.read_safetensors(os.path.join(fixture, "model.safetensors"))
    batch, _, _ = safetensors_io.read_safetensors(os.path.join(fixture, "batch.safetensors"))
    model = Model(c, torch.float64)

    def t(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float64))

    for name in model.p:
        if ".experts." in name and not name.endswith(".weight"):
            pre, proj = name.rsplit(".experts.", 1)
            n = c["n_routed_experts"]
            v = torch.stack([t(w[f"{pre}.experts.{e}.{proj}.weight"]) for e in range(n)])
        else:
            v = t(w[name])
        model.p[name] = v.clone().requires_grad_(True)
    for m in model.bias:
        model.bias[m] = t(w[m + "gate.e_score_correction_bias"])
    inputs = torch.as_tensor(np.array(batch["inputs"]), dtype=torch.long)
    targets = torch.as_tensor(np.array(batch["targets"]), dtype=torch.long)
    stats = {}
    total, main, mtp, bal = model.loss(inputs, targets, exp["mtp_lambda"], exp["balance_alpha"],
                                       stats)
    total.backward()
    for key, v in (("loss", total), ("main", main), ("mtp", mtp), ("balance", bal)):
        assert abs(float(v) - exp[key]) < 1e-10 * max(1, abs(exp[key])), (key, float(v), exp[key])
    counts = [stats[m].tolist() for m in sorted(stats, key=lambda s: int(s.split(".")[2]))]
    assert counts == exp["expert_counts"], (counts, exp["expert_counts"])
    worst = 0.0
    for name, p in model.p.items():
        if ".experts." in name and not name.endswith(".weight"):
            pre, proj = name.rsplit(".experts.", 1)
            pairs = [(p.grad[e], f"grad.{pre}.experts.{e}.{proj}.weight")
                     for e in range(p.shape[0])]
        else:
            pairs = [(p.grad, "grad." + name)]
        for g, key in pairs:
            ref = t(batch[key])
            err = float((g - ref).abs().max()) / max(float(ref.abs().max()), 1e-30)
            worst = max(worst, err)
            assert err < 1e-6, (key, err)
    print(json.dumps({"check": fixture, "ok": True, "loss": float(total),
                      "worst_grad_rel_err": worst}))


# ----------------------------------------------------------------------------------------------
# benchmark
# ----------------------------------------------------------------------------------------------


def bench(args):
    torch.set_num_threads(args.threads)
    with open(args.config) as f:
        c = json.load(f)
    if args.seq > c.get("max_position_embeddings", args.seq):
        raise SystemExit(f"--seq {args.seq} > max_position_embeddings")
    torch.manual_seed(args.seed)
    model = Model(c, torch.float32, seed=args.seed)
    params = list(model.p.values())
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    g = torch.Generator().manual_seed(args.seed + 1)
    V, B, T = c["vocab_size"], args.batch, args.seq
    losses, times = [], []
    for step in range(args.warmup + args.steps):
        seq = torch.randint(0, V, (B, T + 1), generator=g)
        t0 = time.perf_counter()
        stats = {}
        opt.zero_grad(set_to_none=True)
        loss, _, _, _ = model.loss(seq[:, :T], seq[:, 1:], args.mtp_lambda, args.alpha, stats)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        model.update_biases(stats, args.gamma)
        dt = time.perf_counter() - t0
        losses.append(float(loss))
        if step >= args.warmup:
            times.append(dt)
    step_s = sum(times) / len(times)
    print(json.dumps({"impl": "pytorch", "tok_s": B * T / step_s, "step_ms": step_s * 1e3,
                      "step_ms_min": min(times) * 1e3, "params": model.num_params(), "batch": B,
                      "seq": T, "steps": args.steps, "threads": args.threads,
                      "torch": torch.__version__, "loss_first": losses[0], "loss_last": losses[-1],
                      "config": os.path.basename(args.config)}))


def main():
    ap = argparse.ArgumentParser(description="PyTorch training-step baseline (see the docstring)")
    ap.add_argument("--config", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     "configs", "train-10m.json"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--mtp-lambda", type=float, default=0.3)
    ap.add_argument("--alpha", type=float, default=1e-4, help="balance loss weight")
    ap.add_argument("--gamma", type=float, default=1e-3, help="bias update speed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", metavar="FIXTURE_DIR",
                    help="verify losses and gradients on a fixture (float64) instead of timing")
    args = ap.parse_args()
    if args.check:
        check(args.check)
    else:
        bench(args)


if __name__ == "__main__":
    main()
