#!/usr/bin/env node
// The official `openai` npm client against a real `whale serve` running the scripted R1 model
// (scripts/gen_model.py --script): its greedy answer to any chat prompt is
// tests/configs/scripted-r1.txt, so every response is checked against exact text. Expected token
// counts come from the reference tokenizer (@lenml/tokenizers) and the R1 chat template.
//
//   node tests/web/openai_client.mjs --whale BIN --model DIR --out ARTIFACT_DIR
//
// The server runs with --api-key (a second client checks that a wrong key gets 401). Exits
// non-zero on the first failed check; the server's log goes to ARTIFACT_DIR/openai_client/.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  artifactDir,
  fimScriptText,
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

const { default: OpenAI } = await importDep("openai", "index.mjs");

const KEY = "sk-whale-test-key";
// Long enough (~150 tokens) that a prompt cache working in blocks of up to 64 tokens still hits.
const SYSTEM =
  "You are a meticulous arithmetic tutor. Answer every question about numbers with care, check " +
  "each step twice, and keep the final answer short. When a student asks for a sum, a product, a " +
  "difference or a quotient, first restate the question in your own words, then work through the " +
  "calculation one step at a time, and finally give the result in a single sentence. Never guess: " +
  "if the question is ambiguous, say which reading you chose. Prefer small whole numbers in " +
  "examples, avoid jargon, and do not use tables or lists unless the student asks for them. Be " +
  "kind, patient and precise, and remember that the student may be a child or an adult.";

async function expectApiError(promise, status, what, check = () => {}) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIError, `${what}: expected an APIError, got ${e}`);
    assert.equal(e.status, status, `${what}: status (${e.message})`);
    assert.equal(
      typeof e.error?.message,
      "string",
      `${what}: error.message in ${JSON.stringify(e.error)}`,
    );
    check(e);
    return e;
  }
  assert.fail(`${what}: expected HTTP ${status}, the request succeeded`);
}

function checkUsage(u, what) {
  for (const f of [
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_cache_hit_tokens",
    "prompt_cache_miss_tokens",
  ]) {
    assert.ok(Number.isInteger(u?.[f]) && u[f] >= 0, `${what}: usage.${f} in ${JSON.stringify(u)}`);
  }
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens, `${what}: total_tokens`);
  assert.equal(
    u.prompt_cache_hit_tokens + u.prompt_cache_miss_tokens,
    u.prompt_tokens,
    `${what}: prompt_cache_hit_tokens + prompt_cache_miss_tokens`,
  );
  // OpenAI's detail fields, as the client's types declare them.
  assert.equal(u.prompt_tokens_details?.cached_tokens, u.prompt_cache_hit_tokens,
    `${what}: prompt_tokens_details.cached_tokens`);
  const r = u.completion_tokens_details?.reasoning_tokens;
  assert.ok(Number.isInteger(r) && r >= 0 && r <= u.completion_tokens,
    `${what}: completion_tokens_details.reasoning_tokens in ${JSON.stringify(u)}`);
}

/** Reads a chat stream; checks the chunk shapes; -> {reasoning, content, finish, usage, chunks}. */
async function readChatStream(stream, modelId, what) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.ok(chunks.length >= 2, `${what}: ${chunks.length} chunks`);
  let reasoning = "";
  let content = "";
  let finish = null;
  let usage = null;
  chunks.forEach((c, i) => {
    const at = `${what}: chunk ${i} ${JSON.stringify(c)}`;
    assert.equal(c.object, "chat.completion.chunk", at);
    assert.equal(c.id, chunks[0].id, at);
    assert.equal(c.model, modelId, at);
    assert.ok(Number.isInteger(c.created), at);
    if (c.usage) {
      assert.equal(usage, null, `${at}: a second usage chunk`);
      assert.deepEqual(c.choices, [], `${at}: the usage chunk has choices`);
      usage = c.usage;
      return;
    }
    assert.equal(usage, null, `${at}: a chunk after the usage chunk`);
    assert.equal(c.choices.length, 1, at);
    const ch = c.choices[0];
    assert.equal(ch.index, 0, at);
    assert.equal(finish, null, `${at}: a chunk after finish_reason`);
    if (i === 0) assert.equal(ch.delta.role, "assistant", `${at}: first delta has no role`);
    if (ch.delta.reasoning_content) {
      assert.equal(content, "", `${at}: reasoning after content`);
      reasoning += ch.delta.reasoning_content;
    }
    if (ch.delta.content) content += ch.delta.content;
    if (ch.finish_reason != null) finish = ch.finish_reason;
  });
  assert.ok(finish, `${what}: no chunk with finish_reason`);
  return { reasoning, content, finish, usage, chunks };
}

