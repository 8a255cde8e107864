"""Recipe exploration (not part of whale, not used by its tests): how well does a tiny
DeepSeek-V3-style model (MLA, DeepSeekMoE with the bias update, MTP) learn the reasoning traces
of scripts/reason_traces.py within a given token budget? PyTorch, on the GPU machine when a
session has one (its image has torch and the `tokenizers` package); results in
docs/reasoning-recipe.md.

    WHALE_TOKENIZER=DIR python3 scripts/reason_explore.py '[["name", {"batch": 8, "model":
        {"d": 192, "layers": 4}, "evals": [4]}, 8]]'     # name, options, millions of tokens
DIR is a tokenizer made by `whale tokenizer train --template configs/reason/tokenizer-template`
on `whale task sample --format text` output. Without `tokenizers` (here) a byte-level stand-in
is used: `python3 scripts/reason_explore.py smoke` checks the pipeline on the CPU.
"""
import json, math, os, random, re, sys, time, fractions
import multiprocessing as mp
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reason_traces as R  # noqa

dev = "cuda" if torch.cuda.is_available() else "cpu"
import contextlib
def amp():
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if dev == "cuda" else contextlib.nullcontext()
OUT = os.environ.get("OUT", "/tmp/expout")
os.makedirs(OUT, exist_ok=True)
LOG = open(os.path.join(OUT, "explore.log"), "a")


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.write(s + "\n")
    LOG.flush()


# ------------------------------------------------------------------ tokenizer (our tokenizer.json)
try:
    from tokenizers import Tokenizer  # noqa
    TOK = Tokenizer.from_file(os.path.join(os.environ.get("WHALE_TOKENIZER", "."), "tokenizer.json"))
except ImportError:  # local smoke test only: bytes + the special tokens
    class _Enc:
        def __init__(s, ids): s.ids = ids
    class _Stub:
        SP = ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"]
        def encode(s, text, add_special_tokens=False):
            ids = []
            for part in re.split("(" + "|".join(map(re.escape, s.SP)) + ")", text):
                if part in s.SP: ids.append(300 + s.SP.index(part))
                else: ids.extend(b + 3 for b in part.encode())
            return _Enc(ids)
        def encode_batch(s, texts, add_special_tokens=False): return [s.encode(t) for t in texts]
        def decode(s, ids, skip_special_tokens=False):
            out = b""
            for i in ids:
                out += s.SP[i - 300].encode() if i >= 300 else bytes([i - 3]) if i >= 3 else b""
            return out.decode(errors="replace")
    TOK = _Stub()
BOS, EOS = 0, 1
FAMS = ["add_sub", "mul", "countdown"]


def gen_docs(args):
    seed, n = args
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fam = FAMS[i % 3]
        p, r, c = R.sample_problem(rng, fam)
        out.append(f"<｜User｜>{p}<｜Assistant｜><think>\n{r}\n</think>\n\n{c}")
    return out


def make_stream(n_docs, seed):
    per = 2000
    jobs = [(seed * 100003 + k, per) for k in range(n_docs // per)]
    with mp.Pool(min(16, os.cpu_count())) as pool:
        docs = [d for part in pool.map(gen_docs, jobs) for d in part]
    enc = TOK.encode_batch(docs, add_special_tokens=False)
    ids = []
    for e in enc:
        ids.append(BOS)
        ids.extend(e.ids)
        ids.append(EOS)
    return np.array(ids, dtype=np.int64)


# ------------------------------------------------------------------ model
class RMS(nn.Module):
    def __init__(s, d):
        super().__init__(); s.w = nn.Parameter(torch.ones(d))
    def forward(s, x):
        return s.w * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).type_as(x)


def rope(x, pos, theta=10000.0):
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, device=x.device).float() / d)
    ang = pos[:, :, None].float() * inv  # [B,T,d/2]
    cos, sin = ang.cos()[:, :, None, :], ang.sin()[:, :, None, :]
    x0, x1 = x[..., 0::2].float(), x[..., 1::2].float()
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), -1).flatten(-2).type_as(x)


