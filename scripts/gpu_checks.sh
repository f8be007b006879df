#!/usr/bin/env bash
# Every GPU check in one run of a few minutes, on one GPU machine (prepared for the
# `device` tool; any CUDA machine with this checkout and its Python dependencies will do):
#
#   bash scripts/gpu_checks.sh [OUT_DIR]          (default: $OUT, else ./gpu_checks)
#
# 1. training throughput at paper width (ResNet-18 width 64, 64 px, 1000 per class): the plain
#    PyTorch loop against the project loop in fp32, bf16, channels-last, both, and torch.compile;
#    images/s, peak memory, ratios (scripts/bench_train.py --paper --compile);
# 2. accuracy of the defaults on a GPU (bf16 + channels-last, train.precision=auto) against fp32 on
#    the same seeds: the embedded UML run, 3 seeds each (is the difference within seed noise?);
# 3. orchestration at the paper's payload: a Ray simulation at width 64, L = 2, two clients sharing
#    the GPU (0.5 each), float32 vs float16 on the wire (scripts/bench_federated.py), overhead per round.
# Each step writes JSON into OUT_DIR; the summary lines are printed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_checks}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
py="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print('torch', torch.__version__)" || exit 1

echo "== 1. throughput (plain PyTorch vs uml-fed, paper width)"
timeout 300 "$py" scripts/bench_train.py --paper --compile --epochs 2 --device cuda --out "$out/bench_train.json"

echo "== 2. accuracy: train.precision=auto (bf16 + channels-last on this GPU) vs fp32, same seeds"
for p in fp32 auto; do
  timeout 240 "$py" -m uml_fed.cli experiment table3 runner.seeds=[0,1,2] runner.root="$out/exp_$p" \
    "train.precision=$p" "train.channels_last=$([[ $p == fp32 ]] && echo off || echo auto)" train.progress=false \
    2>&1 | grep -E "report|Error" || true
done
"$py" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for p in ("fp32", "auto"):
    try:
        r = json.load(open(f"{out}/exp_{p}/table3/cpu/report.json"))
    except FileNotFoundError:
        print(p, "no report"); continue
    print(p, {k: {s: round(100 * v["mean"], 2) for s, v in a["test_acc"].items()} for k, a in r["arms"].items()})
PY

echo "== 3. orchestration at paper payload (width 64, L = 2, 2 clients x 0.5 GPU), fp32 vs fp16 wire"
for w in float32 float16; do
  timeout 300 "$py" scripts/bench_federated.py --local-epochs 2 --cpus-per-client 4 --gpus-per-client 0.5 \
    --out "$out/bench_federated_$w.json" model.width=64 data.patch_size=64 train.epochs=8 "fed.wire_dtype=$w" \
    2>&1 | grep -E "overhead|ratio|bytes|Error" || true
done
echo "== done; JSON in $out"
