// A stand-in for `whale serve` while developing the chat page (not used by ctest): serves
// src/serve/page/index.html at / and imitates the streaming chat API with a canned reasoning and
// answer, the OpenAI error objects for bad settings, and --api-key.
//
//   node tests/web/mock_server.mjs [--port 8090] [--api-key KEY] [--delay-ms 40]
// Prints "whale serve: listening on http://127.0.0.1:PORT" to stderr like the real server.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const pagePath = path.join(here, "../../src/serve/page/index.html");
const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const port = Number(arg("--port", "8090"));
const apiKey = arg("--api-key", null);
const delayMs = Number(arg("--delay-ms", "40"));

const REASONING = "The person greets me. I should answer briefly and politely, " +
  "and mention that I am a small test model.";
const ANSWER = "Hello! I am a tiny mock of whale. <b>Tags</b> stay text.\nA second line.";
const words = (s) => s.match(/\S+\s*|\s+/g);

function sendError(res, status, message, type, param = null, code = null) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify({ error: { message, type, param, code } }));
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/") {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end(fs.readFileSync(pagePath));
    return;
  }
  if (apiKey && req.url.startsWith("/v1/") && req.headers.authorization !== `Bearer ${apiKey}`) {
    sendError(res, 401, "Incorrect API key provided.", "authentication_error", null, "invalid_api_key");
    return;
  }
  if (req.method === "GET" && req.url === "/v1/models") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ object: "list",
      data: [{ id: "mock-r1", object: "model", created: 0, owned_by: "whale" }] }));
    return;
  }
  if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
    sendError(res, 404, `No route ${req.method} ${req.url}`, "invalid_request_error");
    return;
  }
  let body = "";
  req.on("data", (d) => (body += d));
  req.on("end", () => {
    let r;
    try { r = JSON.parse(body); } catch (e) {
      return sendError(res, 400, "Malformed JSON: " + e.message, "invalid_request_error");
    }
    if (r.max_tokens !== undefined && !(Number.isInteger(r.max_tokens) && r.max_tokens >= 1))
      return sendError(res, 400, "max_tokens must be an integer >= 1", "invalid_request_error", "max_tokens");
    if (r.temperature !== undefined && !(r.temperature >= 0 && r.temperature <= 2))
      return sendError(res, 400, "temperature must be between 0 and 2", "invalid_request_error", "temperature");
    const last = r.messages[r.messages.length - 1].content;
    const tokens = [...words(REASONING).map((t) => ({ reasoning_content: t })),
                    ...words(ANSWER + ` (turn ${r.messages.length}, you said: ${last})`)
                        .map((t) => ({ content: t }))];
    // A long request (max_tokens > 100) keeps repeating the answer until max_tokens, so the page's
    // Stop button can be tried.
    const limit = r.max_tokens ?? 1024;
    const out = limit > 100 ? Array.from({ length: limit }, (_, i) => tokens[i % tokens.length])
                            : tokens.slice(0, limit);
    const id = "chatcmpl-mock", created = Math.floor(Date.now() / 1000), model = "mock-r1";
    const finish_reason = limit < tokens.length || limit > 100 ? "length" : "stop";
    const usage = { prompt_tokens: 20, completion_tokens: out.length, total_tokens: 20 + out.length,
                    prompt_cache_hit_tokens: 12, prompt_cache_miss_tokens: 8 };
    if (!r.stream) {
      const join = (key) => out.map((t) => t[key] ?? "").join("");
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ id, object: "chat.completion", created, model, usage,
        choices: [{ index: 0, finish_reason, message: { role: "assistant", content: join("content"),
                                                        reasoning_content: join("reasoning_content") } }] }));
      return;
    }
    const chunk = (delta, finish_reason = null) =>
      `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model,
                                choices: [{ index: 0, delta, finish_reason }] })}\n\n`;
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    res.write(chunk({ role: "assistant" }));
    let i = 0;
    const timer = setInterval(() => {
      if (i < out.length) { res.write(chunk(out[i++])); return; }
      clearInterval(timer);
      res.write(chunk({}, finish_reason));
      if (r.stream_options?.include_usage) {
        res.write(`data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model,
                                            choices: [], usage })}\n\n`);
      }
      res.end("data: [DONE]\n\n");
    }, delayMs);
    res.on("close", () => clearInterval(timer));
  });
});
server.listen(port, "127.0.0.1", () => {
  console.error(`whale serve: listening on http://127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