class MLA(nn.Module):
    def __init__(s, c):
        super().__init__()
        C, H = c["d"], c["heads"]
        s.H, s.nope, s.rp, s.vd, s.r = H, c["nope"], c["rope"], c["vd"], c["kv_lora"]
        s.q_a = nn.Linear(C, c["q_lora"], bias=False); s.q_norm = RMS(c["q_lora"])
        s.q_b = nn.Linear(c["q_lora"], H * (s.nope + s.rp), bias=False)
        s.kv_a = nn.Linear(C, s.r + s.rp, bias=False); s.kv_norm = RMS(s.r)
        s.kv_b = nn.Linear(s.r, H * (s.nope + s.vd), bias=False)
        s.o = nn.Linear(H * s.vd, C, bias=False)

    def forward(s, x, pos, keymask):
        B, T, _ = x.shape
        q = s.q_b(s.q_norm(s.q_a(x))).view(B, T, s.H, s.nope + s.rp)
        kva = s.kv_a(x)
        kv = s.kv_b(s.kv_norm(kva[..., :s.r])).view(B, T, s.H, s.nope + s.vd)
        kr = rope(kva[..., None, s.r:], pos).expand(B, T, s.H, s.rp)
        qq = torch.cat([q[..., :s.nope], rope(q[..., s.nope:], pos)], -1).transpose(1, 2)
        kk = torch.cat([kv[..., :s.nope], kr], -1).transpose(1, 2)
        vv = kv[..., s.nope:].transpose(1, 2)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()[None, None]
        if keymask is not None:
            mask = mask & keymask[:, None, None, :]
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask)
        else:
            sc = (qq @ kk.transpose(-1, -2)) / math.sqrt(qq.shape[-1])
            o = sc.masked_fill(~mask, float("-inf")).softmax(-1) @ vv
        return s.o(o.transpose(1, 2).reshape(B, T, -1))


class MoE(nn.Module):
    def __init__(s, c):
        super().__init__()
        C, E, Fi = c["d"], c["experts"], c["moe_inter"]
        s.E, s.K = E, c["topk"]
        s.gate = nn.Parameter(torch.randn(E, C) * 0.006)
        s.register_buffer("bias", torch.zeros(E))
        s.w1 = nn.Parameter(torch.randn(E, C, Fi) * 0.006)
        s.w3 = nn.Parameter(torch.randn(E, C, Fi) * 0.006)
        s.w2 = nn.Parameter(torch.randn(E, Fi, C) * 0.006)
        s.shared = MLP(C, Fi * c["shared"])
        s.counts = torch.zeros(E)

    def forward(s, x):
        B, T, C = x.shape
        u = x.reshape(-1, C)
        sc = torch.sigmoid(F.linear(u.float(), s.gate.float()).float()).float()
        ids = (sc + s.bias).topk(s.K, -1).indices
        g = sc.gather(1, ids); g = g / (g.sum(-1, keepdim=True) + 1e-20) * 2.5
        w = torch.zeros(sc.shape, dtype=torch.float32, device=sc.device).scatter(1, ids, g.float())
        if s.training:
            s.counts = s.counts.to(x.device) + torch.zeros(s.E, device=x.device).scatter_add(
                0, ids.flatten(), torch.ones(ids.numel(), device=x.device))
        h = torch.einsum("nc,ecf->enf", u, s.w1)
        h = F.silu(h) * torch.einsum("nc,ecf->enf", u, s.w3)
        y = torch.einsum("enf,efc->enc", h, s.w2)
        y = (y * w.t()[:, :, None].to(y.dtype)).sum(0)
        return (y + s.shared(u)).view(B, T, C)


class MLP(nn.Module):
    def __init__(s, C, I):
        super().__init__()
        s.g = nn.Linear(C, I, bias=False); s.u = nn.Linear(C, I, bias=False); s.dn = nn.Linear(I, C, bias=False)
    def forward(s, x):
        return s.dn(F.silu(s.g(x)) * s.u(x))


