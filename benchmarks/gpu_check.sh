#!/usr/bin/env bash
# napari-svi GPU check for a lent CUDA machine (H100/H200): finishes within 8 minutes, downloads nothing.
#
#   benchmarks/gpu_check.sh [OUT_DIR] [extra options of python -m napari_svi.benchmark.gpu]
#
# 1. CPU-versus-GPU agreement of `restore` on a fixed input (relative error, TF32 convolutions on/off);
# 2. a 16 x 256 x 256 restore at 20 NFE in float32 and float16: seconds, frames per second, peak GPU memory;
# 3. levers on the same restore: CUDA graphs (float32, float16, bfloat16), 2/4/8 clips side by side with
#    their network calls in one batch, a 64-frame stack in one piece and in windows, a profile of where
#    the time goes (profile.txt), torch.compile of the network if 200 s are left;
# 4. the speed sweep (frames 8..256, frame sizes 64..1024) on the GPU, if time allows;
# then a short table, last. gpu_check.json is rewritten after every stage, so a run stopped by the
# time limit keeps what it measured. Results go to OUT_DIR (default: $OUT if set, else
# benchmarks/results/gpu): gpu_check.json, profile.txt, speed.json, speed.md, speed.png, gpu_check.log.
# Works from a plain copy of the repository: the package is imported from src/ when it is not installed.
# Prior: the bundled default, else runs/default-prior, else random weights (timings only; said in the table).
set -uo pipefail
cd "$(dirname "$0")/.."
out_dir="${1:-${OUT:-benchmarks/results/gpu}}"
[ $# -gt 0 ] && shift
mkdir -p "$out_dir"
python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c "import napari_svi" 2>/dev/null; then
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
# 470 s hard limit leaves a margin inside the 8 minutes; the sweep is skipped when under 120 s are left.
timeout 470 "$python_bin" -m napari_svi.benchmark.gpu --speed --compile --budget-s 420 -o "$out_dir" "$@" 2>&1 \
  | tee "$out_dir/gpu_check.log"
status=${PIPESTATUS[0]}
[ $status -eq 124 ] && echo "gpu_check: stopped at the 470 s limit" >&2
exit $status
