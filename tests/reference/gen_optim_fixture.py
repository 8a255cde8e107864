"""Expectations for tests/test_train_optim.cpp from PyTorch (torch 1.13, Debian python3-torch).

    /usr/bin/python3 tests/reference/gen_optim_fixture.py   # rewrites tests/fixtures/optim/*.json

adamw.json: torch.optim.AdamW over three small f32 tensors (two with weight decay, one without,
as two parameter groups), six steps with changing learning rates (one of them 0) and given
gradients; the parameters and both moments after every step. All hyper-parameters are float32
values, so the C++ side (which holds them as float) uses exactly the same numbers.
clip.json: torch.nn.utils.clip_grad_norm_ on the same tensors' first gradients, clipping and not.
bf16.json: tensor.to(torch.bfloat16).float() on ties, extremes, subnormals, Inf and NaN.
Every float is written with repr() of its f32 value, which round-trips exactly.
"""

import json
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "optim")


def f32(x):
    return float(np.float32(x))


def floats(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def adamw_fixture():
    g = torch.Generator().manual_seed(1234)
    shapes = [("w1", [3, 4], True), ("norm", [5], False), ("w2", [2, 3], True)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.5) for _, s, _ in shapes]
    betas = (f32(0.9), f32(0.95))
    eps, wd = f32(1e-8), f32(0.1)
    decay = [p for p, (_, _, d) in zip(params, shapes) if d]
    no_decay = [p for p, (_, _, d) in zip(params, shapes) if not d]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=betas, eps=eps, foreach=False)
    fixture = {"beta1": betas[0], "beta2": betas[1], "eps": eps, "weight_decay": wd,
               "tensors": [{"name": n, "shape": s, "decay": d, "init": floats(p)}
                           for p, (n, s, d) in zip(params, shapes)],
               "steps": []}
    lrs = [f32(1e-3), f32(3e-3), f32(2e-2), f32(5e-4), 0.0, f32(1e-2)]
    for k, lr in enumerate(lrs):
        grads = []
        for p in params:
            # mixed magnitudes, one exact zero per tensor, a sign flip every other step
            gr = torch.randn(p.shape, generator=g) * (10.0 ** ((k % 3) - 1))
            gr.view(-1)[0] = 0.0
            if k % 2:
                gr = -gr
            p.grad = gr.to(torch.float32)
            grads.append(floats(p.grad))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        fixture["steps"].append({
            "lr": lr, "grads": grads,
            "params": [floats(p) for p in params],
            "exp_avg": [floats(opt.state[p]["exp_avg"]) for p in params],
            "exp_avg_sq": [floats(opt.state[p]["exp_avg_sq"]) for p in params]})
    return fixture


def clip_fixture(adamw):
    grads0 = adamw["steps"][2]["grads"]  # the largest gradients (scale 10)
    cases = []
    for max_norm in [1.0, 1e6]:
        ts = [torch.nn.Parameter(torch.zeros(len(gr))) for gr in grads0]
        for t, gr in zip(ts, grads0):
            t.grad = torch.tensor(gr, dtype=torch.float32)
        norm = torch.nn.utils.clip_grad_norm_(ts, max_norm)
        cases.append({"max_norm": max_norm, "norm": float(norm),
                      "clipped": [floats(t.grad) for t in ts]})
    return {"grads": grads0, "cases": cases}


def bf16_fixture():
    base = [0.0, -0.0, 1.0, -1.5, 3.14159265, 1e-3, 65504.0, 3.3895314e38, 1e-40, -1e-45,
            1.17549435e-38, float("inf"), float("-inf")]
    # exact ties and near-ties around 1 and 2: 1 + k * 2^-9 for k = 1..7
    base += [1.0 + k * 2.0 ** -9 for k in range(1, 8)] + [2.0 + k * 2.0 ** -8 for k in range(1, 8)]
    rng = np.random.default_rng(5)
    base += [float(v) for v in (rng.standard_normal(40) * 10.0 ** rng.integers(-20, 20, 40))]
    x = torch.tensor(np.array(base, dtype=np.float32))
    y = x.to(torch.bfloat16).to(torch.float32)
    enc = lambda v: v if np.isfinite(v) else str(v)  # JSON has no Inf: "inf" / "-inf"
    return {"inputs": [enc(v) for v in floats(x)], "outputs": [enc(v) for v in floats(y)]}


def main():
    os.makedirs(OUT, exist_ok=True)
    adamw = adamw_fixture()
    for name, data in [("adamw", adamw), ("clip", clip_fixture(adamw)), ("bf16", bf16_fixture())]:
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