async function main() {
  const args = parseArgs();
  const out = artifactDir(args.out, "openai_client");
  const tok = await loadTokenizer(args.model);
  const script = scriptText();
  const scriptIds = tok.encode(script);
  const want = splitReasoning(script);
  const messages = [
    { role: "system", content: SYSTEM },
    { role: "user", content: "What is 2+2?" },
  ];
  const promptTokens = tok.encode(renderR1(messages)).length;

  const server = await startServer({
    whale: args.whale,
    model: args.model,
    extra: ["--api-key", KEY, "--parallel", "2"],
    logFile: join(out, "server.log"),
  });
  console.log(`server at ${server.url}`);
  const client = new OpenAI({
    apiKey: KEY,
    baseURL: `${server.url}/v1`,
    maxRetries: 0,
    timeout: 120000,
  });
  const model = args.modelId;
  const summary = {};

  // ---- models
  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  assert.ok(ids.includes(model), `models.list() ids ${JSON.stringify(ids)} lack ${model}`);
  assert.equal(models.data.find((m) => m.id === model).object, "model");
  ok(`models.list() has ${model}`);

  // ---- greedy chat, not streamed
  const greedy = { model, messages, temperature: 0, max_tokens: 200 };
  const r1 = await client.chat.completions.create(greedy);
  assert.equal(r1.object, "chat.completion");
  assert.equal(typeof r1.id, "string");
  assert.equal(r1.model, model);
  assert.ok(Number.isInteger(r1.created));
  assert.equal(r1.choices.length, 1);
  const msg = r1.choices[0].message;
  assert.equal(msg.role, "assistant");
  assert.equal(msg.reasoning_content, want.reasoning, "reasoning_content");
  assert.equal(msg.content, want.content, "content");
  assert.equal(r1.choices[0].finish_reason, "stop");
  checkUsage(r1.usage, "greedy chat");
  assert.equal(
    r1.usage.prompt_tokens,
    promptTokens,
    "prompt_tokens (R1 template + reference tokenizer)",
  );
  // The script's tokens, plus the EOS if the server counts it (OpenAI-style servers differ).
  assert.ok(
    [scriptIds.length, scriptIds.length + 1].includes(r1.usage.completion_tokens),
    `completion_tokens ${r1.usage.completion_tokens}, script has ${scriptIds.length} tokens`,
  );
  summary.greedy_usage = r1.usage;
  ok(
    `greedy chat: reasoning_content ${JSON.stringify(msg.reasoning_content)}, content ` +
      `${JSON.stringify(msg.content)}, usage ${JSON.stringify(r1.usage)}`,
  );

  // ---- the same request again: the prompt comes from the cache
  const r2 = await client.chat.completions.create(greedy);
  checkUsage(r2.usage, "repeated chat");
  assert.ok(
    r2.usage.prompt_cache_hit_tokens > 0,
    `repeated request: no prompt cache hit ${JSON.stringify(r2.usage)}`,
  );
  assert.deepEqual(r2.choices[0].message, msg, "repeated greedy request: other message");
  summary.repeat_usage = r2.usage;
  ok(
    `repeated request: prompt_cache_hit_tokens ${r2.usage.prompt_cache_hit_tokens}/${r2.usage.prompt_tokens}`,
  );

  // ---- greedy chat, streamed: the same text, the usage chunk last
  const s1 = await readChatStream(
    await client.chat.completions.create({
      ...greedy,
      stream: true,
      stream_options: { include_usage: true },
    }),
    model,
    "greedy stream",
  );
  assert.equal(s1.reasoning, want.reasoning, "streamed reasoning_content");
  assert.equal(s1.content, want.content, "streamed content");
  assert.equal(s1.finish, "stop");
  assert.ok(s1.usage, "stream_options.include_usage: no usage chunk");
  checkUsage(s1.usage, "greedy stream");
  assert.equal(s1.usage.prompt_tokens, r1.usage.prompt_tokens);
  assert.equal(s1.usage.completion_tokens, r1.usage.completion_tokens);
  ok(`greedy stream: ${s1.chunks.length} chunks reassemble to the non-streamed message`);

  const s2 = await readChatStream(
    await client.chat.completions.create({ ...greedy, stream: true }),
    model,
    "stream without include_usage",
  );
  assert.equal(s2.usage, null, "usage chunk sent without stream_options.include_usage");
  assert.equal(s2.reasoning + "|" + s2.content, want.reasoning + "|" + want.content);
  ok("stream without include_usage: no usage chunk");

  // ---- length limit: the first tokens of the script, all reasoning
  const rl = await client.chat.completions.create({ ...greedy, max_tokens: 5 });
  assert.equal(rl.choices[0].finish_reason, "length");
  assert.equal(rl.usage.completion_tokens, 5);
  assert.equal(
    rl.choices[0].message.reasoning_content,
    splitReasoning(tok.decode(scriptIds.slice(0, 5))).reasoning,
  );
  assert.ok(
    !rl.choices[0].message.content,
    `content ${JSON.stringify(rl.choices[0].message.content)}`,
  );
  ok(
    `max_tokens 5: finish_reason length, reasoning ${JSON.stringify(rl.choices[0].message.reasoning_content)}`,
  );

  // ---- stop strings: the text up to the stop string, which is not included
  const stop = { ...greedy, stop: ["answer", "never-generated"] };
  const rs = await client.chat.completions.create(stop);
  assert.equal(rs.choices[0].finish_reason, "stop");
  assert.equal(rs.choices[0].message.reasoning_content, want.reasoning);
  assert.equal(
    rs.choices[0].message.content,
    want.content.slice(0, want.content.indexOf("answer")),
    "content before the stop string",
  );
  const ss = await readChatStream(
    await client.chat.completions.create({ ...stop, stream: true }),
    model,
    "stop stream",
  );
  assert.equal(
    ss.content,
    rs.choices[0].message.content,
    "streamed content before the stop string",
  );
  assert.equal(ss.finish, "stop");
  ok(`stop ["answer"]: content ${JSON.stringify(rs.choices[0].message.content)}, streamed alike`);

  // ---- multi-turn: the earlier turn's reasoning is not fed back, the shared prefix is cached
  const turns = [
    ...messages,
    { role: "assistant", content: script }, // "<reasoning></think>answer", as a client may keep it
    { role: "user", content: "And 3+3?" },
  ];
  const rm = await client.chat.completions.create({
    model,
    messages: turns,
    temperature: 0,
    max_tokens: 200,
  });
  checkUsage(rm.usage, "multi-turn");
  assert.equal(
    rm.usage.prompt_tokens,
    tok.encode(renderR1(turns)).length,
    "multi-turn prompt_tokens (earlier reasoning dropped, as the R1 template does)",
  );
  assert.ok(
    rm.usage.prompt_cache_hit_tokens > 0,
    `multi-turn: no cache hit ${JSON.stringify(rm.usage)}`,
  );
  assert.equal(rm.choices[0].message.content, want.content);
  ok(
    `multi-turn: prompt_tokens ${rm.usage.prompt_tokens}, cache hit ${rm.usage.prompt_cache_hit_tokens}`,
  );

  // ---- seeded sampling: deterministic, streamed = not streamed
  const t1 = { model, messages, temperature: 1, seed: 42, max_tokens: 200 };
  const a = await client.chat.completions.create(t1);
  const b = await client.chat.completions.create(t1);
  assert.deepEqual(
    b.choices[0].message,
    a.choices[0].message,
    "temperature 1, seed 42: two answers differ",
  );
  const as = await readChatStream(
    await client.chat.completions.create({ ...t1, stream: true }),
    model,
    "seeded stream",
  );
  assert.equal(
    as.reasoning,
    a.choices[0].message.reasoning_content ?? "",
    "seeded stream reasoning",
  );
  assert.equal(as.content, a.choices[0].message.content ?? "", "seeded stream content");
  // The script's margin (~24 logits) makes temperature 1 follow it.
  assert.equal(a.choices[0].message.content, want.content, "temperature 1 left the script");
  ok("temperature 1, seed 42: same answer twice and streamed");
  // Temperature 2 halves the margin: samples leave the script, so the seed really matters.
  const hot = (seed) => ({ model, messages, temperature: 2, seed, max_tokens: 12 });
  const textOf = (r) => JSON.stringify(r.choices[0].message);
  const h1 = await client.chat.completions.create(hot(1));
  const h1b = await client.chat.completions.create(hot(1));
  const h2 = await client.chat.completions.create(hot(2));
  assert.equal(textOf(h1b), textOf(h1), "temperature 2, seed 1: two answers differ");
  const hs = await readChatStream(
    await client.chat.completions.create({ ...hot(1), stream: true }),
    model,
    "hot stream",
  );
  assert.equal(
    hs.reasoning,
    h1.choices[0].message.reasoning_content ?? "",
    "temperature 2 stream reasoning",
  );
  assert.equal(hs.content, h1.choices[0].message.content ?? "", "temperature 2 stream content");
  assert.equal(h1.usage.completion_tokens, 12);
  assert.notEqual(textOf(h2), textOf(h1), "temperature 2: seeds 1 and 2 give the same 12 tokens");
  summary.temperature2 = { seed1: h1.choices[0].message, seed2: h2.choices[0].message };
  ok(
    `temperature 2: seed 1 reproducible and streamed alike, seed 2 differs (${textOf(h1)} vs ${textOf(h2)})`,
  );

  // ---- legacy completions: the raw text, </think> included
  const prompt = renderR1([{ role: "user", content: "What is 2+2?" }]);
  const c1 = await client.completions.create({ model, prompt, temperature: 0, max_tokens: 200 });
  assert.equal(c1.object, "text_completion");
  assert.equal(c1.choices[0].text, script, "completions text");
  assert.equal(c1.choices[0].finish_reason, "stop");
  checkUsage(c1.usage, "completions");
  let streamed = "";
  let cfinish = null;
  for await (const c of await client.completions.create({
    model,
    prompt,
    temperature: 0,
    max_tokens: 200,
    stream: true,
  })) {
    assert.equal(c.object, "text_completion", JSON.stringify(c));
    if (c.choices.length) {
      streamed += c.choices[0].text ?? "";
      cfinish = c.choices[0].finish_reason ?? cfinish;
    }
  }
  assert.equal(streamed, script, "streamed completions text");
  assert.equal(cfinish, "stop");
  ok("completions: raw script text, streamed alike");

  // ---- logprobs: one entry per generated token, their bytes make up the raw text, greedy picks
  // the top alternative; streamed chunks carry the same entries
  const lpReq = { ...greedy, logprobs: true, top_logprobs: 3 };
  const rlp = await client.chat.completions.create(lpReq);
  const lpc = rlp.choices[0].logprobs?.content;
  assert.ok(Array.isArray(lpc), `logprobs.content in ${JSON.stringify(rlp.choices[0])}`);
  assert.equal(lpc.length, scriptIds.length, "one logprobs entry per script token");
  assert.equal(Buffer.from(lpc.flatMap((e) => e.bytes)).toString("utf8"), script, "logprob bytes");
  for (const e of lpc) {
    assert.equal(e.top_logprobs.length, 3, JSON.stringify(e));
    assert.equal(e.top_logprobs[0].token, e.token, JSON.stringify(e));
    // The script's ~24-logit margin: each token is all but certain.
    assert.ok(e.logprob <= 0 && e.logprob > -1e-3, `logprob ${e.logprob} of ${e.token}`);
  }
  const slp = [];
  for await (const c of await client.chat.completions.create({ ...lpReq, stream: true })) {
    for (const e of c.choices[0]?.logprobs?.content ?? []) slp.push(e.token);
  }
  assert.deepEqual(slp, lpc.map((e) => e.token), "streamed logprobs tokens");
  const clp = await client.completions.create({
    model,
    prompt: renderR1([{ role: "user", content: "What is 2+2?" }]),
    temperature: 0,
    max_tokens: 200,
    logprobs: 2,
  });
  assert.equal(clp.choices[0].logprobs.tokens.join(""), script, "completions logprobs tokens");
  assert.equal(clp.choices[0].logprobs.token_logprobs.length, scriptIds.length);
  ok(`logprobs: ${lpc.length} entries (chat, streamed and completions) spell the script`);

  // ---- chat prefix completion under /beta: the last assistant message is continued
  const beta = new OpenAI({ apiKey: KEY, baseURL: `${server.url}/beta`, maxRetries: 0 });
  const firstThought = want.reasoning.slice(0, want.reasoning.indexOf(".") + 1);
  const pr = await beta.chat.completions.create({
    ...greedy,
    messages: [
      ...messages,
      { role: "assistant", content: "", reasoning_content: firstThought, prefix: true },
    ],
  });
  assert.equal(
    firstThought + " " + pr.choices[0].message.reasoning_content,
    want.reasoning,
    "reasoning continued after a reasoning prefix",
  );
  assert.equal(pr.choices[0].message.content, want.content);
  const pc = await beta.chat.completions.create({
    ...greedy,
    messages: [
      ...messages,
      { role: "assistant", content: "The answer", reasoning_content: want.reasoning, prefix: true },
    ],
  });
  assert.equal("The answer" + pc.choices[0].message.content, want.content, "content continued");
  assert.equal(pc.choices[0].message.reasoning_content, undefined);
  ok(`prefix completion: reasoning prefix ${JSON.stringify(firstThought)} and content prefix continued`);

  // ---- fill in the middle: prompt + suffix, the model writes the middle (also under /beta)
  const fim = { model, prompt: "def mul(x, y):\n", suffix: "\n\nprint(mul(2, 3))\n",
    temperature: 0, max_tokens: 50 };
  const f1 = await client.completions.create(fim);
  assert.equal(f1.choices[0].text, fimScriptText(), "FIM middle");
  assert.equal(f1.choices[0].finish_reason, "stop");
  checkUsage(f1.usage, "FIM");
  let fimStreamed = "";
  for await (const c of await beta.completions.create({ ...fim, stream: true })) {
    fimStreamed += c.choices[0]?.text ?? "";
  }
  assert.equal(fimStreamed, fimScriptText(), "streamed FIM middle (/beta)");
  ok(`FIM: middle ${JSON.stringify(f1.choices[0].text)}, streamed alike`);

  // ---- function calling: the served model answers a forced call (tool_choice required) with
  // get_weather {"city": "Paris"} (gen_model.py --tool-script); with tool_choice auto it answers
  // as usual, in content
  const tools = [
    {
      type: "function",
      function: {
        name: "get_weather",
        description: "The weather in a city.",
        parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      },
    },
  ];
  const weatherQ = [{ role: "user", content: "What is the weather in Paris?" }];
  const tr = await client.chat.completions.create({
    model, messages: weatherQ, tools, tool_choice: "required", temperature: 0, max_tokens: 60 });
  const tmsg = tr.choices[0].message;
  assert.equal(tr.choices[0].finish_reason, "tool_calls", JSON.stringify(tr));
  assert.equal(tmsg.content, null);
  assert.equal(tmsg.tool_calls?.length, 1, JSON.stringify(tmsg));
  const call = tmsg.tool_calls[0];
  assert.equal(call.type, "function");
  assert.match(call.id, /^call_/);
  assert.equal(call.function.name, "get_weather");
  assert.deepEqual(JSON.parse(call.function.arguments), { city: "Paris" });
  checkUsage(tr.usage, "tool call");
  // Streamed: the first fragment has id, type and name; later ones only arguments.
  const frags = [];
  let tfinish = null;
  for await (const c of await client.chat.completions.create({
    model, messages: weatherQ, tools, tool_choice: "required", temperature: 0, max_tokens: 60,
    stream: true })) {
    for (const f of c.choices[0]?.delta?.tool_calls ?? []) frags.push(f);
    tfinish = c.choices[0]?.finish_reason ?? tfinish;
  }
  assert.ok(frags.length >= 2, JSON.stringify(frags));
  assert.equal(frags[0].index, 0);
  assert.match(frags[0].id, /^call_/);
  assert.equal(frags[0].type, "function");
  assert.equal(frags[0].function.name, "get_weather");
  for (const f of frags.slice(1)) {
    assert.equal(f.id, undefined, JSON.stringify(f));
    assert.ok(!("name" in f.function), `a later fragment names the function: ${JSON.stringify(f)}`);
  }
  assert.deepEqual(JSON.parse(frags.map((f) => f.function.arguments).join("")), { city: "Paris" });
  assert.equal(tfinish, "tool_calls");
  // The round trip: the call and its result go back; the model answers in text.
  const back = await client.chat.completions.create({
    model,
    tools,
    temperature: 0,
    max_tokens: 20,
    messages: [...weatherQ, tmsg, { role: "tool", tool_call_id: call.id, content: "18C, sunny" }],
  });
  assert.equal(back.choices[0].message.tool_calls, undefined, JSON.stringify(back));
  checkUsage(back.usage, "tool round trip");
  // tool_choice auto: this model does not call, it answers.
  const ta = await client.chat.completions.create({ ...greedy, tools });
  assert.equal(ta.choices[0].message.content, want.content);
  assert.equal(ta.choices[0].finish_reason, "stop");
  ok(`tools: forced call get_weather(${call.function.arguments}), streamed in ${frags.length} ` +
    "fragments, round trip answered, auto answers in text");

  // ---- structured outputs: the reasoning runs free, the answer after </think> follows the schema
  const so = await client.chat.completions.create({
    ...greedy,
    response_format: {
      type: "json_schema",
      json_schema: {
        name: "answer",
        strict: true,
        schema: {
          type: "object",
          properties: { answer: { type: "integer" }, unit: { enum: ["apples", null] } },
          required: ["answer", "unit"],
          additionalProperties: false,
        },
      },
    },
  });
  assert.equal(so.choices[0].message.reasoning_content, want.reasoning, "reasoning left free");
  const parsed = JSON.parse(so.choices[0].message.content);
  assert.ok(Number.isInteger(parsed.answer), so.choices[0].message.content);
  assert.ok(parsed.unit === "apples" || parsed.unit === null, so.choices[0].message.content);
  assert.deepEqual(Object.keys(parsed).sort(), ["answer", "unit"]);
  assert.equal(so.choices[0].finish_reason, "stop");
  await expectApiError(
    client.chat.completions.create({
      ...greedy,
      response_format: {
        type: "json_schema",
        json_schema: { name: "x", schema: { type: "string", pattern: "^a" } },
      },
    }),
    400,
    "unsupported schema keyword",
    (e) => assert.equal(e.param, "response_format.json_schema.schema.pattern"),
  );
  ok(`structured output: ${so.choices[0].message.content} after the free reasoning`);

  // ---- unknown request fields are ignored
  const ru = await client.chat.completions.create({
    ...greedy,
    some_future_field: { x: [1, 2] },
    logit_bias_v9: 3,
  });
  assert.equal(ru.choices[0].message.content, want.content);
  ok("unknown fields ignored");

  // ---- errors
  const invalid = (e) => assert.equal(e.type, "invalid_request_error", JSON.stringify(e.error));
  await expectApiError(client.chat.completions.create({ ...greedy, n: 2 }), 400, "n = 2", invalid);
  await expectApiError(
    client.chat.completions.create({ ...greedy, messages: [{ role: "wizard", content: "hi" }] }),
    400,
    "unknown role",
    invalid,
  );
  await expectApiError(
    client.chat.completions.create({ model, max_tokens: 5 }),
    400,
    "missing messages",
    invalid,
  );
  await expectApiError(
    client.chat.completions.create({ ...greedy, temperature: "hot" }),
    400,
    "temperature string",
    invalid,
  );
  await expectApiError(
    client.chat.completions.create({ ...greedy, messages: "What is 2+2?" }),
    400,
    "messages string",
    invalid,
  );
  const huge = [{ role: "user", content: "word ".repeat(6000) }];
  await expectApiError(
    client.chat.completions.create({ ...greedy, messages: huge }),
    400,
    "prompt over the context",
    (e) => assert.equal(e.code, "context_length_exceeded", JSON.stringify(e.error)),
  );
  const wrong = new OpenAI({ apiKey: "sk-wrong", baseURL: `${server.url}/v1`, maxRetries: 0 });
  await expectApiError(wrong.models.list(), 401, "wrong api key (models)");
  await expectApiError(wrong.chat.completions.create(greedy), 401, "wrong api key (chat)");
  const noKey = await fetch(`${server.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(greedy),
  });
  assert.equal(noKey.status, 401, "missing api key");
  assert.equal(
    typeof (await noKey.json()).error?.message,
    "string",
    "missing api key: error object",
  );
  const notFound = await fetch(`${server.url}/v1/no-such-endpoint`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  assert.equal(notFound.status, 404, "unknown path");
  assert.equal(
    typeof (await notFound.json()).error?.message,
    "string",
    "unknown path: error object",
  );
  ok(
    "errors: n=2, unknown role, missing messages, wrong types -> 400 invalid_request_error; " +
      "long prompt -> context_length_exceeded; wrong/missing key -> 401; unknown path -> 404",
  );

  // ---- the server still answers, then shuts down cleanly on SIGTERM
  const again = await client.chat.completions.create(greedy);
  assert.equal(again.choices[0].message.content, want.content);
  const exit = await server.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, "SIGTERM: clean exit");
  ok("SIGTERM: exit code 0");
  console.log(`openai_client: all checks passed ${JSON.stringify(summary)}`);
}

run(main);
