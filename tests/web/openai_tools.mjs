#!/usr/bin/env node
// Parallel function calls and DeepSeek-V3.1's hybrid thinking through the official `openai` npm
// client, against `whale serve` on two scripted models made by scripts/gen_model.py --context
// (layer 0's attention gives every step the previous token and a phase, so a script may repeat
// tokens, as two calls do):
//   --model DIR      the R1 template: a forced call is answered with two calls in the V3 / R1
//                    layout (tests/configs/scripted-tools-calls.txt), tool outputs with
//                    scripted-tools-answer.txt, anything else with scripted-tools-r1.txt;
//   --v31-model DIR  the V3.1 template and tokenizer: scripted-v31-answer.txt in non-thinking
//                    mode, scripted-v31-think.txt in thinking mode, two calls in the V3.1 layout
//                    (scripted-v31-calls.txt), scripted-tools-answer.txt after tool outputs.
//
//   node tests/web/openai_tools.mjs --whale BIN --model DIR --v31-model DIR --out ARTIFACT_DIR
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { artifactDir, importDep, ok, parseArgs, repo, run, splitReasoning, startServer } from "./lib.mjs";

const { default: OpenAI } = await importDep("openai", "index.mjs");

/** A script as gen_model.py reads it (one trailing newline dropped). */
const script = (name) =>
  readFileSync(join(repo, "tests", "configs", name), "utf8").replace(/\n$/, "");

const tool = (name, properties) => ({
  type: "function",
  function: { name, description: `${name} tool`, parameters: { type: "object", properties } },
});

/** Streams a request; returns {content, reasoning, calls (by index), frags, finish}. */
async function stream(client, body) {
  const out = { content: "", reasoning: "", frags: [], finish: null };
  for await (const c of await client.chat.completions.create({ ...body, stream: true })) {
    const d = c.choices[0]?.delta ?? {};
    out.content += d.content ?? "";
    out.reasoning += d.reasoning_content ?? "";
    for (const f of d.tool_calls ?? []) out.frags.push(f);
    out.finish = c.choices[0]?.finish_reason ?? out.finish;
  }
  // OpenAI's streamed shape: the first fragment of each index has id, type and name, the later
  // ones only argument pieces (never "name": null).
  out.calls = [];
  for (const f of out.frags) {
    if (!out.calls[f.index]) {
      assert.match(f.id ?? "", /^call_/, `first fragment of index ${f.index}: ${JSON.stringify(f)}`);
      assert.equal(f.type, "function");
      assert.equal(typeof f.function?.name, "string", JSON.stringify(f));
      out.calls[f.index] = { id: f.id, name: f.function.name, arguments: f.function.arguments ?? "" };
    } else {
      assert.equal(f.id, undefined, `a later fragment has an id: ${JSON.stringify(f)}`);
      assert.ok(!("name" in (f.function ?? {})), `a later fragment names the function: ${JSON.stringify(f)}`);
      out.calls[f.index].arguments += f.function?.arguments ?? "";
    }
  }
  return out;
}

/** Two calls, as the scripts have them: names and parsed arguments. */
function checkCalls(calls, want, what) {
  assert.equal(calls.length, want.length, `${what}: ${JSON.stringify(calls)}`);
  const ids = new Set();
  calls.forEach((c, i) => {
    const fn = c.function ?? c;
    assert.equal(fn.name, want[i][0], `${what}: call ${i} name`);
    assert.deepEqual(JSON.parse(fn.arguments), want[i][1], `${what}: call ${i} arguments`);
    assert.match(c.id, /^call_/);
    ids.add(c.id);
  });
  assert.equal(ids.size, calls.length, `${what}: call ids are distinct`);
}

async function r1Model(args, out) {
  const server = await startServer({
    whale: args.whale, model: args.model, logFile: join(out, "server-r1.log") });
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
  const model = "whale";
  const tools = [tool("get_weather", { city: { type: "string" } }),
    tool("get_time", { tz: { type: "string" } })];
  const q = [{ role: "user", content: "What is the weather in the French capital, and the time?" }];
  const want = [["get_weather", { city: "Paris" }], ["get_time", { tz: "UTC" }]];
  const forced = { model, messages: q, tools, tool_choice: "required", temperature: 0, max_tokens: 80 };

  const r = await client.chat.completions.create(forced);
  const msg = r.choices[0].message;
  assert.equal(r.choices[0].finish_reason, "tool_calls", JSON.stringify(r));
  assert.equal(msg.content, null);
  checkCalls(msg.tool_calls, want, "R1 forced");
  assert.equal(msg.tool_calls[0].type, "function");
  const s = await stream(client, forced);
  assert.equal(s.finish, "tool_calls");
  assert.equal(s.content, "");
  checkCalls(s.calls, want, "R1 forced, streamed");
  const one = await client.chat.completions.create({ ...forced, parallel_tool_calls: false });
  checkCalls(one.choices[0].message.tool_calls, want.slice(0, 1), "parallel_tool_calls false");
  ok(`R1 template: two calls in the V3 layout (${msg.tool_calls.map((c) => c.function.name)}), ` +
    `streamed in ${s.frags.length} fragments, one with parallel_tool_calls false`);

  // The round trip: both calls and both results go back; the model answers after the outputs.
  const back = await client.chat.completions.create({
    model, tools, temperature: 0, max_tokens: 60,
    messages: [...q, msg, { role: "tool", tool_call_id: msg.tool_calls[0].id, content: "18C" },
      { role: "tool", tool_call_id: msg.tool_calls[1].id, content: "12:00" }],
  });
  assert.equal(back.choices[0].message.content, script("scripted-tools-answer.txt"));
  assert.equal(back.choices[0].message.tool_calls, undefined);
  assert.equal(back.choices[0].finish_reason, "stop");
  // tool_choice auto: this model answers in text, with its reasoning.
  const auto = await client.chat.completions.create({ ...forced, tool_choice: "auto" });
  const split = splitReasoning(script("scripted-tools-r1.txt"));
  assert.equal(auto.choices[0].message.content, split.content);
  assert.equal(auto.choices[0].message.reasoning_content, split.reasoning);
  assert.equal(auto.choices[0].message.tool_calls, undefined);
  ok(`R1 template: round trip answered ${JSON.stringify(back.choices[0].message.content)}; ` +
    "auto answers in text");
  assert.deepEqual(await server.stop(), { code: 0, signal: null });
}

