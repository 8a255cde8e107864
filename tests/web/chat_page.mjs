// The chat page in a real browser: starts `whale serve`, drives Debian's chromium through
// playwright-core and checks what a person sees: the model name, a streamed answer whose text
// equals the server's own non-streamed answer (reasoning in the "Thinking" block, answer below),
// a second turn that sends back the answer but not the reasoning, Stop in the middle of a long
// answer (and the server cancelling it, per /metrics), New chat, server errors shown on the page,
// and a second server run with --api-key. Screenshots (chat_page*.png) and the server logs go to
// the artifact folder.
//
//   node tests/web/chat_page.mjs --whale BIN --model DIR --out ARTIFACT_DIR
//   node tests/web/chat_page.mjs --url http://127.0.0.1:8090 --out DIR   (a server already running,
//                                                                         e.g. tests/web/mock_server.mjs)
import fs from "node:fs";
import path from "node:path";

import { importDep, parseMetrics, scriptText, splitReasoning, startServer } from "./lib.mjs";

const { chromium } = await importDep("playwright-core", "index.mjs");

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    if (!["whale", "model", "out", "url"].includes(name) || i + 1 >= argv.length)
      throw new Error(`usage: chat_page.mjs --whale BIN --model DIR --out DIR [--url URL]; bad '${argv[i]}'`);
    args[name] = argv[i + 1];
  }
  if (!args.out || !(args.url || (args.whale && args.model)))
    throw new Error("usage: chat_page.mjs --whale BIN --model DIR --out DIR (or --url URL --out DIR)");
  return args;
}

class Failure extends Error {}
function check(cond, message) {
  if (!cond) throw new Failure(message);
}
const t0 = Date.now();
function step(text) {
  console.log(`[chat_page ${((Date.now() - t0) / 1000).toFixed(1)}s] ${text}`);
}

