#!/usr/bin/python3
"""Writes a random DeepSeek-V2/V3 model (or a dense Qwen2 / Llama model, the R1-Distill
architectures) in exactly the Hugging Face checkpoint layout.

    /usr/bin/python3 scripts/gen_model.py --config CONFIG.json --out DIR
        [--dtype bf16|f32|f16|fp8] [--shards N] [--seed S] [--std X] [--tiny-frac F]
        [--tokenizer DIR] [--script FILE] [--fim-script FILE] [--tool-script FILE]
        [--context [--template r1|v31] [--after-tools-script FILE] [--answer-script FILE]]

CONFIG.json holds HF config fields; missing ones get the HF defaults of the model type
("model_type": "deepseek_v2" or "deepseek_v3", default v3). The output directory gets
config.json (all HF fields, keys sorted like HF writes them), model.safetensors (or N shards
model-0000i-of-0000N.safetensors plus model.safetensors.index.json) and optionally the tokenizer
files.

Tensors (names and shapes as in the released checkpoints):
  model.embed_tokens.weight [V, H]; per layer i (main layers and MTP layers):
  input_layernorm, post_attention_layernorm [H];
  self_attn.q_proj [nh*(nope+rope), H]  or  q_a_proj [q_lora, H], q_a_layernorm [q_lora],
  q_b_proj [nh*(nope+rope), q_lora]; kv_a_proj_with_mqa [kv_lora+rope, H]; kv_a_layernorm [kv_lora];
  kv_b_proj [nh*(nope+v), kv_lora]; o_proj [H, nh*v];
  mlp.{gate,up,down}_proj (dense) or mlp.gate.weight [E, H], mlp.gate.e_score_correction_bias [E]
  (noaux_tc, always F32), mlp.experts.{j}.{gate,up,down}_proj,
  mlp.shared_experts.{gate,up,down}_proj;
  MTP layers (index >= num_hidden_layers) also: embed_tokens [V, H], enorm, hnorm [H],
  eh_proj [H, 2H], shared_head.norm [H], shared_head.head [V, H] (copies of the main ones);
  model.norm.weight [H]; lm_head.weight [V, H] unless tie_word_embeddings.
Qwen2ForCausalLM / LlamaForCausalLM ("architectures" in CONFIG.json): per layer
  self_attn.{q,k,v}_proj.weight [nh*hd | nkv*hd, H] and .bias (Qwen2 always, Llama with
  attention_bias; in the model dtype, as the releases), self_attn.o_proj.weight [H, nh*hd] (and
  .bias with Llama's attention_bias), mlp.{gate,up,down}_proj, the two norms.
With --dtype fp8 every Linear weight inside the layers (attention projections, all MLP/expert
projections, eh_proj) is F8_E4M3 with a F32 `<name>_scale_inv` (128x128 blocks, as the V3 release);
embeddings, heads, norms and mlp.gate.weight are BF16; the config gets the release's
quantization_config.

Initialisation (deterministic: each tensor has its own generator seeded by (seed, crc32(name)), so
values do not depend on sharding or order): norms 1 + 0.1 N(0,1); linear weights
N(0,1) / sqrt(fan_in) (or N(0, std^2) with --std) so activations stay O(1); embedding N(0,1);
lm_head N(0,1) * 2.5 / sqrt(H) so logits are O(1-10) (a tied embedding uses 1/sqrt(H)); router
N(0,1) / sqrt(H); e_score_correction_bias N(0, 0.1^2) (has negative entries). --tiny-frac F
multiplies a fraction F of every Linear weight's entries by 1e-4 (with fp8 they become e4m3
subnormals or zero).

--script FILE (needs --tokenizer; bf16/f32/f16/fp8 all work) makes a "scripted" R1-style reasoning
model: its greedy continuation of any R1 chat generation prompt (which ends with
"<｜Assistant｜><think>\n") is exactly the text of FILE (one trailing newline dropped) followed by
EOS, computed by a real forward pass. It is a bigram chain: the last generation-prompt token t0
and the script tokens s1..sm (all distinct, m < hidden_size) get one-hot embeddings
SCRIPT_EMBED * e_i, lm_head row of the successor of chain token i (s_{i+1}, or EOS after sm) is
(SCRIPT_MARGIN / sqrt(H)) * e_i and model.norm is all ones, so after the final RMSNorm
(~ sqrt(H) * e_i) the successor's logit is ~SCRIPT_MARGIN. Everything else is random but small
(decoder Linear weights SCRIPT_LAYER_SCALE / sqrt(fan_in), other embedding rows N(0, 0.1^2), other
head rows N(0, 0.02^2)), so the layers run but only nudge the residual stream and every other
logit stays within ~1. The tokenizer files are copied with the DeepSeek-R1 chat template (from
tests/fixtures/tokenizer/chat_cases.json). The script is tokenized with the reference tokenizer
(@lenml/tokenizers under node; WHALE_NODE_MODULES overrides <repo>/.deps/node_modules), and the
result is checked with the float64 reference forward (tests/reference/deepseek_ref.py): greedy
decoding after a sample prompt must reproduce the chain with a logit margin of at least
SCRIPT_MIN_MARGIN. Sampling at temperature 1 then follows the script too (a stray token has
probability ~ vocab * e^-margin per step), while temperature 2 halves the margin and makes
seeded samples diverge.

--fim-script FILE (with or without --script) adds a second chain: the greedy answer to any
fill-in-the-middle prompt (one ending with "<｜fim▁end｜>") is the text of FILE then EOS. The two
scripts together must still have distinct tokens. --tool-script FILE adds a chain that continues a
forced function call (a prompt ending with "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>", as
`tool_choice: "required"` makes it).

--context (MLA configs with q_lora_rank and at least 2 heads) lifts the distinct-token rule: a
state is (previous token, current token, phase), phase = whether a tab has been generated yet,
and each state names its next token. Layer 0's attention is built to compute both: head 0 has a
constant RoPE query and key, the key turned back by one position's angle on every frequency, so
its score peaks at distance 1 (CTX_PREV_PEAK; every other distance stays well below) and it copies
the previous token's one-hot into a second block of dimensions; head 1 scores only the tab token
(CTX_PHASE_PEAK) and writes a phase dimension. Context tokens get CTX_EMBED * (one-hot + a constant
dimension). The lm_head row of the next token of state (p, t, ph) is u * (e_t + e'_p + f_ph)
(f_1 = constant - phase, f_2 = phase), or 3u * e_t when every state of t has the same next token;
a script whose states collide, or whose additive rows do not single out the next token, is
refused with the tokens named. So two calls in one answer (the tab between them, which the call
parsers skip) and a chain sharing tokens with another work. With --context: --after-tools-script
FILE (the answer after tool outputs), --template r1|v31 (v31: DeepSeek-V3.1's chat template and
tokenizer, i.e. the V3 tokenizer with placeholders 128798/128799 as "<think>" / "</think>"; --script
is then the thinking-mode answer after "<think>" and --answer-script FILE the non-thinking one after
"</think>").

Memory stays bounded (tensors are generated and written in row chunks), so ~1B-parameter models
are fine: roughly 10-20 s per 1B parameters for bf16 on one core.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import zlib

import numpy as np

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
import safetensors_io as sio  # noqa: E402

V3_DEFAULTS = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekV3Config",
        "AutoModel": "modeling_deepseek.DeepseekV3Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
    },
    "aux_loss_alpha": 0.001,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 3,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "pretraining_tp": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.3",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 129280,
}

V2_DEFAULTS = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekV2Config",
        "AutoModel": "modeling_deepseek.DeepseekV2Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM",
    },
    "aux_loss_alpha": 0.001,
    "bos_token_id": 100000,
    "eos_token_id": 100001,
    "ep_size": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 10944,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v2",
    "moe_intermediate_size": 1408,
    "moe_layer_freq": 1,
    "n_group": 1,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts_per_tok": 6,
    "num_hidden_layers": 27,
    "num_key_value_heads": 16,
    "pretraining_tp": 1,
    "q_lora_rank": None,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 10000,
    "routed_scaling_factor": 1.0,
    "scoring_func": "softmax",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 1,
    "topk_method": "greedy",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.39.3",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 102400,
}

FP8_QUANT_CONFIG = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                    "weight_block_size": [128, 128]}

TORCH_DTYPE = {"bf16": "bfloat16", "f32": "float32", "f16": "float16", "fp8": "bfloat16"}
STORE = {"bf16": "BF16", "f32": "F32", "f16": "F16", "fp8": "BF16"}

CHUNK_ELEMS = 1 << 24  # rows are generated and written in chunks of about this many values

# --script (see the module docstring)
SCRIPT_EMBED = 10.0  # a chain token's embedding: SCRIPT_EMBED * one-hot
SCRIPT_MARGIN = 24.0  # the successor's logit; every other logit stays within ~1 of zero
SCRIPT_MIN_MARGIN = 20.0  # what the reference forward must confirm
SCRIPT_LAYER_SCALE = 0.1  # decoder Linear weights N(0,1) * SCRIPT_LAYER_SCALE / sqrt(fan_in)
SCRIPT_EMBED_STD = 0.1  # embedding rows of tokens outside the chain
SCRIPT_HEAD_STD = 0.02  # lm_head rows of tokens that are no chain token's successor
R1_GENERATION_PROMPT = "<｜Assistant｜><think>\n"
SAMPLE_R1_PROMPT = "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?" + R1_GENERATION_PROMPT
# --fim-script: a chain that starts at the end of a fill-in-the-middle prompt.
FIM_GENERATION_PROMPT = "<｜fim▁end｜>"
# --tool-script: a chain that starts where a forced function call opens (tool_choice required).
TOOL_GENERATION_PROMPT = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>"
SAMPLE_TOOL_PROMPT = SAMPLE_R1_PROMPT + "\n</think>\n\n" + TOOL_GENERATION_PROMPT
SAMPLE_FIM_PROMPT = ("<｜begin▁of▁sentence｜><｜fim▁begin｜>def add(a, b):\n<｜fim▁hole｜>\n"
                     + FIM_GENERATION_PROMPT)
CHAT_FIXTURES = os.path.join(REPO, "tests", "fixtures", "tokenizer", "chat_cases.json")

# Prints, for a JSON list of texts on stdin, the JSON list of their token ids (no special tokens
# added) from the reference tokenizer. argv: node_modules dir, tokenizer dir.
ENCODE_JS = """
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
const [modules, dir] = process.argv.slice(1);
const lib = join(modules, "@lenml", "tokenizers", "dist", "main.mjs");
const { TokenizerLoader } = await import(pathToFileURL(lib).href);
const read = (f) => JSON.parse(readFileSync(join(dir, f), "utf8"));
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: read("tokenizer.json"), tokenizerConfig: read("tokenizer_config.json") });
const texts = JSON.parse(readFileSync(0, "utf8"));
const ids = texts.map((t) => tok.encode(t, { add_special_tokens: false }));
process.stdout.write(JSON.stringify(ids));
"""


def encode_with_reference(texts, tokenizer_dir):
    modules = os.environ.get("WHALE_NODE_MODULES", os.path.join(REPO, ".deps", "node_modules"))
    try:
        r = subprocess.run(["node", "--input-type=module", "-e", ENCODE_JS, modules, tokenizer_dir],
                           input=json.dumps(texts), capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit("--script: `node` is needed to run the reference tokenizer")
    if r.returncode != 0:
        raise SystemExit(f"--script: the reference tokenizer failed (node_modules {modules}):\n"
                         f"{r.stderr.strip()}")
    return json.loads(r.stdout)


class Script:
    """The bigram chains of --script / --fim-script: each chain starts at the last token of its
    generation prompt (R1 chat or FIM) and goes on with its script's tokens; chain token i (over all
    chains) maps to hidden dimension i and its successor (the next token of its chain, EOS after the
    last) gets lm_head row SCRIPT_MARGIN / sqrt(H) * e_i."""

    def __init__(self, parts, tokenizer_dir, c):
        """parts: list of (after, text), after "r1", "fim" or "tool"."""
        H, eos = c["hidden_size"], c["eos_token_id"]
        if c.get("tie_word_embeddings"):
            raise SystemExit("--script needs separate lm_head weights (tie_word_embeddings false)")
        self.chain, self.successors, self.checks = [], [], []  # checks: (prompt ids, script ids)
        seen = {}
        for after, text in parts:
            if not text:
                raise SystemExit("--script: the script is empty")
            sample, generation = {
                "r1": (SAMPLE_R1_PROMPT, R1_GENERATION_PROMPT),
                "fim": (SAMPLE_FIM_PROMPT, FIM_GENERATION_PROMPT),
                "tool": (SAMPLE_TOOL_PROMPT, TOOL_GENERATION_PROMPT)}[after]
            prompt, gen, ids = encode_with_reference([sample, generation, text], tokenizer_dir)
            start = gen[-1]
            if prompt[-1] != start:
                raise SystemExit("--script: the generation prompt does not end with one fixed token")
            chain = [start] + ids
            for pos, tok in enumerate(chain):
                if tok in seen:
                    raise SystemExit(f"--script: token {pos} (id {tok}) of the {after} script "
                                     f"repeats {seen[tok]}; a bigram chain needs distinct tokens, "
                                     f"reword the script")
                seen[tok] = f"token {pos} of the {after} script" if pos else \
                    "the generation prompt's last token"
            self.chain += chain
            self.successors += chain[1:] + [eos]
            self.checks.append((prompt, ids))
        if eos in seen:
            raise SystemExit("--script: the script contains the EOS token")
        if len(self.chain) > H:
            raise SystemExit(f"--script: {len(self.chain)} chain tokens need hidden_size >= "
                             f"{len(self.chain)} (it is {H})")
        self.ids = [t for _, ids in self.checks for t in ids]
        self.config = c
        self.head_value = SCRIPT_MARGIN / math.sqrt(H)

    def init_scale(self, t):
        """-> (mean, std) replacing the default one, or None."""
        if t.source == "model.norm.weight":
            return 1.0, 0.0
        if t.kind == "embed":
            return 0.0, SCRIPT_EMBED_STD
        if t.kind == "head":
            return 0.0, SCRIPT_HEAD_STD
        if t.kind == "linear":
            return 0.0, SCRIPT_LAYER_SCALE / math.sqrt(t.shape[1])
        return None

    def patch(self, t, x, r0):
        """Writes the chain rows into chunk x (rows r0.. of t, flattened to [n, H])."""
        if t.source == "model.embed_tokens.weight":
            rows, value = self.chain, SCRIPT_EMBED
        elif t.source == "lm_head.weight":
            rows, value = self.successors, self.head_value
        else:
            return
        for row in rows:  # EOS succeeds the last token of every chain: zero rows first
            if r0 <= row < r0 + x.shape[0]:
                x[row - r0] = 0.0
        for dim, row in enumerate(rows):
            if r0 <= row < r0 + x.shape[0]:
                x[row - r0, dim] = value

    def verify(self, out_dir):
        """Greedy decoding after the sample prompt with the float64 reference forward must follow
        the chain with at least SCRIPT_MIN_MARGIN logits to spare; returns the smallest margin."""
        from deepseek_ref import DeepseekRef  # torch: only needed here
        from dense_ref import DenseRef
        ref = DenseRef(out_dir) if dense_arch(self.config) else DeepseekRef(out_dir)
        margins = []
        for prompt, ids in self.checks:
            logits = ref.forward_logits(prompt + ids)
            first = len(prompt) - 1
            for k, want in enumerate(ids + [self.config["eos_token_id"]]):
                row = logits[first + k].clone()
                best = float(row[want])
                row[want] = -math.inf
                margins.append(best - float(row.max()))
                if margins[-1] < SCRIPT_MIN_MARGIN:
                    raise SystemExit(f"--script: the reference forward gives token {want} a "
                                     f"margin of only {margins[-1]:.2f} at step {k} (need "
                                     f"{SCRIPT_MIN_MARGIN}); the layers are too strong for this "
                                     f"config")
        return min(margins)

    template = "r1"  # the chat template written with the tokenizer (ContextScript: r1 or v31)

    def write_tokenizer(self, tokenizer_dir, out_dir):
        """tokenizer.json as is; tokenizer_config.json with the script's chat template (the
        DeepSeek-R1 one, or V3.1's)."""
        shutil.copyfile(os.path.join(tokenizer_dir, "tokenizer.json"),
                        os.path.join(out_dir, "tokenizer.json"))
        with open(os.path.join(tokenizer_dir, "tokenizer_config.json")) as f:
            config = json.load(f)
        with open(CHAT_FIXTURES) as f:
            config["chat_template"] = json.load(f)["templates"][self.template]
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)
            f.write("\n")