class Block(nn.Module):
    def __init__(s, c, moe):
        super().__init__()
        s.n1, s.n2 = RMS(c["d"]), RMS(c["d"])
        s.attn = MLA(c)
        s.ffn = MoE(c) if moe else MLP(c["d"], c["inter"])
    def forward(s, x, pos, km):
        x = x + s.attn(s.n1(x), pos, km)
        return x + s.ffn(s.n2(x))


class Model(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.c = c
        s.emb = nn.Embedding(c["vocab"], c["d"])
        s.layers = nn.ModuleList([Block(c, i >= 1) for i in range(c["layers"])])
        s.norm = RMS(c["d"])
        s.head = nn.Linear(c["d"], c["vocab"], bias=False)
        s.mtp_e, s.mtp_h, s.mtp_n = RMS(c["d"]), RMS(c["d"]), RMS(c["d"])
        s.eh = nn.Linear(2 * c["d"], c["d"], bias=False)
        s.mtp_block = Block(c, True)
        for n, p in s.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.006)

    def trunk(s, idx, pos, km=None):
        x = s.emb(idx)
        for l in s.layers:
            x = l(x, pos, km)
        return x

    def forward(s, idx, tgt, lam):
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)[None].expand(B, T)
        h = s.trunk(idx, pos)
        logits = s.head(s.norm(h))
        main = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), tgt.reshape(-1))
        if lam <= 0:
            return main, main, torch.zeros(())
        nxt = torch.cat([idx[:, 1:], idx[:, -1:]], 1)
        m = s.eh(torch.cat([s.mtp_e(s.emb(nxt)), s.mtp_h(h)], -1))
        m = s.mtp_block(m, pos, None)
        ml = s.head(s.mtp_n(m))
        mt = torch.cat([tgt[:, 1:], torch.full_like(tgt[:, :1], -100)], 1)
        mtp = F.cross_entropy(ml.float().view(-1, ml.shape[-1]), mt.reshape(-1), ignore_index=-100)
        return main + lam * mtp, main, mtp

    @torch.no_grad()
    def generate(s, prompts, max_new):
        """Greedy, left-padded batch without a KV cache."""
        B = len(prompts)
        L = max(len(p) for p in prompts)
        idx = torch.full((B, L), EOS, dtype=torch.long, device=dev)
        km = torch.zeros((B, L), dtype=torch.bool, device=dev)
        for i, p in enumerate(prompts):
            idx[i, L - len(p):] = torch.tensor(p, device=dev)
            km[i, L - len(p):] = True
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        outs = [[] for _ in range(B)]
        for t in range(max_new):
            pos = (km.long().cumsum(1) - 1).clamp(min=0)
            with amp():
                h = s.trunk(idx, pos, km)
                nx = s.head(s.norm(h[:, -1])).float().argmax(-1)
            for i in range(B):
                if not done[i]:
                    outs[i].append(int(nx[i]))
            done |= nx == EOS
            if bool(done.all()):
                break
            idx = torch.cat([idx, nx[:, None]], 1)
            km = torch.cat([km, torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
        return outs


# ------------------------------------------------------------------ verification
def boxed(text):
    if text.count("</think>") != 1:
        return None
    content = text.split("</think>", 1)[1]
    m = re.findall(r"\\boxed\{([^{}]*)\}", content)
    return m[0] if len(m) == 1 else None


def check(prompt, ans):
    if ans is None:
        return False
    m = re.match(r"What is (\d+) ([-+*]) (\d+)\?", prompt)
    if m:
        a, op, b = int(m[1]), m[2], int(m[3])
        want = a + b if op == "+" else a - b if op == "-" else a * b
        return ans.strip() == str(want)
    m = re.match(r"Using the numbers (\d+), (\d+), (\d+), make (\d+)\.", prompt)
    nums = sorted([int(m[1]), int(m[2]), int(m[3])])
    if not re.fullmatch(r"[\d+\-*/() ]+", ans):
        return False
    used = sorted(int(x) for x in re.findall(r"\d+", ans))
    if used != nums:
        return False
    try:
        v = eval(re.sub(r"(\d+)", r"fractions.Fraction(\1)", ans), {"fractions": fractions})
    except Exception:
        return False
    return v == int(m[4])


def evaluate(model, n_per, seed=777, max_new=520):
    model.eval()
    rng = random.Random(seed)
    res = {}
    for fam in FAMS:
        probs = [R.sample_problem(rng, fam)[0] for _ in range(n_per)]
        prompts = [[BOS] + TOK.encode(f"<｜User｜>{p}<｜Assistant｜><think>\n", add_special_tokens=False).ids
                   for p in probs]
        ok = fmt = 0
        for b in range(0, n_per, 500):
            outs = model.generate(prompts[b:b + 500], max_new)
            for p, o in zip(probs[b:b + 500], outs):
                text = TOK.decode([t for t in o if t != EOS], skip_special_tokens=False)
                a = boxed(text)
                fmt += a is not None
                ok += check(p, a)
        res[fam] = (ok / n_per, fmt / n_per)
    model.train()
    return res


# ------------------------------------------------------------------ training
def train(name, c, tokens, stream, batch=32, seq=512, lr=2e-3, gamma=0.01, lam=0.3, evals=(), n_eval=300):
    torch.manual_seed(0)
    model = Model(c).to(dev)
    nparam = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), **({"fused": True} if dev == "cuda" else {}))
    steps = tokens // (batch * seq)
    warm = min(100, steps // 10)
    rng = np.random.default_rng(0)
    S = torch.as_tensor(stream, device=dev)
    t0 = time.time()
    log(f"== {name}: {nparam/1e6:.2f}M params, {steps} steps x {batch}x{seq} = {tokens/1e6:.1f}M tokens, lr {lr}")
    moes = [m for m in model.modules() if isinstance(m, MoE)]
    for step in range(steps):
        cur = lr * (step + 1) / warm if step < warm else \
            lr * 0.1 + 0.45 * lr * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        for g in opt.param_groups:
            g["lr"] = cur
        st = torch.as_tensor(rng.integers(0, len(stream) - seq - 1, batch), device=dev)
        w = S[st[:, None] + torch.arange(seq + 1, device=dev)[None]]
        with amp():
            loss, main, mtp = model(w[:, :-1], w[:, 1:], lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for m in moes:
                cnt = m.counts
                m.bias -= gamma * torch.sign(cnt - cnt.mean())
                m.counts = torch.zeros_like(cnt)
        if step % 200 == 0 or step == steps - 1:
            log(f"  step {step} loss {main.item():.4f} mtp {mtp.item():.4f} ({time.time()-t0:.0f}s)")
        if (step + 1) in evals:
            log(f"  eval at {(step+1)*batch*seq/1e6:.1f}M tokens: {evaluate(model, n_eval)}")
    r = evaluate(model, n_eval)
    log(f"  FINAL {name} @ {tokens/1e6:.1f}M tokens: {r} ({time.time()-t0:.0f}s)")
    return model, r


BASE = dict(vocab=512, d=256, layers=6, heads=4, q_lora=128, kv_lora=64, nope=32, rope=16, vd=32,
            inter=768, experts=8, topk=2, moe_inter=256, shared=1)

if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "smoke"
    t0 = time.time()
    if which == "smoke":
        stream = make_stream(2000, 1)
        log("stream", len(stream), f"{time.time()-t0:.1f}s")
        c = dict(BASE, d=64, layers=2, moe_inter=64, inter=128)
        train("smoke", c, 40000, stream, batch=4, seq=256, n_eval=6)
    else:
        stream = make_stream(160000, 1)
        log("stream", len(stream), f"tokens, {time.time()-t0:.1f}s")
        plan = json.loads(which)
        for name, over, toks in plan:
            c = dict(BASE, **over.get("model", {}))
            kw = {k: v for k, v in over.items() if k != "model"}
            spb = kw.get("batch", 32) * kw.get("seq", 512)
            evals = {int(x * 1e6) // spb for x in kw.pop("evals", [])}
            train(name, c, int(toks * 1e6), stream, evals=evals, **kw)
