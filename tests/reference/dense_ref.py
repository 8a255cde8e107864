"""Independent float64 PyTorch reference of Qwen2ForCausalLM and LlamaForCausalLM (forward only):
the dense architectures of DeepSeek's R1-Distill models.

Written from Hugging Face transformers' modeling_qwen2.py / modeling_llama.py and
modeling_rope_utils.py (_compute_llama3_parameters); no code is shared with whale. Runs with
/usr/bin/python3 (torch 1.13 CPU, numpy). Same interface as deepseek_ref.DeepseekRef:

    from dense_ref import DenseRef
    ref = DenseRef("tests/fixtures/models/qwen2")
    logits = ref.forward_logits([1, 2, 3])     # torch.float64 [3, vocab]
    logits = ref.forward_logits([1, 2, 3], alt=True)   # second path (see below)

Semantics:
  * h = embed_tokens[ids]; per layer h += o_proj(attn(input_layernorm(h)));
    h += down(silu(gate(x)) * up(x)) with x = post_attention_layernorm(h); logits =
    lm_head(norm(h)) (the embedding matrix when tie_word_embeddings and no lm_head.weight).
  * RMSNorm(x) = w * x / sqrt(mean(x^2) + rms_norm_eps).
  * q = q_proj(x) [+ bias], k = k_proj(x) [+ bias], v = v_proj(x) [+ bias]: Qwen2 always has the
    q/k/v biases and no o_proj bias; Llama has q/k/v/o biases iff attention_bias.
    head_dim = config.head_dim (Llama, optional) or hidden_size / num_attention_heads.
  * RoPE (rotate_half on the stored order): inv_freq = 1 / theta^(arange(0, d, 2) / d),
    emb = cat(freqs, freqs), x * cos + rotate_half(x) * sin. rope_scaling "llama3": wavelen =
    2 pi / inv_freq; > L / low_freq_factor: inv_freq / factor; < L / high_freq_factor: kept;
    otherwise (1 - s) inv_freq / factor + s inv_freq, s = (L / wavelen - low) / (high - low),
    L = original_max_position_embeddings.
  * Query head h uses key/value head h // (num_attention_heads // num_key_value_heads)
    (repeat_kv); scores q.k / sqrt(head_dim), causal softmax.
  * alt=True: the second path runs token by token with an explicit key/value cache, per head in
    Python loops, with RoPE as complex rotation of the (x[i], x[i + d/2]) pairs.
"""

