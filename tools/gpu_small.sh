#!/usr/bin/env bash
# One prepared GPU check of `small` (about 11 minutes on one H100/H200-class GPU):
#   1. a 2-step smoke run (stops early, and cheaply, when the GPU path is broken);
#   2. `st4r-lite bench` of tiny and PRESET on the GPU: pairs/s, FLOPs per pair, model FLOP utilisation (MFU), the
#      world's rendering rate (bf16 autocast, heads in float32, as pretraining runs);
#   3. `st4r-lite pretrain --preset PRESET` on clips rendered on the GPU, for as many steps as the bench says fit
#      in TRAIN_SECONDS (the step count is then fixed: the run is reproducible with the command in the log);
#   4. `st4r-lite export` with its held-out evaluation, and the scorecard (model on the GPU, peers on the CPU);
#   5. stage 2: STAGE2_STEPS more steps from stage 1's weights (fresh schedule at 2e-4, frame gaps up to 3), scored
#      the same way, and the learning curve of both stages.
# Usage: tools/gpu_small.sh OUT_DIR [TRAIN_SECONDS]   (records land in OUT_DIR; the checkpoints in $RUN_DIR)
# data/gpu_small was made on one H200 in two calls of a 10-minute limit: this script with stage 2 left out and
# TRAIN_SECONDS 210 (the bench gave 580 steps), then stage 2's command by hand; `STEPS=580 tools/gpu_small.sh OUT`
# runs both (about 11 minutes there: more than that machine's 10 minutes a call). The small model file (84 MiB in
# float16) is not shipped: over the ~50 MB budget.
# A dry run on a CPU: DEVICE=cpu PRESET=tiny BATCH=1 FRAMES=4 BENCH_STEPS=1 SCORE_CLIPS=1 STAGE2_STEPS=20 \
#   tools/gpu_small.sh /tmp/out 20
set -u -o pipefail
OUT=${1:?usage: tools/gpu_small.sh OUT_DIR [TRAIN_SECONDS]}
BUDGET=${2:-240}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-small}
BATCH=${BATCH:-4}            # clips per step
FRAMES=${FRAMES:-16}         # frames per clip = pairs per clip; 64 pairs a step by default
BENCH_STEPS=${BENCH_STEPS:-20}
RUN=${RUN_DIR:-/tmp/st4r_gpu_run}
SCORE_CLIPS=${SCORE_CLIPS:-16}
STAGE2_STEPS=${STAGE2_STEPS:-640}  # 0 = stage 1 only
STAGE2_TIMEOUT=${STAGE2_TIMEOUT:-600}  # seconds; an H200 needed ~215 (a slower GPU: raise it, or lower the steps)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUN"
log() { echo "[$(date +%T)] $*"; }
pairs=$((BATCH * FRAMES))

log "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "(no nvidia-smi)"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1

log "1. smoke: 2 steps of $PRESET on $DEVICE"
timeout 180 $PY -m st4r_lite.cli pretrain --preset "$PRESET" --steps 2 --batch 1 --frames 4 --device "$DEVICE" \
    --out "$RUN/smoke.pt" --overwrite --no-progress || { log "smoke run failed: stopping"; exit 1; }

log "2. bench tiny and $PRESET, $pairs pairs a step, $BATCH clips of $FRAMES frames rendered"
timeout 240 $PY -m st4r_lite.cli bench --preset tiny "$PRESET" --device "$DEVICE" --steps "$BENCH_STEPS" --warmup 3 \
    --batch "$pairs" --render-clips "$BATCH" --render-frames "$FRAMES" --json "$OUT/bench_gpu.json" || log "bench failed"

steps=${STEPS:-$($PY - "$OUT/bench_gpu.json" "$BUDGET" "$PRESET" <<'EOF'
import json, sys
path, budget, preset = sys.argv[1], float(sys.argv[2]), sys.argv[3]
try:
    r = next(r for r in json.load(open(path))["results"] if r["preset"] == preset)
    step_s = r["train_step_s"] + r["render_clips"] / r["render_clips_per_s"]
except (OSError, StopIteration, KeyError, TypeError, ZeroDivisionError):
    step_s = 1.0  # no bench: a guess
print(max(20, int(budget / (1.25 * step_s)) // 10 * 10))  # 25 % for the held-out evaluations and logging
EOF
)}
warmup=$((steps / 10 < 100 ? steps / 10 : 100))
log "3. pretrain $PRESET, stage 1: $steps steps of $pairs pairs (budget ${BUDGET}s)"
timeout $((BUDGET + 90)) $PY -m st4r_lite.cli pretrain --preset "$PRESET" --device "$DEVICE" --steps "$steps" \
    --batch "$BATCH" --frames "$FRAMES" --lr 3e-4 --warmup "$warmup" --max-frame-gap 2 --dynamic-factor 0 \
    --motion-weight 3 --eval-every $((steps / 5)) --save-every 100 --no-progress --out "$RUN/$PRESET.pt" --overwrite \
    || log "pretrain stopped early (its last checkpoint is evaluated)"
cp "$RUN/$PRESET.jsonl" "$OUT/${PRESET}_train_log_stage1.jsonl"

score() {  # score RUN_FILE SUFFIX: export with the held-out evaluation, then the scorecard
    $PY -m st4r_lite.cli export "$1" "${1%.pt}_model.pt" --eval "$OUT/${PRESET}_eval$2.json" \
        || { log "export failed"; return 1; }
    timeout 200 $PY -m st4r_lite.studies.scorecard "${1%.pt}_model.pt" --train-ckpt "$1" --num-clips "$SCORE_CLIPS" \
        --frames 16 --device "$DEVICE" --json "$OUT/${PRESET}_scorecard$2.json" || log "scorecard failed"
}
log "4. stage 1: export and evaluate"
score "$RUN/$PRESET.pt" _stage1

if [ "$STAGE2_STEPS" -gt 0 ]; then
    log "5. stage 2: $STAGE2_STEPS steps from stage 1's weights, frame gaps up to 3, then export and evaluate"
    timeout "$STAGE2_TIMEOUT" $PY -m st4r_lite.cli pretrain --preset "$PRESET" --device "$DEVICE" \
        --init "$RUN/$PRESET.pt" --steps "$STAGE2_STEPS" --batch "$BATCH" --frames "$FRAMES" --lr 2e-4 --warmup 50 \
        --max-frame-gap 3 --dynamic-factor 0 --motion-weight 3 --eval-every $((STAGE2_STEPS / 4)) --save-every 100 \
        --no-progress --out "$RUN/${PRESET}2.pt" --overwrite || log "stage 2 stopped early (its last checkpoint is evaluated)"
    cp "$RUN/${PRESET}2.jsonl" "$OUT/${PRESET}_train_log_stage2.jsonl"
    score "$RUN/${PRESET}2.pt" ""
    $PY -m st4r_lite.studies.learning_curve "$OUT/${PRESET}_train_log_stage1.jsonl" \
        "$OUT/${PRESET}_train_log_stage2.jsonl" --pairs-per-step "$pairs" --png "$OUT/learning_curve.png"
fi
ls -la "$RUN" "$OUT"
log "done"
