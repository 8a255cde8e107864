// Serving benchmark: continuous batching and the prompt cache, measured through HTTP.
//
//   node bench/serve_bench.mjs --whale build/whale --model models/v3-1b-bf16 --out build/bench
//        [--tokens 64] [--threads 2] [--system-words 900] [--rounds 1] [--disk-words 1000]
//        [--only disk]
//
// 1. Batching: N = 1, 2, 4, 8 concurrent streaming chat requests with short prompts, greedy,
//    max_tokens fixed; aggregate decode tokens/s = all completion tokens / wall time from the
//    requests' first token to the last stream's end. The server runs with --parallel 8.
// 2. Prompt cache: a long system prompt; time to first token of a first request (cold), then of
//    a request with the same system prompt and another question (warm: the prefix comes from the
//    cache), and prompt_cache_hit_tokens of each.
// 3. Context cache on disk (--disk-words W, default 1000, 0 skips it): a server with --cache-dir
//    answers a ~2000-token prompt (time to first token: cold), stops (SIGTERM), a new server on
//    the same directory answers the same prompt (from disk). Each server first answers a short
//    unrelated request, so neither figure includes a process's own warm-up.
// The model needs tokenizer files in its directory (scripts/gen_model.py --tokenizer ...).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { artifactDir, parseArgs, run, startServer } from "../tests/web/lib.mjs";

const args = parseArgs();
const TOKENS = Number(args.tokens ?? 64);

async function streamChat(url, messages, max_tokens) {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      messages, max_tokens, temperature: 0, stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let first = null, usage = null, buf = "";
  const decoder = new TextDecoder();
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const j = JSON.parse(line.slice(6));
      if (j.usage) usage = j.usage;
      const d = j.choices?.[0]?.delta;
      if (first === null && d && (d.content || d.reasoning_content)) first = performance.now();
    }
  }
  return { t0, first, end: performance.now(), usage };
}

run(async () => {
  const threads = args.threads ?? "2";
  const out = { model: args.model, threads: Number(threads), tokens: TOKENS, batching: [] };
  if (args.only !== "disk") await batchingAndPromptCache(threads, out);
  await diskCache(threads, out);
  writeFileSync(join(artifactDir(args.out, "serve_bench"), "serve_bench.json"),
                JSON.stringify(out, null, 2));
});

