"""Independent float64 PyTorch (autograd) reference of the GRPO objective (DeepSeekMath section 4.1,
DeepSeek-R1) on the DeepSeek-V3 training reference model (deepseek_train_ref.py). Used by
scripts/gen_grpo_fixture.py to write tests/fixtures/grpo/; no code is shared with whale
(src/reason/grpo.h states the same contract on the C++ side).

Runs with /usr/bin/python3 (torch 1.13 CPU, numpy).

The objective, for P prompts x G completions with rewards r (group g = completions g*G..g*G+G-1):
  A       = (r - mean_g r) / (std_g r + eps)   mode "std" (torch.std: unbiased, as TRL)
  A       = r - mean_g r                        mode "mean" (Dr. GRPO)
  a group whose rewards are all equal is skipped: its tokens are masked out of everything below.
  per completion token t (prompt and padding masked):
  rho     = exp(logp - logp_old)
  k3      = exp(logp_ref - logp) - (logp_ref - logp) - 1
  J       = min(rho A, clamp(rho, 1 - eps_low, 1 + eps_high) A) - beta k3
  loss    = -(1 / N) sum_t J,  N = completion tokens of the non-skipped groups.
Here the batch keeps every sequence (skipped ones masked) and the gradient comes from autograd
through the whole model, where the C++ side drops the skipped groups and turns the objective into
per-token cross-entropy weights: two different routes to the same numbers.
"""

import numpy as np
import torch

IGNORE = -1


def group_advantages(rewards, G, mode="std", eps=1e-4):
    """rewards [P*G] -> (advantages [P*G] float64, skipped [P] bool)."""
    r = torch.as_tensor(np.asarray(rewards, dtype=np.float64)).reshape(-1, G)
    mean = r.mean(dim=1, keepdim=True)
    if mode == "std":
        a = (r - mean) / (r.std(dim=1, keepdim=True) + eps)
    elif mode == "mean":
        a = r - mean
    else:
        raise ValueError(f"unknown advantage mode {mode}")
    skipped = (r == r[:, :1]).all(dim=1)
    a = torch.where(skipped[:, None], torch.zeros_like(a), a)
    return a.reshape(-1), skipped


def pad_batch(prompts, completions, G):
    """Sequence i = prompts[i // G] + completions[i], right-padded with token 0. -> (inputs [B, T],
    targets [B, T] long: the next token where it is a completion token, IGNORE elsewhere)."""
    seqs = [list(prompts[i // G]) + list(c) for i, c in enumerate(completions)]
    T = max(len(s) for s in seqs) - 1
    inputs = torch.zeros(len(seqs), T, dtype=torch.long)
    targets = torch.full((len(seqs), T), IGNORE, dtype=torch.long)
    for i, s in enumerate(seqs):
        p = len(prompts[i // G])
        inputs[i, :len(s) - 1] = torch.tensor(s[:-1])
        for t in range(p - 1, len(s) - 1):
            targets[i, t] = s[t + 1]
    return inputs, targets


def token_logprobs(model, inputs, targets):
    """log softmax of the main head at each target [B, T] (0 where ignored), differentiable."""
    logits = model.forward_logits(inputs)
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return torch.where(targets != IGNORE, picked, torch.zeros_like(picked))


def grpo_loss(logp, logp_old, logp_ref, adv, mask, eps_low, eps_high, beta):
    """All [B, T] float64 except adv [B] and mask [B, T] bool. -> (loss, stats dict)."""
    A = adv[:, None].expand_as(logp)
    rho = torch.exp(logp - logp_old)
    surrogate = torch.min(rho * A, torch.clamp(rho, 1 - eps_low, 1 + eps_high) * A)
    d = logp_ref - logp
    k3 = torch.exp(d) - d - 1
    J = surrogate - beta * k3
    m = mask.to(torch.float64)
    N = int(mask.sum())
    loss = -(J * m).sum() / N
    with torch.no_grad():
        stats = {
            "loss": float(loss),
            "kl": float((k3 * m).sum() / N),
            "tokens": N,
            "clip_low": int(((rho < 1 - eps_low) & (A < 0) & mask).sum()),
            "clip_high": int(((rho > 1 + eps_high) & (A > 0) & mask).sum()),
        }
    return loss, stats