import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def rms_norm(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def arch_of(config):
    a = (config.get("architectures") or [""])[0]
    if a == "Qwen2ForCausalLM" or config.get("model_type") == "qwen2":
        return "qwen2"
    if a == "LlamaForCausalLM" or config.get("model_type") == "llama":
        return "llama"
    raise ValueError(f"not a dense architecture: {a}")


def inv_freq_of(config, head_dim):
    theta = float(config.get("rope_theta", 10000.0))
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    rs = config.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind != "llama3":
            raise ValueError(f"rope_scaling {kind} not in this reference")
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        L = rs["original_max_position_embeddings"]
        low_wavelen, high_wavelen = L / lo, L / hi
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        s = (L / wavelen - lo) / (hi - lo)
        smoothed = (1 - s) * scaled / factor + s * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    return inv


class DenseRef:
    def __init__(self, path=None, config=None, weights=None):
        if path is not None:
            with open(os.path.join(path, "config.json")) as f:
                config = json.load(f)
            weights = safetensors_io.load_checkpoint(path, out=np.float64)
        self.config = config
        self.arch = arch_of(config)
        self.w = {k: torch.as_tensor(np.asarray(v)).to(torch.float64) for k, v in weights.items()}
        c = config
        self.nh = c["num_attention_heads"]
        self.nkv = c.get("num_key_value_heads") or self.nh
        self.hd = (c.get("head_dim") if self.arch == "llama" else None) or \
            c["hidden_size"] // self.nh
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.qkv_bias = self.arch == "qwen2" or bool(c.get("attention_bias", False))
        self.o_bias = self.arch == "llama" and bool(c.get("attention_bias", False))
        self.inv_freq = inv_freq_of(c, self.hd)
        self.routing_log = []  # interface parity with DeepseekRef (no routing here)

    def lin(self, x, name, bias=False):
        y = x @ self.w[name + ".weight"].t()
        return y + self.w[name + ".bias"] if bias else y

    def lm_head(self):
        return self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])

    def mlp(self, x, p):
        return self.lin(torch.nn.functional.silu(self.lin(x, p + "gate_proj")) *
                        self.lin(x, p + "up_proj"), p + "down_proj")

    def qkv(self, x, p):
        n = x.shape[0]
        q = self.lin(x, p + "q_proj", self.qkv_bias).reshape(n, self.nh, self.hd)
        k = self.lin(x, p + "k_proj", self.qkv_bias).reshape(n, self.nkv, self.hd)
        v = self.lin(x, p + "v_proj", self.qkv_bias).reshape(n, self.nkv, self.hd)
        return q, k, v

    # -- main path: whole sequence, HF's rotate_half and repeat_kv --------------------------------

    def attention(self, x, p):
        n = x.shape[0]
        q, k, v = self.qkv(x, p)
        freqs = torch.outer(torch.arange(n, dtype=torch.float64), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(self.hd)
        mask = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
        s = s.masked_fill(mask, float("-inf")).softmax(-1)
        o = torch.einsum("hij,jhd->ihd", s, v).reshape(n, self.nh * self.hd)
        return self.lin(o, p + "o_proj", self.o_bias)

    def hidden_states(self, tokens):
        c = self.config
        h = self.w["model.embed_tokens.weight"][torch.tensor(tokens)]
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = h + self.attention(rms_norm(h, self.w[p + "input_layernorm.weight"], self.eps),
                                   p + "self_attn.")
            h = h + self.mlp(rms_norm(h, self.w[p + "post_attention_layernorm.weight"], self.eps),
                             p + "mlp.")
        return rms_norm(h, self.w["model.norm.weight"], self.eps)

    # -- second path: one token at a time with a cache, complex RoPE, per-head loops -------------

    def rope_complex(self, x, pos):
        """x: [heads, d]; pairs (x[i], x[i + d/2]) rotated as complex numbers."""
        half = self.hd // 2
        z = torch.complex(x[:, :half], x[:, half:])
        r = torch.polar(torch.ones(half, dtype=torch.float64), pos * self.inv_freq)
        z = z * r
        return torch.cat((z.real, z.imag), dim=-1)

    def hidden_states_alt(self, tokens):
        c = self.config
        L = c["num_hidden_layers"]
        cache = [([], []) for _ in range(L)]
        out = []
        for pos, t in enumerate(tokens):
            h = self.w["model.embed_tokens.weight"][t][None, :]
            for i in range(L):
                p = f"model.layers.{i}."
                x = rms_norm(h, self.w[p + "input_layernorm.weight"], self.eps)
                q, k, v = self.qkv(x, p + "self_attn.")
                ks, vs = cache[i]
                ks.append(self.rope_complex(k[0], pos))
                vs.append(v[0])
                heads = []
                for hq in range(self.nh):
                    g = hq * self.nkv // self.nh
                    qh = self.rope_complex(q[0], pos)[hq]
                    sc = torch.stack([qh.dot(kk[g]) for kk in ks]) / math.sqrt(self.hd)
                    pr = torch.softmax(sc, 0)
                    heads.append(sum(pr[j] * vs[j][g] for j in range(len(vs))))
                o = torch.cat(heads)[None, :]
                h = h + self.lin(o, p + "self_attn.o_proj", self.o_bias)
                h = h + self.mlp(rms_norm(h, self.w[p + "post_attention_layernorm.weight"],
                                          self.eps), p + "mlp.")
            out.append(h[0])
        return rms_norm(torch.stack(out), self.w["model.norm.weight"], self.eps)

    def forward_logits(self, tokens, alt=False, record_routing=False):
        h = self.hidden_states_alt(tokens) if alt else self.hidden_states(tokens)
        return h @ self.lm_head().t()

    def greedy(self, tokens, n):
        seq, out = list(tokens), []
        for _ in range(n):
            nxt = int(self.forward_logits(seq)[-1].argmax())
            seq.append(nxt)
            out.append(nxt)
        return out