# --context (see the module docstring): chains whose next token depends on the previous token too
# and on whether the phase marker has been seen, built into layer 0's attention.
CTX_EMBED = 10.0  # a context token's embedding: CTX_EMBED * (its one-hot + the constant dimension)
CTX_FEATURE = 10.0  # the previous-token and phase features layer 0 writes into the residual
CTX_PREV_PEAK = 120.0  # head 0's attention logit at distance 1 (every other distance: well below)
CTX_PHASE_PEAK = 30.0  # head 1's attention logit on a marker token (0 elsewhere)
CTX_MARGIN = 28.0  # one feature's share of the right logit (noise takes some: SCRIPT_MIN_MARGIN)
CTX_MARKER = "\t"  # the phase marker: a token the prompts do not contain (between parallel calls)
# Generation prompts per (template, chain): the sample prompt the reference forward checks, and the
# text the chain starts after (its last two tokens give the first state).
SAMPLE_V31_USER = "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?"
SAMPLE_HISTORY_CALL = ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
                       "```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
                       "<｜end▁of▁sentence｜>")
CTX_PROMPTS = {
    ("r1", "r1"): (SAMPLE_R1_PROMPT, R1_GENERATION_PROMPT),
    ("r1", "fim"): (SAMPLE_FIM_PROMPT, FIM_GENERATION_PROMPT),
    ("r1", "tool"): (SAMPLE_TOOL_PROMPT, TOOL_GENERATION_PROMPT),
    ("r1", "after_tools"): (
        "<｜begin▁of▁sentence｜><｜User｜>Weather?<｜Assistant｜>" + SAMPLE_HISTORY_CALL +
        "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18C<｜tool▁output▁end｜><｜tool▁outputs▁end｜>",
        "<｜tool▁output▁end｜><｜tool▁outputs▁end｜>"),
    ("v31", "r1"): (SAMPLE_V31_USER + "<｜Assistant｜><think>", "<｜Assistant｜><think>"),
    ("v31", "answer"): (SAMPLE_V31_USER + "<｜Assistant｜></think>", "<｜Assistant｜></think>"),
    ("v31", "fim"): (SAMPLE_FIM_PROMPT, FIM_GENERATION_PROMPT),
    ("v31", "tool"): (SAMPLE_V31_USER + "<｜Assistant｜></think>" + TOOL_GENERATION_PROMPT,
                      TOOL_GENERATION_PROMPT),
    ("v31", "after_tools"): (
        SAMPLE_V31_USER + "<｜Assistant｜></think><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>"
        "get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
        "<｜end▁of▁sentence｜><｜tool▁output▁begin｜>18C<｜tool▁output▁end｜>",
        "<｜tool▁output▁end｜>"),
}