async function batchingAndPromptCache(threads, out) {
  const server = await startServer({
    whale: args.whale, model: args.model,
    extra: ["--parallel", "8", "--ctx", "4096", "-t", threads],
  });
  try {
    // Warm the weights into the page cache.
    await streamChat(server.url, [{ role: "user", content: "warm up" }], 8);
    const ROUNDS = Number(args.rounds ?? 1);
    console.log(`batching: ${TOKENS} tokens per stream, greedy, --parallel 8, ${ROUNDS} round(s)`);
    const sweep = {};  // streams -> aggregate tok/s of each round
    for (let round = 1; round <= ROUNDS; round++) {
      let single = 0;
      for (const n of [1, 2, 4, 8]) {
        const rs = await Promise.all(Array.from({ length: n }, (_, i) =>
          streamChat(server.url, [{ role: "user", content: `Question ${i}: say something.` }],
                     TOKENS)));
        const start = Math.min(...rs.map((r) => r.first ?? r.end));
        const end = Math.max(...rs.map((r) => r.end));
        const tokens = rs.reduce((s, r) => s + (r.usage?.completion_tokens ?? 0), 0);
        const tps = tokens / ((end - start) / 1000);
        if (n === 1) single = tps;
        (sweep[n] ??= []).push(tps);
        out.batching.push({ round, streams: n, tokens, seconds: (end - start) / 1000, tok_s: tps,
                            vs_one: tps / single });
        console.log(`  round ${round}, ${n} streams: ${tokens} tokens, ${tps.toFixed(1)} tok/s ` +
                    `aggregate (${(tps / single).toFixed(2)}x one stream)`);
      }
    }
    // Rounds interleave the stream counts, so a machine that slows down for a while slows them
    // alike; the medians and their ratio are the figures to quote.
    const median = (v) => {
      const a = [...v].sort((x, y) => x - y), m = a.length >> 1;
      return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
    };
    out.batching_median = Object.entries(sweep).map(([n, v]) => ({
      streams: Number(n), tok_s: median(v), min: Math.min(...v), max: Math.max(...v),
      vs_one: median(v) / median(sweep[1]),
    }));
    if (ROUNDS > 1)
      for (const m of out.batching_median)
        console.log(`  median of ${ROUNDS}: ${m.streams} streams ${m.tok_s.toFixed(1)} tok/s ` +
                    `(${m.min.toFixed(1)}-${m.max.toFixed(1)}), ${m.vs_one.toFixed(2)}x one stream`);
    const words = Number(args["system-words"] ?? 900);
    const system = Array.from({ length: words }, (_, i) => `word${i % 97}`).join(" ");
    const ask = (q) => streamChat(server.url,
      [{ role: "system", content: system }, { role: "user", content: q }], 4);
    const cold = await ask("First question?");
    const warm = await ask("A different second question?");
    out.prompt_cache = {
      prompt_tokens: cold.usage.prompt_tokens,
      cold_ttft_s: (cold.first - cold.t0) / 1000, cold_hit_tokens: cold.usage.prompt_cache_hit_tokens,
      warm_ttft_s: (warm.first - warm.t0) / 1000, warm_hit_tokens: warm.usage.prompt_cache_hit_tokens,
    };
    const pc = out.prompt_cache;
    console.log(`prompt cache: ${pc.prompt_tokens}-token prompt, TTFT cold ${pc.cold_ttft_s.toFixed(3)} s ` +
                `(${pc.cold_hit_tokens} cached) -> warm ${pc.warm_ttft_s.toFixed(3)} s ` +
                `(${pc.warm_hit_tokens} cached), ${(pc.cold_ttft_s / pc.warm_ttft_s).toFixed(1)}x faster`);
  } finally {
    await server.stop();
  }
}

async function diskCache(threads, out) {
  const diskWords = Number(args["disk-words"] ?? 1000);
  if (diskWords > 0) {
    const dir = mkdtempSync(join(tmpdir(), "whale-disk-cache-"));
    const text = Array.from({ length: diskWords }, (_, i) => `term${(i * 7) % 101}`).join(" ");
    const messages = [{ role: "user", content: `${text}\nSummarise the list above.` }];
    const serve = () => startServer({
      whale: args.whale, model: args.model,
      extra: ["--parallel", "2", "--ctx", "4096", "-t", threads, "--cache-dir", dir,
              "--cache-disk-gb", "2"],
    });
    try {
      const ttft = (r) => (r.first - r.t0) / 1000;
      let srv = await serve();
      await streamChat(srv.url, [{ role: "user", content: "warm up" }], 4);
      const cold = await streamChat(srv.url, messages, 4);
      await srv.stop();
      srv = await serve();
      await streamChat(srv.url, [{ role: "user", content: "warm up again" }], 4);
      const warm = await streamChat(srv.url, messages, 4);
      await srv.stop();
      out.disk_cache = {
        prompt_tokens: cold.usage.prompt_tokens,
        cold_ttft_s: ttft(cold), cold_hit_tokens: cold.usage.prompt_cache_hit_tokens,
        restarted_ttft_s: ttft(warm), restarted_hit_tokens: warm.usage.prompt_cache_hit_tokens,
        speedup: ttft(cold) / ttft(warm),
      };
      const d = out.disk_cache;
      console.log(`disk cache: ${d.prompt_tokens}-token prompt, TTFT cold ${d.cold_ttft_s.toFixed(3)} s ` +
                  `-> after a restart ${d.restarted_ttft_s.toFixed(3)} s (${d.restarted_hit_tokens} ` +
                  `tokens from disk), ${d.speedup.toFixed(1)}x faster`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
