#!/usr/bin/env node
// The official `@anthropic-ai/sdk` npm client against `whale serve`'s /anthropic/v1/messages route,
// on the scripted R1 model (its greedy answer to any chat is tests/configs/scripted-r1.txt; a
// forced tool call continues with tests/configs/scripted-tool.txt): thinking and text blocks,
// usage, streaming events, stop sequences, max_tokens, tool_use with a tool_result round trip,
// x-api-key authentication and errors in Anthropic's shape.
//
//   node tests/web/anthropic_client.mjs --whale BIN --model DIR --out ARTIFACT_DIR
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  artifactDir,
  importDep,
  loadTokenizer,
  ok,
  parseArgs,
  renderR1,
  run,
  scriptText,
  splitReasoning,
  startServer,
} from "./lib.mjs";

const { default: Anthropic } = await importDep("@anthropic-ai/sdk", "index.mjs");

const KEY = "sk-whale-anthropic-key";

async function main() {
  const args = parseArgs();
  const out = artifactDir(args.out, "anthropic_client");
  const tok = await loadTokenizer(args.model);
  const script = scriptText();
  const want = splitReasoning(script);
  const server = await startServer({
    whale: args.whale,
    model: args.model,
    extra: ["--api-key", KEY],
    logFile: join(out, "server.log"),
  });
  const client = new Anthropic({
    apiKey: KEY,
    baseURL: `${server.url}/anthropic`,
    maxRetries: 0,
    timeout: 120000,
  });
  const model = args.modelId;
  const system = "You are a careful arithmetic tutor.";
  const messages = [{ role: "user", content: "What is 2+2?" }];
  const base = { model, max_tokens: 200, temperature: 0, system, messages };

  // ---- a plain message: thinking then text, usage from the same prompt as the chat route
  const m = await client.messages.create(base);
  assert.equal(m.type, "message");
  assert.equal(m.role, "assistant");
  assert.match(m.id, /^msg_/);
  assert.deepEqual(
    m.content.map((b) => b.type),
    ["thinking", "text"],
    JSON.stringify(m.content),
  );
  assert.equal(m.content[0].thinking, want.reasoning);
  assert.equal(m.content[1].text, want.content);
  assert.equal(m.stop_reason, "end_turn");
  assert.equal(m.stop_sequence, null);
  const promptTokens = tok.encode(
    renderR1([{ role: "system", content: system }, ...messages]),
  ).length;
  assert.equal(
    m.usage.input_tokens + m.usage.cache_read_input_tokens,
    promptTokens,
    `usage ${JSON.stringify(m.usage)}`,
  );
  assert.ok(m.usage.output_tokens > 0);
  ok(`message: thinking ${JSON.stringify(m.content[0].thinking)}, text ${JSON.stringify(m.content[1].text)}`);

  // ---- streamed: the SDK's event accumulator gives the same message
  const events = [];
  const stream = client.messages.stream(base);
  stream.on("streamEvent", (e) => events.push(e.type));
  const final = await stream.finalMessage();
  assert.deepEqual(final.content, m.content, "streamed content");
  assert.equal(final.stop_reason, "end_turn");
  assert.equal(events[0], "message_start");
  assert.equal(events.at(-1), "message_stop");
  assert.ok(events.includes("content_block_delta"), events.join(","));
  ok(`stream: ${events.length} events accumulate to the same message`);

  // ---- stop sequences and max_tokens
  const s = await client.messages.create({ ...base, stop_sequences: ["answer"] });
  assert.equal(s.stop_reason, "stop_sequence");
  assert.equal(s.stop_sequence, "answer");
  assert.equal(s.content.at(-1).text, want.content.slice(0, want.content.indexOf("answer")));
  const l = await client.messages.create({ ...base, max_tokens: 5 });
  assert.equal(l.stop_reason, "max_tokens");
  assert.equal(l.usage.output_tokens, 5);
  ok("stop_sequences -> stop_sequence; max_tokens -> max_tokens");

  // ---- tools: a forced call (tool_choice any) is a tool_use block; the result goes back
  const tools = [
    {
      name: "get_weather",
      description: "The weather in a city.",
      input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  ];
  const weather = [{ role: "user", content: "Weather in Paris?" }];
  const t = await client.messages.create({
    ...base,
    messages: weather,
    tools,
    tool_choice: { type: "any" },
  });
  assert.equal(t.stop_reason, "tool_use", JSON.stringify(t));
  const use = t.content.find((b) => b.type === "tool_use");
  assert.ok(use, JSON.stringify(t.content));
  assert.equal(use.name, "get_weather");
  assert.deepEqual(use.input, { city: "Paris" });
  const ts = await client.messages
    .stream({ ...base, messages: weather, tools, tool_choice: { type: "any" } })
    .finalMessage();
  const suse = ts.content.find((b) => b.type === "tool_use");
  assert.deepEqual(suse?.input, { city: "Paris" }, JSON.stringify(ts.content));
  assert.equal(ts.stop_reason, "tool_use");
  const back = await client.messages.create({
    ...base,
    max_tokens: 10,
    tools,
    messages: [
      ...weather,
      { role: "assistant", content: t.content },
      {
        role: "user",
        content: [{ type: "tool_result", tool_use_id: use.id, content: "18C, sunny" }],
      },
    ],
  });
  assert.equal(back.type, "message");
  ok(`tools: tool_use get_weather(${JSON.stringify(use.input)}), streamed alike, tool_result accepted`);

  // ---- errors in Anthropic's shape
  const wrong = new Anthropic({ apiKey: "nope", baseURL: `${server.url}/anthropic`, maxRetries: 0 });
  await assert.rejects(wrong.messages.create(base), (e) => {
    assert.equal(e.status, 401);
    assert.equal(e.error?.type, "error");
    assert.equal(e.error?.error?.type, "authentication_error");
    return true;
  });
  await assert.rejects(client.messages.create({ model, messages }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.error?.error?.type, "invalid_request_error");
    assert.match(e.error?.error?.message, /max_tokens/);
    return true;
  });
  await assert.rejects(
    client.messages.create({ ...base, messages: [{ role: "wizard", content: "hi" }] }),
    (e) => e.status === 400 && /role/.test(e.error?.error?.message),
  );
  ok("errors: wrong key 401 authentication_error, missing max_tokens / bad role 400");

  const exit = await server.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, "SIGTERM: clean exit");
  console.log("anthropic_client: all checks passed");
}

run(main);
