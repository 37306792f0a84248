#!/usr/bin/env bash
# Every GPU check of one session in one run on a lent H200 (see the device tool's README). Logs go to $OUT.
#   carry: .whl (torch-fidelity, prdc, pytorch-fid wheels) and .gpudata (Fashion-MNIST's four .gz IDX files)
# Order: the cheap checks first, so that a run cut short by its time limit still brings them back.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD GANBENCH_CACHE=/tmp/gbcache
T0=$SECONDS
stamp() { echo "[$((SECONDS - T0)) s] $*" >> "$OUT/env.txt"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/env.txt"
python3 -c "import torch, numpy, scipy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__)" >> "$OUT/env.txt" 2>&1

# 1. the CUDA tests
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -30 > "$OUT/test_cuda.txt"; stamp test_cuda

# 2. the LeNet sweep: 10 checkpoints x 10,000 samples x 2 default references, cold cache, then warm with --force
R=/tmp/runs; rm -rf $R
{ time python3 -m ganbench train baseline --dataset fashion-mnist --data-root .gpudata --device cuda --cuda-graphs \
    --epochs 10 --checkpoint-every 1 --out $R/ck --quiet ; } > "$OUT/lenet_sweep.txt" 2>&1
for pass in cold warm; do
  extra=(); [ $pass = warm ] && extra=(--force)
  echo "== eval $pass" >> "$OUT/lenet_sweep.txt"
  { time python3 -m ganbench eval $R/ck --extractor lenet-fashion-mnist --num-samples 10000 --data-root .gpudata \
      --device cuda --results $R/store.sqlite --quiet --format csv "${extra[@]}" > /tmp/sweep_$pass.csv ; } 2>> "$OUT/lenet_sweep.txt"
  grep -c ",ok," /tmp/sweep_$pass.csv >> "$OUT/lenet_sweep.txt"
done
grep "epoch_0010.pt" /tmp/sweep_warm.csv >> "$OUT/lenet_sweep.txt"; stamp lenet_sweep

# 3. the Inception sweep vs torch-fidelity + prdc (bench/gpu.py, random Inception weights), fp32 only
timeout 240 python3 bench/gpu.py --data-root .gpudata --epochs 3 --sweep-only --precisions fp32 > "$OUT/gpu_bench.txt" 2>&1
stamp gpu_bench

# 4. the zoo: 6 models x 3 seeds, 10 epochs, a checkpoint every 5, LeNet protocol, report. Run from /tmp with
#    relative paths, so that no path of this machine appears in the results store or the report.
REPO=$PWD; rm -rf /tmp/zoo; ln -sfn "$REPO/.gpudata" /tmp/data
( cd /tmp && CHECKPOINT_EVERY=5 timeout 330 "$REPO/bench/zoo.sh" cuda 10 zoo zoo/report data ) > "$OUT/zoo.txt" 2>&1
echo "rc $?" >> "$OUT/zoo.txt"
cp /tmp/zoo/logs/times.txt "$OUT/zoo_times.txt" 2>/dev/null
tar czf "$OUT/zoo.tgz" -C /tmp/zoo results.sqlite report logs 2>/dev/null
stamp zoo
