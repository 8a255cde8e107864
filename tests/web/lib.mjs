// Shared helpers of the server end-to-end tests (tests/web/*.mjs): command-line arguments, starting
// `whale serve` on a free port and stopping it (killed at exit whatever happens), the artifact
// directory, the reference tokenizer and what the scripted test model (scripts/gen_model.py
// --script) is expected to answer.
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const nodeModules = process.env.WHALE_NODE_MODULES ?? join(repo, ".deps", "node_modules");

/** Imports a package from the repository's node_modules by absolute path (no package.json here). */
export async function importDep(name, entry) {
  return import(pathToFileURL(join(nodeModules, name, entry)).href);
}

/** --whale BIN --model DIR --out DIR [--key value ...] -> {whale, model, out, ...}. */
export function parseArgs(argv = process.argv.slice(2)) {
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([\w-]+)$/.exec(argv[i]);
    if (!m || i + 1 >= argv.length) usage(`bad argument: ${argv[i]}`);
    args[m[1]] = argv[++i];
  }
  for (const need of ["whale", "model", "out"]) if (!args[need]) usage(`missing --${need}`);
  args.modelId = basename(resolve(args.model));
  return args;
}

function usage(msg) {
  console.error(
    `${msg}\nusage: node ${basename(process.argv[1])} --whale BIN --model DIR --out DIR`,
  );
  process.exit(2);
}

/** <out>/<name>/ (created). */
export function artifactDir(out, name) {
  const dir = join(out, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

const running = new Set(); // servers not yet stopped: killed when this process exits

process.on("exit", () => {
  for (const s of running) {
    s.proc.kill("SIGKILL");
    s.saveLog("killed by the test at exit");
  }
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));

/**
 * Starts `whale serve -m MODEL --port 0 ...extra` and resolves once it prints
 * "whale serve: listening on http://HOST:PORT". Returns {url, proc, log(), exited, stop()}.
 * stop() sends SIGTERM and resolves to {code, signal} (SIGKILL after `graceMs`). The server's
 * stderr is written to `logFile` (if given) when it exits.
 */
export async function startServer({ whale, model, extra = [], logFile, startMs = 120000 }) {
  const argv = ["serve", "-m", model, "--port", "0", ...extra];
  const proc = spawn(whale, argv, { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  let stdout = "";
  proc.stdout.on("data", (d) => (stdout += d));
  const server = { proc, log: () => stderr + (stdout ? `\n[stdout]\n${stdout}` : "") };
  server.saveLog = (end) => {
    if (logFile)
      writeFileSync(logFile, `$ ${whale} ${argv.join(" ")}\n${server.log()}\n[${end}]\n`);
  };
  running.add(server);
  server.exited = new Promise((res) =>
    proc.on("exit", (code, signal) => {
      running.delete(server);
      server.saveLog(`exit code ${code}, signal ${signal}`);
      res({ code, signal });
    }),
  );
  server.url = await new Promise((res, rej) => {
    const timer = setTimeout(() => {
      rej(new Error(`whale serve printed no "listening on" line in ${startMs} ms:\n${stderr}`));
    }, startMs);
    proc.on("error", (e) => {
      clearTimeout(timer);
      rej(new Error(`cannot start ${whale}: ${e.message}`));
    });
    proc.stderr.on("data", (d) => {
      stderr += d;
      const m = /whale serve: listening on (http:\/\/\S+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        res(m[1].replace(/\/$/, ""));
      }
    });
    server.exited.then(({ code, signal }) => {
      clearTimeout(timer);
      rej(
        new Error(
          `whale serve exited (code ${code}, signal ${signal}) before listening:\n` + server.log(),
        ),
      );
    });
  });
  server.stop = async (graceMs = 15000) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return server.exited;
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
    const r = await server.exited;
    clearTimeout(timer);
    return r;
  };
  return server;
}

/** Runs main(); any exception prints and exits 1 (the exit handler kills the servers). */
export function run(main) {
  main().then(
    () => process.exit(0),
    (e) => {
      console.error(`FAIL: ${e?.stack ?? e}`);
      process.exit(1);
    },
  );
}

/** Fails the test (exit 1, servers killed) if still running after `ms`; `state()` says why. */
export function watchdog(ms, state = () => "") {
  setTimeout(() => {
    console.error(`FAIL: still running after ${ms / 1000} s ${state()}`);
    process.exit(1);
  }, ms).unref();
}

/** Prints one check's outcome as it goes, so a failure shows what passed before it. */
export function ok(what) {
  console.log(`ok - ${what}`);
}

// ---------------------------------------------------------------------------------------------
// The scripted model: its greedy answer to any R1 chat prompt is tests/configs/scripted-r1.txt.
// ---------------------------------------------------------------------------------------------

const SCRIPT_FILE = join(repo, "tests", "configs", "scripted-r1.txt");
const BOS = "<｜begin▁of▁sentence｜>";

/** The script as gen_model.py reads it (one trailing newline is not part of it). */
export function scriptText() {
  return readFileSync(SCRIPT_FILE, "utf8").replace(/\n$/, "");
}

/** The served model's greedy answer to a fill-in-the-middle prompt (gen_model.py --fim-script). */
export function fimScriptText() {
  return readFileSync(SCRIPT_FILE.replace("scripted-r1.txt", "scripted-fim.txt"), "utf8").replace(
    /\n$/,
    "",
  );
}

/**
 * DeepSeek API split of a generated R1 text, written from its documented behaviour (not from the
 * server's code): reasoning_content is the text before "</think>" (an opening "<think>" dropped),
 * whitespace-trimmed; content is what follows, leading whitespace trimmed. Without "</think>"
 * everything is reasoning.
 */
export function splitReasoning(text) {
  const end = text.indexOf("</think>");
  const reasoning = (end < 0 ? text : text.slice(0, end))
    .trim()
    .replace(/^<think>/, "")
    .trim();
  const content = end < 0 ? "" : text.slice(end + "</think>".length).trimStart();
  return { reasoning, content };
}

/** The reference tokenizer (@lenml/tokenizers) loaded with the model directory's files. */
export async function loadTokenizer(modelDir) {
  const { TokenizerLoader } = await importDep("@lenml/tokenizers", "dist/main.mjs");
  const read = (f) => JSON.parse(readFileSync(join(modelDir, f), "utf8"));
  const tok = TokenizerLoader.fromPreTrained({
    tokenizerJSON: read("tokenizer.json"),
    tokenizerConfig: read("tokenizer_config.json"),
  });
  return {
    encode: (text) => tok.encode(text, { add_special_tokens: false }),
    decode: (ids) => tok.decode(ids),
  };
}

/**
 * The DeepSeek-R1 chat template (tokenizer_config.json of deepseek-ai/DeepSeek-R1) for plain
 * system/user/assistant messages with the generation prompt; assistant turns keep only the text
 * after the last "</think>".
 */
export function renderR1(messages) {
  let out =
    BOS +
    messages
      .filter((m) => m.role === "system")
      .map((m) => m.content)
      .join("\n\n");
  for (const m of messages) {
    if (m.role === "user") out += "<｜User｜>" + m.content;
    if (m.role === "assistant") {
      out += "<｜Assistant｜>" + m.content.split("</think>").at(-1) + "<｜end▁of▁sentence｜>";
    }
  }
  return out + "<｜Assistant｜><think>\n";
}

/** Parses Prometheus text: {name: value} (labels dropped, values of one name summed). */
export function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) out[m[1]] = (out[m[1]] ?? 0) + Number(m[3]);
  }
  return out;
}

/** Percentile (nearest rank) of an unsorted array of numbers. */
export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