async function v31Model(args, out) {
  const server = await startServer({
    whale: args.whale, model: args["v31-model"], logFile: join(out, "server-v31.log") });
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
  const model = "whale";
  const hi = { model, messages: [{ role: "user", content: "Hi!" }], temperature: 0, max_tokens: 60 };
  const answer = script("scripted-v31-answer.txt");
  const think = splitReasoning(script("scripted-v31-think.txt"));
  assert.equal(think.content, answer);

  // Non-thinking mode by default (V3.1's template), thinking on request.
  const plain = await client.chat.completions.create(hi);
  assert.equal(plain.choices[0].message.content, answer);
  assert.equal(plain.choices[0].message.reasoning_content, undefined);
  assert.equal(plain.usage.completion_tokens_details.reasoning_tokens, 0);
  for (const extra of [{ thinking: { type: "enabled" } }, { model: "deepseek-reasoner" },
    { chat_template_kwargs: { thinking: true } }]) {
    const t = await client.chat.completions.create({ ...hi, ...extra });
    assert.equal(t.choices[0].message.reasoning_content, think.reasoning, JSON.stringify(extra));
    assert.equal(t.choices[0].message.content, answer, JSON.stringify(extra));
    assert.ok(t.usage.completion_tokens_details.reasoning_tokens > 0);
  }
  const off = await client.chat.completions.create({ ...hi, model: "deepseek-reasoner",
    thinking: { type: "disabled" } });
  assert.equal(off.choices[0].message.content, answer);
  const ts = await stream(client, { ...hi, thinking: { type: "enabled" } });
  assert.equal(ts.reasoning, think.reasoning);
  assert.equal(ts.content, answer);
  ok("V3.1 template: non-thinking by default, thinking with `thinking`, deepseek-reasoner or " +
    "chat_template_kwargs (streamed too)");

  const tools = [tool("get_weather", { city: { type: "string" } }), tool("local_time", {})];
  const q = [{ role: "user", content: "What is the weather in the French capital, and the time?" }];
  const want = [["get_weather", { city: "Paris" }], ["local_time", {}]];
  const forced = { model, messages: q, tools, tool_choice: "required", temperature: 0, max_tokens: 80 };
  const r = await client.chat.completions.create(forced);
  const msg = r.choices[0].message;
  assert.equal(r.choices[0].finish_reason, "tool_calls", JSON.stringify(r));
  checkCalls(msg.tool_calls, want, "V3.1 forced");
  const s = await stream(client, forced);
  checkCalls(s.calls, want, "V3.1 forced, streamed");
  assert.equal(s.finish, "tool_calls");
  // Thinking mode: the forced call closes the open think block first.
  const rt = await client.chat.completions.create({ ...forced, thinking: { type: "enabled" } });
  checkCalls(rt.choices[0].message.tool_calls, want, "V3.1 forced, thinking mode");
  const back = await client.chat.completions.create({
    model, tools, temperature: 0, max_tokens: 60,
    messages: [...q, msg, { role: "tool", tool_call_id: msg.tool_calls[0].id, content: "18C" },
      { role: "tool", tool_call_id: msg.tool_calls[1].id, content: "12:00" }],
  });
  assert.equal(back.choices[0].message.content, script("scripted-tools-answer.txt"));
  assert.equal(back.choices[0].finish_reason, "stop");
  ok("V3.1 template: two calls in the V3.1 layout (streamed too, and in thinking mode), round " +
    "trip answered");
  assert.deepEqual(await server.stop(), { code: 0, signal: null });

  // `whale serve --thinking`: thinking unless a request turns it off.
  const thinker = await startServer({ whale: args.whale, model: args["v31-model"],
    extra: ["--thinking"], logFile: join(out, "server-v31-thinking.log") });
  const tc = new OpenAI({ baseURL: `${thinker.url}/v1`, apiKey: "unused", maxRetries: 0 });
  const dflt = await tc.chat.completions.create(hi);
  assert.equal(dflt.choices[0].message.reasoning_content, think.reasoning);
  assert.equal(dflt.choices[0].message.content, answer);
  const offReq = await tc.chat.completions.create({ ...hi, thinking: { type: "disabled" } });
  assert.equal(offReq.choices[0].message.reasoning_content, undefined);
  assert.equal(offReq.choices[0].message.content, answer);
  ok("V3.1 template: serve --thinking thinks by default, a request turns it off");
  assert.deepEqual(await thinker.stop(), { code: 0, signal: null });
}

async function main() {
  const args = parseArgs();
  if (!args["v31-model"]) throw new Error("missing --v31-model");
  const out = artifactDir(args.out, "openai_tools");
  await r1Model(args, out);
  await v31Model(args, out);
  console.log("openai_tools: all checks passed");
}

run(main);
