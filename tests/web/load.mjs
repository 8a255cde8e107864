#!/usr/bin/env node
// Bounded load test of `whale serve` (scripted R1 model): 64 concurrent clients on 127.0.0.1 for
// --seconds (default 40) mix streamed and plain chat (greedy: the answer must be exactly the
// script, whatever the batch it decoded in; sampled: well-formed), raw completions with random
// prompts, clients that disconnect early, and malformed requests (bad JSON, wrong types, unknown
// roles, n = 2, a body over --max-body). Checks: the server never exits; every valid request gets
// 200 with a well-formed body, or 429/503 with Retry-After and an error object; every malformed one
// gets a 4xx error object (413 for the big body); afterwards /health is ok, /metrics shows no
// active slot or queued request within a few seconds, a greedy request still gives the script, and
// SIGTERM exits 0. Prints p50/p99 latency, requests/s, completion tokens/s; writes
// ARTIFACT_DIR/load/summary.json.
// Beside them, --slow (default 1000) slow clients hold connections the whole time: a third stay
// silent, a third trickle a request head a byte a second, a third send a head and trickle the
// body; each reconnects when the server drops it. They must get 408 with an error object (or, the
// silent ones, a plain close) and nothing else, while a probe asks /health every 250 ms: every
// probe must be answered within 1 s.
//
//   node tests/web/load.mjs --whale BIN --model DIR --out ARTIFACT_DIR [--seconds S] [--clients N]
//        [--slow N]      (LOAD_EXTRA="--flag value ...": more `whale serve` flags)
import assert from "node:assert/strict";
import { execSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import net from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { join } from "node:path";
import {
  artifactDir,
  ok,
  parseArgs,
  parseMetrics,
  percentile,
  watchdog,
  run,
  scriptText,
  splitReasoning,
  startServer,
} from "./lib.mjs";

const MAX_BODY = 65536;
const REQUEST_TIMEOUT_MS = 60000; // a valid request unanswered this long counts as a stall

/**
 * A request's abort switch: abort() disconnects on purpose, and it disconnects by itself after
 * `ms` (a stall). One AbortController with a plain timer, because Node 20 may garbage-collect
 * AbortSignal.any()/AbortSignal.timeout() signals while fetch waits, and then they never fire.
 */
function requestControl(ms) {
  const ctl = new AbortController();
  const c = { signal: ctl.signal, stalled: false, aborted: false };
  const timer = setTimeout(() => {
    c.stalled = true;
    ctl.abort();
  }, ms);
  c.abort = () => {
    c.aborted = true;
    ctl.abort();
  };
  c.done = () => clearTimeout(timer);
  return c;
}

// Deterministic pseudo-random numbers (mulberry32), so a failing mix can be replayed.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (
  "apple river stone quiet orbit maple seven lantern copper drift meadow signal " +
  "harbor velvet puzzle thunder garden pixel canyon whisper amber falcon cobalt ember glacier " +
  "island jasmine kettle lemon marble nectar oyster pepper quartz raven saffron tundra umbra " +
  "violet willow xenon yonder zephyr"
).split(" ");

function randomText(rand, minWords, maxWords) {
  const n = minWords + Math.floor(rand() * (maxWords - minWords + 1));
  return Array.from({ length: n }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(" ");
}

/** Reads an SSE body -> the data of its events, in order; calls onFirstEvent() on the first. */
async function readSse(res, onFirstEvent) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  const events = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = block
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trim())
        .join("\n");
      if (data) {
        events.push(data);
        if (events.length === 1 && onFirstEvent) onFirstEvent();
      }
    }
  }
  assert.equal(buf.trim(), "", `bytes after the last SSE event: ${JSON.stringify(buf)}`);
  return events;
}

async function expect200(res) {
  if (res.status !== 200) assert.fail(`status ${res.status}: ${await res.text()}`);
}

function checkErrorBody(body, what) {
  assert.equal(
    typeof body?.error?.message,
    "string",
    `${what}: no error.message in ${JSON.stringify(body)}`,
  );
  assert.equal(
    typeof body.error.type,
    "string",
    `${what}: no error.type in ${JSON.stringify(body)}`,
  );
}

