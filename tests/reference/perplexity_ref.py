#!/usr/bin/python3
"""llama-perplexity's method on the float64 PyTorch reference, for tests/test_gguf_model.cpp.

    /usr/bin/python3 tests/reference/perplexity_ref.py MODEL_DIR CTX BOS ID,ID,...

Cuts the ids into floor(n / CTX) chunks, puts BOS (>= 0) first in each, scores the tokens after
position CTX/2 in each chunk, prints {"ppl": exp(mean nll), "error": ppl * sqrt(var / (n - 1)),
"scored": n} as JSON. Written from llama.cpp's perplexity example's description, not whale's code.
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deepseek_ref import DeepseekRef  # noqa: E402


def main():
    model, ctx, bos = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ids = [int(x) for x in sys.argv[4].split(",")]
    ref = DeepseekRef(model)
    nlls = []
    for c in range(len(ids) // ctx):
        chunk = ids[c * ctx:(c + 1) * ctx]
        if bos >= 0:
            chunk[0] = bos
        logp = torch.log_softmax(ref.forward_logits(chunk), dim=-1)
        for j in range(ctx // 2, ctx - 1):
            nlls.append(-float(logp[j, chunk[j + 1]]))
    n = len(nlls)
    mean = sum(nlls) / n
    var = sum(x * x for x in nlls) / n - mean * mean
    ppl = math.exp(mean)
    print(json.dumps({"ppl": ppl, "error": ppl * math.sqrt(max(var, 0) / (n - 1)), "scored": n}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