// Polls fn (in node) until it returns a truthy value.
async function until(fn, what, timeoutMs = 30000, intervalMs = 50) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Failure(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const args = parseArgs(process.argv.slice(2));
fs.mkdirSync(args.out, { recursive: true });
let server = null;
let keyed = null;  // a second server, run with --api-key
let browser = null;
let page = null;
let failed = false;

try {
  let base;
  if (args.url) {
    base = args.url.replace(/\/$/, "");
  } else {
    server = await startServer({ whale: args.whale, model: args.model,
                                 logFile: path.join(args.out, "chat_page_server.log") });
    base = server.url;
  }
  step(`server at ${base}`);
  const origin = new URL(base).origin;

  // Independent references: the model id and chat style from the model directory itself, and for
  // the scripted model (scripts/gen_model.py --script, directory named scripted-*) its greedy text.
  let expectedModel = null;
  let r1 = null;
  let scripted = null;
  if (args.model) {
    expectedModel = path.basename(path.resolve(args.model));
    const cfg = JSON.parse(fs.readFileSync(path.join(args.model, "tokenizer_config.json"), "utf8"));
    r1 = String(cfg.chat_template || "").includes("<｜Assistant｜><think>");
    if (expectedModel.startsWith("scripted")) scripted = splitReasoning(scriptText());
  } else {
    expectedModel = (await (await fetch(`${base}/v1/models`)).json()).data[0].id;
  }

  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : [],
  });
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // Console errors other than the browser's own note on each expected HTTP error status.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(m.text());
  });
  // Every request the page makes: it must load nothing from elsewhere (works offline).
  const chatBodies = [];
  const foreign = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(origin) && !r.url().startsWith("data:")) foreign.push(r.url());
    if (r.url() === `${base}/v1/chat/completions`) chatBodies.push(JSON.parse(r.postData()));
  });

  const text = (sel) => page.locator(sel).first().textContent();
  const visible = (sel) => page.locator(sel).first().isVisible();
  const assistantCount = () => page.locator("#messages .assistant").count();
  // The nth assistant message's reasoning and answer text (what the person sees).
  const assistantText = (n) => page.evaluate((n) => {
    const m = document.querySelectorAll("#messages .assistant")[n];
    return m ? { reasoning: m.querySelector(".reasoning").textContent,
                 content: m.querySelector(".content").textContent,
                 thinkingShown: !m.querySelector(".thinking").hidden,
                 thinkingOpen: m.querySelector(".thinking").open,
                 meta: m.querySelector(".meta").textContent } : null;
  }, n);
  // Records every length the nth assistant message's text goes through, to see it stream.
  const recordGrowth = (n) => page.evaluate((n) => {
    window.__lengths = [];
    const note = () => {
      const m = document.querySelectorAll("#messages .assistant")[n];
      if (!m) return;
      const len = m.querySelector(".reasoning").textContent.length + m.querySelector(".content").textContent.length;
      if (window.__lengths[window.__lengths.length - 1] !== len) window.__lengths.push(len);
    };
    new MutationObserver(note).observe(document.getElementById("messages"),
                                       { childList: true, subtree: true, characterData: true });
  }, n);
  async function setSettings(temperature, maxTokens) {
    if (!(await visible("#temperature"))) await page.click("#settings-toggle");
    await page.fill("#temperature", String(temperature));
    await page.fill("#max-tokens", String(maxTokens));
    await page.click("#settings-toggle");  // fold the panel away again
  }
  async function sendMessage(message) {
    await page.fill("#input", message);
    await page.press("#input", "Enter");
  }
  const idle = async () => (await visible("#send")) && !(await visible("#stop"));
  // The same request without streaming, straight to the server: the reference for the page.
  async function reference(body) {
    const resp = await fetch(`${base}/v1/chat/completions`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, stream: false, stream_options: undefined }),
    });
    return { status: resp.status, json: await resp.json() };
  }

  step("open the page");
  const resp = await page.goto(`${base}/`);
  check(resp.ok(), `GET / answered ${resp.status()}`);
  check(/text\/html/.test(resp.headers()["content-type"] || ""), `GET / content-type ${resp.headers()["content-type"]}`);
  await until(async () => (await text("#model")) === expectedModel,
              `the header to show the model '${expectedModel}' (shows '${await text("#model")}')`);
  check(!(await visible("#error")), "an error is shown on load: " + (await text("#error")));
  check(await visible("#send") && !(await visible("#stop")), "Send should show and Stop hide when idle");

  step("first turn: greedy, streamed, equal to the non-streamed answer");
  await setSettings(0, 100);
  await recordGrowth(0);
  // The scripted answer is short and the server fast: on a busy machine the browser can receive
  // the whole stream in one read and paint it at once, whatever the network emulation says. So for
  // this turn the page's fetch hands its reader one server-sent event at a time, 20 ms apart: the
  // bytes are the server's own, only the read boundaries are fixed. (That the server itself sends
  // the events apart is checked with real clients in openai_client.mjs.)
  await page.evaluate(() => {
    const original = window.fetch;
    window.__eventByEvent = true;
    window.fetch = async (...a) => {
      const resp = await original(...a);
      if (!window.__eventByEvent || !resp.body ||
          !(resp.headers.get("content-type") || "").includes("text/event-stream")) return resp;
      const reader = resp.body.getReader();
      const enc = new TextEncoder();
      const dec = new TextDecoder();
      let buf = "";
      const events = new ReadableStream({
        async pull(ctrl) {
          for (;;) {
            const end = buf.indexOf("\n\n");
            if (end >= 0) {
              const event = buf.slice(0, end + 2);
              buf = buf.slice(end + 2);
              await new Promise((r) => setTimeout(r, 20));
              ctrl.enqueue(enc.encode(event));
              return;
            }
            const { value, done } = await reader.read();
            if (done) {
              if (buf) ctrl.enqueue(enc.encode(buf));
              buf = "";
              ctrl.close();
              return;
            }
            buf += dec.decode(value, { stream: true });
          }
        },
        cancel(reason) { return reader.cancel(reason); },
      });
      return new Response(events, { status: resp.status, statusText: resp.statusText, headers: resp.headers });
    };
  });
  await sendMessage("Hello! Who are you?");
  await until(async () => (await page.locator("#messages .user").count()) === 1, "the user message");
  check((await text("#messages .user .content")) === "Hello! Who are you?", "the user message text");
  check((await page.inputValue("#input")) === "", "the input should be cleared after sending");
  await until(idle, "the first answer to finish", 60000);
  check(!(await visible("#error")), "error after the first turn: " + (await text("#error")));
  const first = await assistantText(0);
  const lengths = await page.evaluate(() => window.__lengths);
  check(first.reasoning.length + first.content.length > 0, "the first answer is empty");
  check(lengths.length >= 3 && lengths.every((v, i) => i === 0 || v > lengths[i - 1]),
        `the answer should appear piece by piece, growing; lengths seen: ${JSON.stringify(lengths)}`);
  await page.evaluate(() => { window.__eventByEvent = false; });
  check(chatBodies.length === 1, `expected 1 chat request, saw ${chatBodies.length}`);
  const body1 = chatBodies[0];
  check(body1.stream === true && body1.temperature === 0 && body1.max_tokens === 100 &&
        body1.model === expectedModel, "the page's request: " + JSON.stringify(body1));
  check(JSON.stringify(body1.messages) === JSON.stringify([{ role: "user", content: "Hello! Who are you?" }]),
        "first request messages: " + JSON.stringify(body1.messages));
  const ref1 = await reference(body1);
  check(ref1.status === 200, "reference request failed: " + JSON.stringify(ref1.json));
  const msg1 = ref1.json.choices[0].message;
  check(first.content === (msg1.content ?? ""),
        `page answer ${JSON.stringify(first.content)} != server's ${JSON.stringify(msg1.content)}`);
  check(first.reasoning === (msg1.reasoning_content ?? ""),
        `page reasoning ${JSON.stringify(first.reasoning)} != server's ${JSON.stringify(msg1.reasoning_content)}`);
  if (r1) check(first.reasoning.length > 0, "an R1-template model's answer shows no reasoning");
  if (scripted) {
    check(first.reasoning === scripted.reasoning && first.content === scripted.content,
          `the scripted model's answer should be ${JSON.stringify(scripted)}`);
  }
  check(first.thinkingShown === first.reasoning.length > 0, "the Thinking block shows iff there is reasoning");
  if (first.reasoning && first.content) check(!first.thinkingOpen, "the Thinking block should fold once the answer starts");
  step(`reasoning ${first.reasoning.length} chars, answer ${first.content.length} chars; meta '${first.meta}'`);

  step("second turn: the answer goes back, the reasoning does not");
  await sendMessage("Tell me more.");
  await until(async () => (await assistantCount()) === 2, "the second assistant message");
  await until(idle, "the second answer to finish", 60000);
  check(!(await visible("#error")), "error after the second turn: " + (await text("#error")));
  const body2 = chatBodies[1];
  check(JSON.stringify(body2.messages) === JSON.stringify([
          { role: "user", content: "Hello! Who are you?" },
          { role: "assistant", content: first.content },
          { role: "user", content: "Tell me more." }]),
        "second request messages: " + JSON.stringify(body2.messages));
  const second = await assistantText(1);
  const ref2 = await reference(body2);
  check(ref2.status === 200, "reference request failed: " + JSON.stringify(ref2.json));
  check(second.content === (ref2.json.choices[0].message.content ?? "") &&
        second.reasoning === (ref2.json.choices[0].message.reasoning_content ?? ""),
        "second answer differs from the server's non-streamed one");
  await page.screenshot({ path: path.join(args.out, "chat_page.png") });

  step("Stop in the middle of a long answer");
  // Temperature 2 takes even the scripted model off its script into a long random text.
  await setSettings(2, 1500);
  await sendMessage("Write a very long story.");
  await until(async () => (await assistantCount()) === 3, "the third assistant message");
  const len3 = async () => { const a = await assistantText(2); return a.reasoning.length + a.content.length; };
  const seen = await until(len3, "the long answer to start", 60000, 10);
  await until(async () => (await len3()) > seen, "the long answer to grow", 30000, 10);
  check(await visible("#stop") && !(await visible("#send")), "Stop should replace Send while generating");
  await page.screenshot({ path: path.join(args.out, "chat_page_streaming.png") });
  await page.click("#stop");
  await until(idle, "Send to come back after Stop", 5000);
  const atStop = await assistantText(2);
  await sleep(1000);
  const later = await assistantText(2);
  check(later.reasoning === atStop.reasoning && later.content === atStop.content, "the text kept growing after Stop");
  check(!(await visible("#error")), "Stop showed an error: " + (await text("#error")));
  check(/stopped/.test(later.meta), `the message should say it was stopped; meta '${later.meta}'`);
  step(`stopped after ${atStop.reasoning.length + atStop.content.length} chars`);
  if (!args.url) {
    // The server saw the disconnect: generation cancelled, the slot free, no more tokens made.
    const metrics = async () => parseMetrics(await (await fetch(`${base}/metrics`)).text());
    const m = await until(async () => {
      const m = await metrics();
      return m.whale_active_slots === 0 && m.whale_client_disconnects_total >= 1 && m;
    }, "the server to cancel the stopped generation and free its slot", 5000);
    await sleep(500);
    check((await metrics()).whale_completion_tokens_total === m.whale_completion_tokens_total,
          "the server kept generating after Stop");
  }

  step("New chat clears the conversation");
  await page.click("#new-chat");
  check((await page.locator("#messages > *").count()) === 0, "messages remain after New chat");
  await setSettings(0, 8);
  await sendMessage("A fresh start.");
  await until(idle, "the answer in the new chat", 60000);
  check(JSON.stringify(chatBodies[chatBodies.length - 1].messages) ===
        JSON.stringify([{ role: "user", content: "A fresh start." }]),
        "after New chat the request still carries old turns: " +
        JSON.stringify(chatBodies[chatBodies.length - 1].messages));

  step("a server error is shown to the person");
  for (const [temperature, maxTokens] of [[0, -5], [5, 8]]) {
    await page.click("#new-chat");
    await setSettings(temperature, maxTokens);
    const before = chatBodies.length;
    await sendMessage("This should fail.");
    await until(async () => (await visible("#error")) && (await idle()), "the error to show", 30000);
    const refErr = await reference(chatBodies[before]);
    check(refErr.status === 400 && refErr.json.error && refErr.json.error.message,
          `temperature ${temperature}, max_tokens ${maxTokens}: the server answered ${refErr.status} ` +
          JSON.stringify(refErr.json));
    const shown = await text("#error");
    check(shown.includes(refErr.json.error.message) && shown.includes("400"),
          `the error shown '${shown}' lacks the server's '${refErr.json.error.message}'`);
    check((await page.inputValue("#input")) === "This should fail.", "the failed message should return to the input");
    check((await assistantCount()) === 0, "a failed request should leave no assistant message");
    step(`shown: ${shown}`);
  }
  await page.screenshot({ path: path.join(args.out, "chat_page_error.png") });
  await setSettings(0, 8);
  await page.press("#input", "Enter");
  await until(idle, "the retried answer", 60000);
  check(!(await visible("#error")) && (await assistantCount()) === 1, "a successful retry should clear the error");

  step("dark colour scheme");
  await page.emulateMedia({ colorScheme: "dark" });
  await page.screenshot({ path: path.join(args.out, "chat_page_dark.png") });

  if (!args.url) {
    step("a server with --api-key: the page asks for the key, then sends it");
    keyed = await startServer({ whale: args.whale, model: args.model, extra: ["--api-key", "sesame"],
                                logFile: path.join(args.out, "chat_page_server_key.log") });
    const keyPage = await context.newPage();
    keyPage.on("pageerror", (e) => pageErrors.push(String(e)));
    await keyPage.goto(`${keyed.url}/`);
    await until(async () => keyPage.locator("#error").isVisible(), "the missing key to be reported");
    const keyError = await keyPage.locator("#error").textContent();
    check(/401/.test(keyError) && /API key/.test(keyError), `the missing-key error reads '${keyError}'`);
    check((await keyPage.locator("#model").textContent()) !== expectedModel, "model shown without the key");
    await keyPage.click("#settings-toggle");
    await keyPage.fill("#api-key", "sesame");
    await keyPage.press("#api-key", "Tab");  // "change": the page retries with the key
    await until(async () => (await keyPage.locator("#model").textContent()) === expectedModel,
                "the model name once the key is set");
    check(!(await keyPage.locator("#error").isVisible()), "the key error should clear once the key works");
    await keyPage.fill("#temperature", "0");
    await keyPage.fill("#max-tokens", "8");
    await keyPage.fill("#input", "Hello with a key.");
    await keyPage.press("#input", "Enter");
    await until(async () => (await keyPage.locator("#messages .assistant").count()) === 1 &&
                             (await keyPage.locator("#send").isVisible()), "the answer with the key", 60000);
    check(!(await keyPage.locator("#error").isVisible()),
          "error with the key set: " + (await keyPage.locator("#error").textContent()));
    const answered = await keyPage.evaluate(() => document.querySelector("#messages .assistant").textContent);
    check(answered.length > 0, "no answer with the key set");
    await keyPage.close();
  }

  check(foreign.length === 0, "the page loaded foreign resources: " + foreign.join(", "));
  check(pageErrors.length === 0, "errors in the page's console: " + pageErrors.join("\n"));
  step("PASS");
} catch (e) {
  failed = true;
  console.error(`[chat_page] FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
  if (server) console.error(`--- whale serve log ---\n${server.log().slice(-4000)}`);
  if (page) await page.screenshot({ path: path.join(args.out, "chat_page_failure.png") }).catch(() => {});
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const s of [server, keyed]) {
    if (!s) continue;
    const { code, signal } = await s.stop();
    if (code !== 0) {
      failed = true;
      console.error(`[chat_page] FAIL: whale serve did not exit 0 on SIGTERM (code ${code}, signal ${signal})`);
    }
  }
}
process.exit(failed ? 1 : 0);
