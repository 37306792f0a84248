#!/usr/bin/env bash
# Train the whole model zoo (every model x seeds 0,1,2) under one epoch budget, evaluate every kept checkpoint with
# the LeNet protocol, and write the report. Unattended: rerunning it finishes what an interrupted run left (--resume
# continues each seed, eval skips what is stored).
#
#   bench/zoo.sh DEVICE EPOCHS OUT REPORT DATA_ROOT
#     DEVICE     cpu | cuda | auto (on cuda every model but wgan-gp trains with --cuda-graphs)
#     EPOCHS     the budget: epochs per run, the same for every model
#     OUT        runs under OUT/runs/<model>/fashion-mnist/seed<k>/, the results store OUT/results.sqlite, logs OUT/logs/
#     REPORT     the folder `ganbench report --out` writes
#     DATA_ROOT  Fashion-MNIST's IDX files (e.g. /usr/share/datasets/fashion-mnist)
#
# Environment (all optional):
#   TRAIN_EXTRA       extra `ganbench train` flags, e.g. "--max-train-images 256" for a smoke test
#   EVAL_EXTRA        extra `ganbench eval` flags
#   MODELS            models to train (default: baseline minimax lsgan wgan-gp hinge dcgan)
#   SEEDS             default 0,1,2; each model trains its seeds in parallel, one --jobs worker per seed
#   PARALLEL          models trained at once (default: all of them; on a GPU the small models leave it mostly idle)
#   NUM_SAMPLES       generated samples per checkpoint for eval (default 10000; only a smoke test should lower it)
#   CHECKPOINT_EVERY  keep a checkpoint every N epochs (default: ganbench's, 10; the last epoch is always kept)
#   PYTHON            the interpreter with ganbench importable (default: python3)
#
# CPU smoke test (about 4 minutes on 2 cores):
#   PYTHON=.venv/bin/python TRAIN_EXTRA="--max-train-images 256" NUM_SAMPLES=500 PARALLEL=2 \
#     bench/zoo.sh cpu 1 /tmp/zoo /tmp/zoo-report /usr/share/datasets/fashion-mnist
set -euo pipefail

if [ $# -ne 5 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
DEVICE=$1 EPOCHS=$2 OUT=$3 REPORT=$4 DATA_ROOT=$5
PYTHON=${PYTHON:-python3}
MODELS=${MODELS:-baseline minimax lsgan wgan-gp hinge dcgan}
SEEDS=${SEEDS:-0,1,2}
NUM_SAMPLES=${NUM_SAMPLES:-10000}
read -r -a models <<< "$MODELS"
PARALLEL=${PARALLEL:-${#models[@]}}
JOBS=$(awk -F, '{print NF}' <<< "$SEEDS")
read -r -a train_extra <<< "${TRAIN_EXTRA:-}"
read -r -a eval_extra <<< "${EVAL_EXTRA:-}"
[ -n "${CHECKPOINT_EVERY:-}" ] && train_extra+=(--checkpoint-every "$CHECKPOINT_EVERY")
# One thread per process: PARALLEL x JOBS processes already fill the cores (on a GPU the CPU only launches kernels).
# Several multi-threaded processes on a few cores spin against each other: on 2 cores, 6 processes of 2 threads
# each finished no epoch in 20 minutes.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

mkdir -p "$OUT/logs"
TIMES="$OUT/logs/times.txt"
{ echo "== $(date -u +%FT%TZ) bench/zoo.sh $*"; echo "models: ${models[*]}; seeds $SEEDS; TRAIN_EXTRA=${TRAIN_EXTRA:-}"; } >> "$TIMES"

train() {  # one model, all its seeds in $JOBS worker processes
  local model=$1 graphs=() start=$SECONDS
  if [ "$DEVICE" = cuda ] && [ "$model" != wgan-gp ]; then graphs=(--cuda-graphs); fi  # wgan-gp refuses it
  if "$PYTHON" -m ganbench train "$model" --dataset fashion-mnist --data-root "$DATA_ROOT" --device "$DEVICE" \
      --epochs "$EPOCHS" --seeds "$SEEDS" --jobs "$JOBS" --out "$OUT/runs" --resume --quiet "${graphs[@]}" \
      "${train_extra[@]}" > "$OUT/logs/train_$model.log" 2>&1; then
    echo "train $model: $((SECONDS - start)) s" >> "$TIMES"
  else
    echo "train $model: FAILED after $((SECONDS - start)) s (see logs/train_$model.log)" >> "$TIMES"
    return 1
  fi
}

start=$SECONDS
running=0 failed=0
for model in "${models[@]}"; do
  train "$model" &
  running=$((running + 1))
  if [ $running -ge "$PARALLEL" ]; then
    wait -n || failed=1  # the first model to finish frees its slot (waiting for the oldest left slots idle)
    running=$((running - 1))
  fi
done
while [ $running -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
echo "train all: $((SECONDS - start)) s" >> "$TIMES"
if [ $failed -ne 0 ]; then
  echo "bench/zoo.sh: a model failed to train; see $TIMES and $OUT/logs/; rerun to resume" >&2
  tail -n 3 "$OUT"/logs/train_*.log >&2
  exit 1
fi

start=$SECONDS eval_rc=0
"$PYTHON" -m ganbench eval "$OUT/runs" --extractor lenet-fashion-mnist --num-samples "$NUM_SAMPLES" \
  --data-root "$DATA_ROOT" --device "$DEVICE" --results "$OUT/results.sqlite" --quiet "${eval_extra[@]}" \
  > "$OUT/logs/eval.txt" 2> "$OUT/logs/eval.log" || eval_rc=$?
echo "eval: $((SECONDS - start)) s, exit $eval_rc" >> "$TIMES"
if [ $eval_rc -ne 0 ] && [ $eval_rc -ne 1 ]; then  # 1: some sources failed (recorded as failed rows); report the rest
  echo "bench/zoo.sh: eval failed (exit $eval_rc); see $OUT/logs/eval.log" >&2
  tail -n 3 "$OUT/logs/eval.log" >&2
  exit 1
fi

start=$SECONDS
"$PYTHON" -m ganbench report --results "$OUT/results.sqlite" --out "$REPORT" > "$OUT/logs/report.txt" 2> "$OUT/logs/report.log"
echo "report: $((SECONDS - start)) s" >> "$TIMES"
cat "$TIMES"
[ $eval_rc -eq 0 ] || echo "bench/zoo.sh: some checkpoints failed to evaluate; see $OUT/logs/eval.log" >&2
echo "bench/zoo.sh: runs in $OUT/runs, results in $OUT/results.sqlite, report in $REPORT"