/**
 * `n` slow clients on 127.0.0.1:port until stop(): silent, trickling a head, trickling a body,
 * reconnecting whenever the server closes them. Counts how each connection ended.
 */
function slowClients(port, n) {
  const outcomes = {};
  const bad = [];
  const socks = new Set();
  let stopped = false;
  let opened = 0;
  let open = 0;
  let peak = 0;
  const note = (k) => (outcomes[k] = (outcomes[k] ?? 0) + 1);
  const start = (i) => {
    if (stopped) return;
    const kind = ["silent", "head", "body"][i % 3];
    const sock = net.connect(port, "127.0.0.1");
    socks.add(sock);
    let got = "";
    let timer = null;
    let failed = null;
    let connected = false;
    sock.on("connect", () => {
      connected = true;
      opened++;
      peak = Math.max(peak, ++open);
      if (kind === "head") {
        sock.write("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        timer = setInterval(() => sock.write("a"), 1000);
      } else if (kind === "body") {
        sock.write(
          "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
            "Content-Length: 1000\r\n\r\n{",
        );
        timer = setInterval(() => sock.write(" "), 1000);
      }
    });
    sock.on("data", (d) => {
      got += d;
      if (got.includes("\r\n\r\n{") && got.endsWith("}")) {
        clearInterval(timer);
        sock.end();
      }
    });
    sock.on("error", (e) => (failed = e.code ?? e.message));
    sock.on("close", () => {
      clearInterval(timer);
      socks.delete(sock);
      if (connected) open--;
      if (stopped) return;
      let outcome;
      if (got === "" && !failed) outcome = kind === "silent" ? "silent:closed" : `${kind}:closed-without-answer`;
      else if (got.startsWith("HTTP/1.1 408 ")) {
        const body = JSON.parse(got.slice(got.indexOf("\r\n\r\n") + 4));
        outcome = body?.error?.code === "request_timeout" ? `${kind}:408` : `${kind}:408-bad-body`;
      } else outcome = `${kind}:${failed ?? got.slice(0, 40)}`;
      note(outcome);
      if (!["silent:closed", "head:408", "body:408"].includes(outcome) && bad.length < 20)
        bad.push(outcome);
      setTimeout(() => start(i), 10);
    });
  };
  for (let i = 0; i < n; i++) start(i);
  return {
    stop() {
      stopped = true;
      for (const s of socks) s.destroy();
    },
    summary: () => ({ clients: n, connections_opened: opened, peak_open: peak, outcomes, bad }),
  };
}

/** How many descriptors this process may open (`ulimit -n`). */
function fdLimit() {
  try {
    return Number(execSync("ulimit -n", { shell: "/bin/sh" }).toString().trim()) || 1024;
  } catch {
    return 1024;
  }
}

async function main() {
  const args = parseArgs();
  const seconds = Number(args.seconds ?? 40);
  const clients = Number(args.clients ?? 64);
  // The slow clients fit in what this process may open, beside the real ones and node's own.
  const slow = Math.max(0, Math.min(Number(args.slow ?? 1000), fdLimit() - clients - 200));
  const out = artifactDir(args.out, "load");
  const script = scriptText();
  const want = splitReasoning(script);
  const model = args.modelId;

  const server = await startServer({
    whale: args.whale,
    model: args.model,
    extra: [
      ...(process.env.LOAD_EXTRA ? process.env.LOAD_EXTRA.split(" ") : []),
      "--body-timeout", // (so that the body tricklers reach their deadline within the run)
      "15",
      "--parallel",
      "4",
      "--max-body",
      String(MAX_BODY),
      "--queue",
      String(args.queue ?? 32),
    ],
    logFile: join(out, "server.log"),
  });
  let serverExit = null;
  server.exited.then((e) => (serverExit = e));
  const base = server.url;
  console.log(`server at ${base}; ${clients} clients and ${slow} slow ones for ${seconds} s`);
  const slowOnes = slowClients(Number(new URL(base).port), slow);
  // /health every 250 ms on a fresh connection: the slow clients must not delay it.
  const healthMs = [];
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const healthFailures = [];
  let probing = true;
  const prober = (async () => {
    while (probing) {
      const t = performance.now();
      try {
        const res = await fetch(`${base}/health`, {
          signal: requestControl(5000).signal,
          headers: { connection: "close" },
        });
        await res.text();
        if (res.status !== 200) healthFailures.push(`status ${res.status}`);
        healthMs.push(performance.now() - t);
      } catch (e) {
        healthFailures.push(`${e.message}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  })();

  const stats = {
    latency_ms: [], // valid requests answered 200, send to last byte
    ttft_ms: [], // streamed ones: send to first event
    completion_tokens: 0,
    by_kind: {},
    failures: [],
  };
  const count = (kind, outcome) => {
    const k = (stats.by_kind[kind] ??= {});
    k[outcome] = (k[outcome] ?? 0) + 1;
  };
  const fail = (kind, msg) => {
    count(kind, "FAILED");
    if (stats.failures.length < 50) stats.failures.push(`${kind}: ${msg}`);
  };

  const post = (path, body, signal, raw = false) =>
    fetch(base + path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: raw ? body : JSON.stringify(body),
      signal,
    });

  // A 429/503 must say when to come back; returns true if the response was one.
  async function busy(res, kind) {
    if (res.status !== 429 && res.status !== 503) return false;
    const retry = res.headers.get("retry-after");
    assert.ok(
      retry !== null && /^\d+$/.test(retry.trim()),
      `${res.status} without a numeric Retry-After (${retry})`,
    );
    checkErrorBody(await res.json(), `${kind} ${res.status}`);
    count(kind, String(res.status));
    await new Promise((r) => setTimeout(r, 100 + Math.min(1000, Number(retry) * 200)));
    return true;
  }

  // ---- request kinds: each resolves when done, throws on a wrong answer
  const kinds = {
    async chat(rand, { signal }) {
      const greedy = rand() < 0.6;
      const body = {
        model,
        messages: [
          ...(rand() < 0.5 ? [{ role: "system", content: randomText(rand, 5, 120) }] : []),
          { role: "user", content: randomText(rand, 1, 200) },
        ],
        temperature: greedy ? 0 : 2,
        seed: Math.floor(rand() * 1000),
        max_tokens: greedy ? 64 : 16,
      };
      const t0 = performance.now();
      const res = await post("/v1/chat/completions", body, signal);
      if (await busy(res, "chat")) return;
      await expect200(res);
      const j = await res.json();
      assert.equal(j.object, "chat.completion");
      assert.equal(j.choices?.length, 1, JSON.stringify(j));
      const m = j.choices[0].message;
      assert.ok(["stop", "length"].includes(j.choices[0].finish_reason), JSON.stringify(j));
      assert.equal(j.usage.total_tokens, j.usage.prompt_tokens + j.usage.completion_tokens);
      if (greedy) {
        assert.equal(m.reasoning_content, want.reasoning, "greedy reasoning under load");
        assert.equal(m.content, want.content, "greedy content under load");
      }
      stats.latency_ms.push(performance.now() - t0);
      stats.completion_tokens += j.usage.completion_tokens;
      count("chat", "200");
    },

    async stream(rand, { signal }) {
      const greedy = rand() < 0.6;
      const body = {
        model,
        messages: [{ role: "user", content: randomText(rand, 1, 200) }],
        temperature: greedy ? 0 : 2,
        seed: Math.floor(rand() * 1000),
        max_tokens: greedy ? 64 : 16,
        stream: true,
        stream_options: { include_usage: true },
      };
      const t0 = performance.now();
      const res = await post("/v1/chat/completions", body, signal);
      if (await busy(res, "stream")) return;
      await expect200(res);
      assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
      const events = await readSse(res, () => stats.ttft_ms.push(performance.now() - t0));
      assert.equal(events.at(-1), "[DONE]", "stream does not end with data: [DONE]");
      let reasoning = "";
      let content = "";
      let usage = null;
      let finish = null;
      for (const e of events.slice(0, -1)) {
        const c = JSON.parse(e);
        assert.equal(c.object, "chat.completion.chunk", e);
        if (c.usage) usage = c.usage;
        for (const ch of c.choices) {
          reasoning += ch.delta?.reasoning_content ?? "";
          content += ch.delta?.content ?? "";
          finish = ch.finish_reason ?? finish;
        }
      }
      assert.ok(["stop", "length"].includes(finish), `finish_reason ${finish}`);
      assert.ok(usage, "no usage chunk");
      if (greedy) {
        assert.equal(reasoning, want.reasoning, "greedy streamed reasoning under load");
        assert.equal(content, want.content, "greedy streamed content under load");
      }
      stats.latency_ms.push(performance.now() - t0);
      stats.completion_tokens += usage.completion_tokens;
      count("stream", "200");
    },

    async completion(rand, { signal }) {
      const body = {
        model,
        prompt: randomText(rand, 1, 300),
        temperature: 0.7,
        seed: 1,
        max_tokens: 16,
      };
      const t0 = performance.now();
      const res = await post("/v1/completions", body, signal);
      if (await busy(res, "completion")) return;
      await expect200(res);
      const j = await res.json();
      assert.equal(j.object, "text_completion");
      assert.equal(typeof j.choices?.[0]?.text, "string", JSON.stringify(j));
      stats.latency_ms.push(performance.now() - t0);
      stats.completion_tokens += j.usage.completion_tokens;
      count("completion", "200");
    },

    // Disconnects after the first streamed event, or a few ms into a plain request.
    async abort(rand, ctl) {
      const streamed = rand() < 0.6;
      const body = {
        model,
        messages: [{ role: "user", content: randomText(rand, 1, 100) }],
        temperature: 1,
        max_tokens: 256,
        stream: streamed,
      };
      // A plain request is dropped while the server works on it. (Only until the response
      // arrives: undici's res.json() can hang forever when its signal aborts mid-read.)
      const early = streamed ? null : setTimeout(() => ctl.abort(), 5 + rand() * 100);
      try {
        ctl.stage = streamed ? "stream:fetch" : "plain:fetch";
        const res = await post("/v1/chat/completions", body, ctl.signal);
        clearTimeout(early);
        if (res.status !== 200) {
          if (await busy(res, "abort")) return;
          await expect200(res);
        }
        ctl.stage = streamed ? "stream:body" : "plain:body";
        if (streamed) await readSse(res, () => ctl.abort());
        else await res.json();
        count("abort", "finished_before_abort");
      } catch (e) {
        if (!ctl.aborted) throw e;
        count("abort", "aborted");
      }
    },

    async malformed(rand, { signal }) {
      const cases = [
        ["bad json", '{"model": "x", "messages": [', 400],
        ["empty body", "", 400],
        ["json array", "[1, 2, 3]", 400],
        ["messages number", JSON.stringify({ model, messages: 5 }), 400],
        [
          "content number",
          JSON.stringify({ model, messages: [{ role: "user", content: 7 }] }),
          400,
        ],
        [
          "max_tokens string",
          JSON.stringify({
            model,
            messages: [{ role: "user", content: "hi" }],
            max_tokens: "many",
          }),
          400,
        ],
        [
          "temperature object",
          JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], temperature: {} }),
          400,
        ],
        ["missing messages", JSON.stringify({ model }), 400],
        [
          "unknown role",
          JSON.stringify({ model, messages: [{ role: "wizard", content: "hi" }] }),
          400,
        ],
        [
          "n = 2",
          JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], n: 2 }),
          400,
        ],
        [
          "stream not bool",
          JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], stream: "yes" }),
          400,
        ],
        [
          "body over --max-body",
          JSON.stringify({ model, messages: [{ role: "user", content: "x".repeat(100 * 1024) }] }),
          413,
        ],
      ];
      const [name, body, status] = cases[Math.floor(rand() * cases.length)];
      const path = rand() < 0.8 || status === 413 ? "/v1/chat/completions" : "/v1/completions";
      let res;
      try {
        res = await post(path, body, signal, true);
      } catch (e) {
        throw new Error(
          `${name} (${body.length} bytes to ${path}): no HTTP response: ${e.cause?.code ?? ""} ${e.message}`,
        );
      }
      // /v1/completions has no messages: the chat-only cases may be judged differently there,
      // but must still be a 4xx error object.
      if (path === "/v1/chat/completions") {
        assert.equal(res.status, status, `${name}: status ${res.status}`);
      } else {
        assert.ok(
          res.status >= 400 && res.status < 500,
          `${name} to ${path}: status ${res.status}`,
        );
      }
      checkErrorBody(await res.json(), name);
      count("malformed", String(res.status));
    },

    async info(rand, { signal }) {
      const path = rand() < 0.5 ? "/health" : "/v1/models";
      const res = await fetch(base + path, { signal });
      assert.equal(res.status, 200, `${path}: ${res.status}`);
      const j = await res.json();
      if (path === "/v1/models")
        assert.ok(
          j.data.some((m) => m.id === model),
          JSON.stringify(j),
        );
      count("info", "200");
    },
  };
  const mix = [
    ["chat", 25],
    ["stream", 25],
    ["completion", 10],
    ["abort", 15],
    ["malformed", 20],
    ["info", 5],
  ];
  const total = mix.reduce((s, [, w]) => s + w, 0);
  const pick = (rand) => {
    let x = rand() * total;
    for (const [k, w] of mix) if ((x -= w) < 0) return k;
    return mix[0][0];
  };

  // ---- the run
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  let sent = 0;
  const inFlight = {};
  const active = new Set();
  const straggler = (c) =>
    `${c.kind}${c.stage ? `:${c.stage}` : ""}${c.aborted ? ":aborted" : ""}` +
    `${c.stalled ? ":stalled" : ""} ${((performance.now() - c.start) / 1000).toFixed(0)}s`;
  const state = () =>
    `(in flight: ${JSON.stringify(inFlight)}; so far ${JSON.stringify(stats.by_kind)})` +
    (performance.now() > deadline + 5000
      ? ` stragglers: ${[...active].map(straggler).join(", ")}`
      : "");
  watchdog((seconds + REQUEST_TIMEOUT_MS / 1000 + 30) * 1000, state);
  const progress = setInterval(async () => {
    console.log(`  ${((performance.now() - t0) / 1000).toFixed(0)} s ${state()}`);
    if (performance.now() > deadline + 5000) {
      // stragglers: what does the server say it is doing?
      const m = await fetch(`${base}/metrics`, { signal: requestControl(5000).signal }).then(
        (r) => r.text(),
        (e) => `${e}`,
      );
      console.log(`  /metrics: ${JSON.stringify(parseMetrics(m))}`);
    }
  }, 10000);
  async function client(id) {
    const rand = rng(1000 + id);
    while (performance.now() < deadline && serverExit === null) {
      const kind = pick(rand);
      const ctl = requestControl(REQUEST_TIMEOUT_MS);
      ctl.kind = kind;
      ctl.start = performance.now();
      active.add(ctl);
      sent++;
      inFlight[kind] = (inFlight[kind] ?? 0) + 1;
      try {
        await kinds[kind](rand, ctl);
      } catch (e) {
        fail(kind, ctl.stalled ? `no complete answer in ${REQUEST_TIMEOUT_MS} ms` : e.message);
      } finally {
        ctl.done();
        active.delete(ctl);
        inFlight[kind]--;
      }
    }
  }
  await Promise.all(Array.from({ length: clients }, (_, i) => client(i)));
  const elapsed = (performance.now() - t0) / 1000;
  clearInterval(progress);
  probing = false;
  await prober;
  const slowSummary = slowOnes.summary();
  slowOnes.stop();
  assert.equal(
    serverExit,
    null,
    `the server exited during the run: ${JSON.stringify(serverExit)}\n${server.log().slice(-3000)}`,
  );
  ok(`${sent} requests in ${elapsed.toFixed(1)} s, server alive`);

  // ---- afterwards: healthy, idle, still right
  const after = () => requestControl(10000).signal; // (the timer keeps the controller alive)
  const health = await fetch(`${base}/health`, { signal: after() });
  assert.equal(health.status, 200);
  assert.equal((await health.json()).status, "ok");
  let metrics = {};
  let idle = false;
  const names = [
    "whale_requests_total",
    "whale_active_slots",
    "whale_queue_depth",
    "whale_prompt_tokens_total",
    "whale_completion_tokens_total",
    "whale_prompt_cache_hit_tokens_total",
  ];
  for (let i = 0; i < 50 && !idle; i++) {
    const res = await fetch(`${base}/metrics`, { signal: after() });
    assert.equal(res.status, 200);
    metrics = parseMetrics(await res.text());
    assert.ok(
      "whale_active_slots" in metrics,
      `/metrics has no whale_active_slots: ${JSON.stringify(metrics)}`,
    );
    idle = metrics.whale_active_slots === 0 && (metrics.whale_queue_depth ?? 0) === 0;
    if (!idle) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(idle, `slots/queue not back to 0 after 5 s: ${JSON.stringify(metrics)}`);
  const missing = names.filter((n) => !(n in metrics));
  if (missing.length)
    console.log(
      `note: /metrics lacks ${missing.join(", ")}; it has ${Object.keys(metrics).join(", ")}`,
    );
  if ("whale_completion_tokens_total" in metrics) {
    assert.ok(
      metrics.whale_completion_tokens_total >= stats.completion_tokens,
      `whale_completion_tokens_total ${metrics.whale_completion_tokens_total} < ${stats.completion_tokens} seen by clients`,
    );
  }
  ok(
    `after the run: /health ok, active slots 0 ` +
      JSON.stringify(
        Object.fromEntries(names.filter((n) => n in metrics).map((n) => [n, metrics[n]])),
      ),
  );
  const last = await post(
    "/v1/chat/completions",
    { model, messages: [{ role: "user", content: "What is 2+2?" }], temperature: 0 },
    after(),
  );
  assert.equal(last.status, 200);
  assert.equal((await last.json()).choices[0].message.content, want.content);
  ok("a greedy request after the run still gives the script");

  const served = stats.latency_ms.length;
  const summary = {
    clients,
    seconds: Number(elapsed.toFixed(2)),
    requests_sent: sent,
    requests_served_200: served,
    by_kind: stats.by_kind,
    latency_ms: { p50: percentile(stats.latency_ms, 50), p99: percentile(stats.latency_ms, 99) },
    ttft_ms_stream: { p50: percentile(stats.ttft_ms, 50), p99: percentile(stats.ttft_ms, 99) },
    requests_per_s: served / elapsed,
    completion_tokens: stats.completion_tokens,
    completion_tokens_per_s: stats.completion_tokens / elapsed,
    metrics,
    failures: stats.failures,
    slow_clients: slowSummary,
    health_probe_ms: {
      probes: healthMs.length,
      p50: percentile(healthMs, 50),
      p99: percentile(healthMs, 99),
      max: Math.max(...healthMs),
    },
    // How late this node process ran its own timers (it also runs the 64 clients and the slow
    // ones): a probe's time includes this.
    client_event_loop_delay_ms: { p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
  };
  const exit = await server.stop();
  summary.shutdown = exit;
  writeFileSync(join(out, "summary.json"), JSON.stringify(summary, null, 2) + "\n");
  console.log(`by kind: ${JSON.stringify(stats.by_kind)}`);
  console.log(
    `latency p50 ${summary.latency_ms.p50?.toFixed(0)} ms, p99 ${summary.latency_ms.p99?.toFixed(0)} ms; ` +
      `stream TTFT p50 ${summary.ttft_ms_stream.p50?.toFixed(0)} ms; ${summary.requests_per_s.toFixed(1)} req/s; ` +
      `${summary.completion_tokens_per_s.toFixed(1)} completion tok/s`,
  );
  assert.deepEqual(
    stats.failures,
    [],
    `${stats.failures.length} failed requests:\n${stats.failures.join("\n")}`,
  );
  assert.ok(served > 0, "no request was served");
  console.log(
    `slow clients: ${JSON.stringify(slowSummary)}; /health probes: ${JSON.stringify(summary.health_probe_ms)}`,
  );
  assert.deepEqual(healthFailures, [], "/health probes failed");
  assert.ok(summary.health_probe_ms.max < 1000, `a /health probe took ${summary.health_probe_ms.max} ms`);
  assert.deepEqual(slowSummary.bad, [], "slow clients got something other than 408 or a close");
  if (slow > 0) {
    assert.ok(slowSummary.peak_open >= slow * 0.9, `only ${slowSummary.peak_open} slow connections open at once`);
    assert.ok(
      Object.keys(slowSummary.outcomes).some((k) => k.endsWith(":408")),
      `no slow client reached its deadline: ${JSON.stringify(slowSummary.outcomes)}`,
    );
  }
  assert.deepEqual(exit, { code: 0, signal: null }, "SIGTERM: clean exit");
  ok(`load: no failures, clean shutdown; summary in ${join(out, "summary.json")}`);
}

run(main);