def with_think_tokens(tokenizer_dir):
    """-> a temporary copy of the V3 tokenizer whose placeholders 128798 / 128799 are "<think>" /
    "</think>" (not special), as in the DeepSeek-R1 and V3.1 releases' tokenizer.json."""
    import atexit
    import tempfile
    out = tempfile.mkdtemp(prefix="whale-think-tok-")
    atexit.register(shutil.rmtree, out, True)
    with open(os.path.join(tokenizer_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    names = {128798: "<think>", 128799: "</think>"}
    for a in tok["added_tokens"]:
        if a["id"] in names:
            if not a["content"].startswith("<｜place▁holder▁no▁"):
                raise SystemExit(f"--template v31: token {a['id']} is {a['content']!r}, not a "
                                 "placeholder")
            old = a["content"]
            a["content"], a["special"] = names[a["id"]], False
            tok["model"]["vocab"].pop(old, None)
            tok["model"]["vocab"][a["content"]] = a["id"]
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    shutil.copyfile(os.path.join(tokenizer_dir, "tokenizer_config.json"),
                    os.path.join(out, "tokenizer_config.json"))
    return out


class ContextScript(Script):
    """The chains of --context: a state is (previous token, current token, phase), phase = whether
    the marker token has been generated yet. Layer 0's attention computes both: head 0 attends to
    the previous position (constant RoPE query and key, the key turned back by one position's
    angle, so the score peaks at distance 1) and copies that token's one-hot into the
    previous-token dimensions; head 1 attends to marker tokens (a content key) and writes the phase
    dimension. lm_head row of the next token of state (p, t, ph): u * (e_t + e'_p + f_ph) (f_1 =
    const - phase, f_2 = phase), or 3u * e_t when every state of t has the same next token."""

    def __init__(self, parts, tokenizer_dir, c, template):
        H, eos = c["hidden_size"], c["eos_token_id"]
        if c.get("tie_word_embeddings"):
            raise SystemExit("--script needs separate lm_head weights (tie_word_embeddings false)")
        if dense_arch(c) or c.get("q_lora_rank") is None:
            raise SystemExit("--context needs an MLA config with q_lora_rank")
        if c.get("rope_scaling"):
            raise SystemExit("--context needs a config without rope_scaling")
        if c["num_attention_heads"] < 2:
            raise SystemExit("--context needs at least 2 attention heads")
        self.template, self.config = template, c
        if template == "v31":
            tokenizer_dir = with_think_tokens(tokenizer_dir)
        self.tokenizer_dir = tokenizer_dir
        texts = []
        for after, text in parts:
            if (template, after) not in CTX_PROMPTS:
                raise SystemExit(f"--context: no {after} chain with the {template} template")
            if not text:
                raise SystemExit(f"--context: the {after} script is empty")
            texts += list(CTX_PROMPTS[(template, after)]) + [text]
        encoded = encode_with_reference(texts + [CTX_MARKER], tokenizer_dir)
        marker = encoded[-1]
        if len(marker) != 1:
            raise SystemExit("--context: the marker is not one token")
        self.marker = marker[0]
        states = {}  # (prev, cur, phase) -> next
        self.checks = []
        for k, (after, _) in enumerate(parts):
            prompt, gen, ids = encoded[3 * k: 3 * k + 3]
            if prompt[-len(gen):] != gen:
                raise SystemExit(f"--context: the {after} sample prompt does not end with its "
                                 "generation prompt's tokens")
            if self.marker in prompt:
                raise SystemExit(f"--context: the {after} sample prompt contains the marker")
            seq = gen + ids + [eos]
            phase = False
            for i in range(len(gen) - 1, len(seq) - 1):
                phase = phase or seq[i] == self.marker
                key = (seq[i - 1] if i > 0 else None, seq[i], phase)
                if states.get(key, seq[i + 1]) != seq[i + 1]:
                    raise SystemExit(f"--context: the {after} script needs more context: after "
                                     f"tokens {key[0]}, {key[1]} (phase {int(phase)}) come both "
                                     f"{states[key]} and {seq[i + 1]}; reword it")
                states[key] = seq[i + 1]
            self.checks.append((prompt, ids))
        if any(t == eos for _, ids in self.checks for t in ids):
            raise SystemExit("--script: the script contains the EOS token")
        nexts = {}
        for (p, t, ph), s in states.items():
            nexts.setdefault(t, set()).add(s)
        self.unique = {t for t, s in nexts.items() if len(s) == 1}
        for (p, t, ph), s in states.items():
            if p is None and t not in self.unique:
                raise SystemExit(f"--context: token {t} starts a chain with no known previous "
                                 "token but is followed by different tokens elsewhere")
        tokens = sorted({t for _, t, _ in states} | {p for p, _, _ in states if p is not None})
        self.index = {t: i for i, t in enumerate(tokens)}
        N = len(tokens)
        self.n, self.const, self.phase_dim = N, 2 * N, 2 * N + 1
        if 2 * N + 2 > H or N > c["kv_lora_rank"] or N > c["v_head_dim"]:
            raise SystemExit(f"--context: {N} context tokens need hidden_size >= {2 * N + 2}, "
                             f"kv_lora_rank >= {N} and v_head_dim >= {N}")
        self.states = states
        self.chain = tokens  # for the summary line
        self.ids = [t for _, ids in self.checks for t in ids]
        self.head_rows = self.lm_head_rows()

    def lm_head_rows(self):
        H = self.config["hidden_size"]
        u = CTX_MARGIN / math.sqrt(H / 4)  # one feature's logit when all four are present
        rows = {}
        phases = {}
        for (p, t, ph), s in self.states.items():
            row = rows.setdefault(s, np.zeros(H, dtype=np.float32))
            if t in self.unique:
                row[self.index[t]] = 3 * u
                continue
            row[self.index[t]] = u
            row[self.n + self.index[p]] = u
            phases.setdefault(s, set()).add(ph)
        for s, phs in phases.items():  # u * f_ph summed over the phases of s
            if False in phs:
                rows[s][self.const] += u
                rows[s][self.phase_dim] -= u
            if True in phs:
                rows[s][self.phase_dim] += u
        # The additive rows must still rank the right token first in every state.
        for (p, t, ph), s in self.states.items():
            x = np.zeros(H, dtype=np.float32)
            x[[self.index[t], self.const]] = 1
            if p is not None:
                x[self.n + self.index[p]] = 1
            x[self.phase_dim] = float(ph)
            score = {k: float(r @ x) for k, r in rows.items()}
            best = max((v for k, v in score.items() if k != s), default=0.0)
            if score[s] - best < 0.9 * u:
                raise SystemExit(f"--context: after tokens {p}, {t} (phase {int(ph)}) token "
                                 f"{s} does not stand out from the others; reword the script")
        return rows

    def init_scale(self, t):
        if t.source.startswith("model.layers.0.self_attn."):
            return (1.0, 0.0) if t.kind == "norm" else (0.0, 0.0)
        if t.source == "model.layers.0.input_layernorm.weight":
            return 1.0, 0.0
        return Script.init_scale(self, t)

    def patch(self, t, x, r0):
        """Writes this chunk's part of the constructed tensors (x: rows r0.. of t, [n, cols])."""
        n = x.shape[0]
        if t.source == "model.embed_tokens.weight":
            for tok, i in self.index.items():
                if r0 <= tok < r0 + n:
                    x[tok - r0] = 0.0
                    x[tok - r0, [i, self.const]] = CTX_EMBED
        elif t.source == "lm_head.weight":
            for tok, row in self.head_rows.items():
                if r0 <= tok < r0 + n:
                    x[tok - r0] = row
        else:
            full = self.constructed(t)
            if full is not None:
                x[:] = full[r0:r0 + n].reshape(x.shape)

    def write_tokenizer(self, tokenizer_dir, out_dir):
        """As Script's, from the tokenizer read (V3.1: the copy with its think tokens)."""
        Script.write_tokenizer(self, self.tokenizer_dir, out_dir)

    def constructed(self, t):
        c, N = self.config, self.n
        H = c["hidden_size"]
        a = "model.layers.0.self_attn."
        names = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")
        if not any(t.source == a + n + ".weight" for n in names):
            return None
        nh, nope, rope, vd = (c["num_attention_heads"], c["qk_nope_head_dim"],
                              c["qk_rope_head_dim"], c["v_head_dim"])
        ql, kl = c["q_lora_rank"], c["kv_lora_rank"]
        scale = (nope + rope) ** -0.5
        theta = float(c.get("rope_theta", 10000.0))
        inv_freq = [theta ** (-2 * j / rope) for j in range(rope // 2)]
        amp = math.sqrt(CTX_PREV_PEAK / (scale * (rope // 2)))  # per RoPE pair
        kq = math.sqrt(CTX_PHASE_PEAK / scale)
        x_const = math.sqrt(H / 2)  # layer 0's normalized input on the constant dimension
        w = np.zeros(t.shape, dtype=np.float32)
        name = t.source[len(a):-len(".weight")]
        if name == "q_a_proj":  # latent = the constant dimension (RMS-normed: sqrt(ql) e_0)
            w[0, self.const] = 1.0
        elif name == "q_b_proj":
            for j in range(rope // 2):  # head 0: q_pe = amp on every pair's real part
                w[nope + 2 * j, 0] = amp / math.sqrt(ql)
            w[(nope + rope) + 0, 0] = kq / math.sqrt(ql)  # head 1: q_nope[0] = kq
        elif name == "kv_a_proj_with_mqa":
            for i in range(N):  # the latent copies the context tokens' one-hots
                w[i, i] = 1.0
            for j in range(rope // 2):  # k_pe = amp * e^{i theta_j}: turned back one position
                w[kl + 2 * j, self.const] = amp * math.cos(inv_freq[j]) / x_const
                w[kl + 2 * j + 1, self.const] = amp * math.sin(inv_freq[j]) / x_const
        elif name == "kv_b_proj":
            for i in range(N):  # head 0: v_i = 1 for context token i
                w[nope + i, i] = 1.0 / math.sqrt(kl)
            m = self.index.get(self.marker)
            if m is not None:  # head 1: k_nope[0] = kq and v_0 = 1 for the marker
                w[(nope + vd) + 0, m] = kq / math.sqrt(kl)
                w[(nope + vd) + nope + 0, m] = 1.0 / math.sqrt(kl)
        elif name == "o_proj":
            for i in range(N):
                w[N + i, i] = CTX_FEATURE  # head 0 -> previous-token dimensions
            w[self.phase_dim, vd + 0] = CTX_FEATURE  # head 1 -> phase dimension
        return w


QWEN2_DEFAULTS = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
    "initializer_range": 0.02, "max_position_embeddings": 131072, "max_window_layers": 21,
    "rms_norm_eps": 1e-06, "rope_theta": 10000, "sliding_window": 4096,
    "tie_word_embeddings": False, "use_cache": True, "use_sliding_window": False,
}

LLAMA_DEFAULTS = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
    "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": 128001,
    "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 131072,
    "mlp_bias": False, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "tie_word_embeddings": False, "use_cache": True,
}


def dense_arch(c):
    """'qwen2', 'llama' or None (DeepSeek)."""
    a = (c.get("architectures") or [""])[0]
    if a == "Qwen2ForCausalLM" or c.get("model_type") == "qwen2":
        return "qwen2"
    if a == "LlamaForCausalLM" or c.get("model_type") == "llama":
        return "llama"
    return None


def complete_config(user, dtype):
    dense = dense_arch(user)
    if dense:
        if dtype == "fp8":
            raise SystemExit("--dtype fp8 is DeepSeek-V3's format; the dense models ship BF16")
        config = dict(QWEN2_DEFAULTS if dense == "qwen2" else LLAMA_DEFAULTS)
        config.update(user)
        config["torch_dtype"] = TORCH_DTYPE[dtype]
        return dict(sorted(config.items()))
    v2 = user.get("model_type") == "deepseek_v2" or (
        user.get("architectures") or [""])[0].startswith("DeepseekV2")
    config = dict(V2_DEFAULTS if v2 else V3_DEFAULTS)
    config.update(user)
    config["torch_dtype"] = TORCH_DTYPE[dtype]
    config.pop("quantization_config", None)
    if dtype == "fp8":
        config["quantization_config"] = dict(FP8_QUANT_CONFIG)
    return dict(sorted(config.items()))


def is_moe_layer(c, i):
    return (c.get("n_routed_experts") is not None and i >= c["first_k_dense_replace"]
            and i % c["moe_layer_freq"] == 0)


class T:
    """One tensor to write: name, shape, init kind, whether it is a Linear weight inside a layer
    (FP8 candidate), and the name whose generator it uses (MTP copies share the main tensors')."""

    def __init__(self, name, shape, kind, linear=False, source=None):
        self.name, self.shape, self.kind, self.linear = name, tuple(shape), kind, linear
        self.source = source or name


def dense_layer_tensors(c, i):
    p = f"model.layers.{i}."
    H, nh = c["hidden_size"], c["num_attention_heads"]
    nkv = c.get("num_key_value_heads", nh)
    hd = c.get("head_dim") or H // nh
    qkv_bias = dense_arch(c) == "qwen2" or c.get("attention_bias", False)
    o_bias = dense_arch(c) == "llama" and c.get("attention_bias", False)
    a = p + "self_attn."
    out = [T(p + "input_layernorm.weight", [H], "norm")]
    for name, rows in (("q_proj", nh * hd), ("k_proj", nkv * hd), ("v_proj", nkv * hd)):
        out.append(T(a + name + ".weight", [rows, H], "linear", True))
        if qkv_bias:
            out.append(T(a + name + ".bias", [rows], "attn_bias"))
    out.append(T(a + "o_proj.weight", [H, nh * hd], "linear", True))
    if o_bias:
        out.append(T(a + "o_proj.bias", [H], "attn_bias"))
    out.append(T(p + "post_attention_layernorm.weight", [H], "norm"))
    inter = c["intermediate_size"]
    out += [T(p + "mlp.gate_proj.weight", [inter, H], "linear", True),
            T(p + "mlp.up_proj.weight", [inter, H], "linear", True),
            T(p + "mlp.down_proj.weight", [H, inter], "linear", True)]
    return out


def layer_tensors(c, i):
    if dense_arch(c):
        return dense_layer_tensors(c, i)
    p = f"model.layers.{i}."
    H, nh = c["hidden_size"], c["num_attention_heads"]
    nope, rope, vd = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    out = [T(p + "input_layernorm.weight", [H], "norm")]
    a = p + "self_attn."
    if c.get("q_lora_rank") is None:
        out.append(T(a + "q_proj.weight", [nh * (nope + rope), H], "linear", True))
    else:
        q = c["q_lora_rank"]
        out += [T(a + "q_a_proj.weight", [q, H], "linear", True),
                T(a + "q_a_layernorm.weight", [q], "norm"),
                T(a + "q_b_proj.weight", [nh * (nope + rope), q], "linear", True)]
    r = c["kv_lora_rank"]
    out += [T(a + "kv_a_proj_with_mqa.weight", [r + rope, H], "linear", True),
            T(a + "kv_a_layernorm.weight", [r], "norm"),
            T(a + "kv_b_proj.weight", [nh * (nope + vd), r], "linear", True),
            T(a + "o_proj.weight", [H, nh * vd], "linear", True),
            T(p + "post_attention_layernorm.weight", [H], "norm")]
    m = p + "mlp."

    def mlp(prefix, inter):
        return [T(prefix + "gate_proj.weight", [inter, H], "linear", True),
                T(prefix + "up_proj.weight", [inter, H], "linear", True),
                T(prefix + "down_proj.weight", [H, inter], "linear", True)]

    if is_moe_layer(c, i):
        E, mi = c["n_routed_experts"], c["moe_intermediate_size"]
        out.append(T(m + "gate.weight", [E, H], "router"))
        if c.get("topk_method") == "noaux_tc":
            out.append(T(m + "gate.e_score_correction_bias", [E], "bias"))
        for j in range(E):
            out += mlp(f"{m}experts.{j}.", mi)
        if c.get("n_shared_experts"):
            out += mlp(m + "shared_experts.", mi * c["n_shared_experts"])
    else:
        out += mlp(m, c["intermediate_size"])
    if i >= c["num_hidden_layers"]:  # MTP module
        V = c["vocab_size"]
        out += [T(p + "embed_tokens.weight", [V, H], "embed", source="model.embed_tokens.weight"),
                T(p + "enorm.weight", [H], "norm"),
                T(p + "hnorm.weight", [H], "norm"),
                T(p + "eh_proj.weight", [H, 2 * H], "linear", True),
                T(p + "shared_head.norm.weight", [H], "norm"),
                # with tied embeddings the output head is the embedding matrix
                T(p + "shared_head.head.weight", [V, H],
                  "embed" if c.get("tie_word_embeddings") else "head",
                  source="model.embed_tokens.weight" if c.get("tie_word_embeddings")
                  else "lm_head.weight")]
    return out


def model_tensors(c):
    V, H = c["vocab_size"], c["hidden_size"]
    out = [T("model.embed_tokens.weight", [V, H], "embed")]
    n_layers = c["num_hidden_layers"] + c.get("num_nextn_predict_layers", 0)
    for i in range(n_layers):
        out += layer_tensors(c, i)
    out.append(T("model.norm.weight", [H], "norm"))
    if not c.get("tie_word_embeddings", False):
        out.append(T("lm_head.weight", [V, H], "head"))
    return out


def storage_specs(tensors, dtype):
    """-> list of (name, st_dtype, shape) in file order (FP8 weights followed by their scales)."""
    specs = []
    for t in tensors:
        if dtype == "fp8" and t.linear:
            rows, cols = t.shape
            specs.append((t.name, "F8_E4M3", t.shape))
            specs.append((t.name + "_scale_inv", "F32", (math.ceil(rows / 128),
                                                         math.ceil(cols / 128))))
        elif t.kind == "bias":
            specs.append((t.name, "F32", t.shape))
        else:
            specs.append((t.name, STORE[dtype], t.shape))
    return specs


def init_scale(t, c, std, script=None):
    """-> (mean, std) of the normal distribution the tensor is drawn from."""
    H = c["hidden_size"]
    if script is not None and script.init_scale(t) is not None:
        return script.init_scale(t)
    if t.kind == "norm":
        return 1.0, 0.1
    if t.kind == "bias":
        return 0.0, 0.1
    if t.kind == "attn_bias":  # Qwen2's q/k biases are large in the releases: keep them visible
        return 0.0, 0.5
    if t.kind == "embed":
        # A tied embedding is also the output head: keep it small so logits stay O(1-10) and the
        # current token's own embedding (still in the residual) does not dominate its logits.
        return 0.0, (1.0 / math.sqrt(H) if c.get("tie_word_embeddings") else 1.0)
    if t.kind == "head":
        return 0.0, (std if std is not None else 2.5 / math.sqrt(H))
    if t.kind == "router":
        return 0.0, 1.0 / math.sqrt(H)
    return 0.0, (std if std is not None else 1.0 / math.sqrt(t.shape[1]))


def generate_chunks(t, c, seed, std, tiny_frac, row_multiple, script=None):
    """Yields f32 row chunks of tensor t (deterministic in (seed, t.source))."""
    rng = np.random.default_rng([seed, zlib.crc32(t.source.encode())])
    mean, sd = init_scale(t, c, std, script)
    rows = t.shape[0]
    cols = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
    step = max(1, CHUNK_ELEMS // cols)
    step = max(row_multiple, step // row_multiple * row_multiple)
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        x = rng.standard_normal((n, cols), dtype=np.float32)
        x *= np.float32(sd)
        x += np.float32(mean)
        if tiny_frac > 0 and t.linear:
            tiny = rng.random((n, cols)) < tiny_frac
            x[tiny] *= np.float32(1e-4)
        if script is not None:
            script.patch(t, x, r0)
        yield x.reshape((n,) + t.shape[1:])


def write_tensor(writer, t, c, dtype, seed, std, tiny_frac, script=None):
    if dtype == "fp8" and t.linear:
        scales = []
        for chunk in generate_chunks(t, c, seed, std, tiny_frac, 128, script):
            codes, s = sio.fp8_block_quantize(chunk)
            writer.write(t.name, codes)
            scales.append(s)
        writer.write(t.name + "_scale_inv", np.concatenate(scales, axis=0))
        return
    st = "F32" if t.kind == "bias" else STORE[dtype]
    for chunk in generate_chunks(t, c, seed, std, tiny_frac, 1, script):
        writer.write(t.name, sio.encode(chunk, st))


def generate(user_config, out_dir, dtype="bf16", shards=1, seed=0, std=None, tiny_frac=0.0,
             tokenizer=None, verbose=True, script_text=None, fim_script_text=None,
             tool_script_text=None, after_tools_script_text=None, answer_script_text=None,
             context=False, template="r1"):
    """Writes the model; returns (config dict, list of (name, st_dtype, shape)). script_text,
    fim_script_text, tool_script_text, after_tools_script_text, answer_script_text, context,
    template: see --script, --fim-script, --tool-script, --after-tools-script, --answer-script,
    --context and --template."""
    if dtype not in STORE:
        raise ValueError(f"--dtype must be one of {sorted(STORE)}")
    c = complete_config(user_config, dtype)
    script = None
    parts = [(a, t) for a, t in (("r1", script_text), ("fim", fim_script_text),
                                 ("tool", tool_script_text),
                                 ("after_tools", after_tools_script_text),
                                 ("answer", answer_script_text)) if t is not None]
    if not context and (template != "r1" or after_tools_script_text or answer_script_text):
        raise SystemExit("--template, --after-tools-script and --answer-script need --context")
    if parts:
        if not tokenizer:
            raise SystemExit("--script needs --tokenizer")
        if std is not None:
            raise SystemExit("--script sets its own weight scales; drop --std")
        script = ContextScript(parts, tokenizer, c, template) if context else \
            Script(parts, tokenizer, c)
    os.makedirs(out_dir, exist_ok=True)
    for old in os.listdir(out_dir):  # never leave stale shards / index behind
        if old.endswith(".safetensors") or old == "model.safetensors.index.json":
            os.remove(os.path.join(out_dir, old))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
        f.write("\n")
    tensors = model_tensors(c)
    by_name = {t.name: t for t in tensors}
    specs = storage_specs(tensors, dtype)
    groups = sio.plan_shards(specs, shards)
    t0 = time.time()
    for gi, group in enumerate(groups):
        fn = "model.safetensors" if shards <= 1 else sio.shard_file_name(gi, len(groups))
        writer = sio.SafetensorsWriter(os.path.join(out_dir, fn), group, {"format": "pt"})
        for name, _, _ in group:
            if name in by_name:  # scale_inv specs are written together with their weight
                write_tensor(writer, by_name[name], c, dtype, seed, std, tiny_frac, script)
        writer.close()
    if shards > 1:
        sio.write_index(out_dir, groups)
    if script is not None:
        script.write_tokenizer(tokenizer, out_dir)
    elif tokenizer:
        for fn in ("tokenizer.json", "tokenizer_config.json"):
            src = os.path.join(tokenizer, fn)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(out_dir, fn))
    if verbose:
        n_params = sum(int(np.prod(t.shape)) for t in tensors)
        n_bytes = sum(sio.nbytes(d, s) for _, d, s in specs)
        print(f"{out_dir}: {len(specs)} tensors, {n_params / 1e6:.2f}M params, "
              f"{n_bytes / 2**20:.2f} MiB, {len(groups)} file(s), {time.time() - t0:.1f}s")
    if script is not None:
        margin = script.verify(out_dir)
        if verbose:
            print(f"{out_dir}: script of {len(script.ids)} tokens (chains "
                  f"{' '.join(map(str, script.chain))}, each -> eos), smallest greedy logit margin "
                  f"{margin:.2f} (reference forward)")
    return c, specs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="JSON file with HF config fields")
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--dtype", default="bf16", choices=sorted(STORE))
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=None,
                    help="std of Linear weights and lm_head (default: 1/sqrt(fan_in), lm_head "
                         "2.5/sqrt(hidden))")
    ap.add_argument("--tiny-frac", type=float, default=0.0,
                    help="fraction of Linear weight entries scaled by 1e-4")
    ap.add_argument("--tokenizer", default=None,
                    help="directory with tokenizer.json / tokenizer_config.json to copy")
    ap.add_argument("--script", default=None,
                    help="text file: make a scripted R1 model whose greedy answer is this text")
    ap.add_argument("--fim-script", default=None,
                    help="text file: the scripted model's greedy answer to a fill-in-the-middle "
                         "prompt (the middle); with or without --script")
    ap.add_argument("--tool-script", default=None,
                    help="text file: the scripted model's continuation of a forced function call "
                         "(after <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>)")
    ap.add_argument("--after-tools-script", default=None,
                    help="text file (--context): the answer after tool outputs")
    ap.add_argument("--answer-script", default=None,
                    help="text file (--context, --template v31): the answer in non-thinking mode")
    ap.add_argument("--context", action="store_true",
                    help="scripts may repeat tokens: layer 0's attention gives each step the "
                         "previous token and whether a tab has been generated")
    ap.add_argument("--template", default="r1", choices=["r1", "v31"],
                    help="the scripted model's chat template (v31 needs --context)")
    args = ap.parse_args()
    with open(args.config) as f:
        user = json.load(f)
    def read_script(path):
        if path is None:
            return None
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return text[:-1] if text.endswith("\n") else text
    generate(user, args.out, args.dtype, args.shards, args.seed, args.std, args.tiny_frac,
             args.tokenizer, script_text=read_script(args.script),
             fim_script_text=read_script(args.fim_script),
             tool_script_text=read_script(args.tool_script),
             after_tools_script_text=read_script(args.after_tools_script),
             answer_script_text=read_script(args.answer_script),
             context=args.context, template=args.template)


if __name__ == "__main__":
    main()
