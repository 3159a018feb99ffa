#!/usr/bin/env bash
# The GPU checks of the masked_conv3d op as ONE prepared run, for a session that is lent a GPU machine
# (whose python3 already holds a CUDA torch, nvcc and pytest; nothing is installed): build the extension
# with its CUDA kernels, run the CUDA tests (and the CPU op tests beside them), then the GPU benchmark.
# Everything is also written to $OUT (default ./gpu_check_out): machine.txt, build.log, tests.log,
# bench.md. Not yet run on a GPU; expected to take a few minutes, most of it the build (timeout_s 540
# leaves room).
#
#   bash bench/gpu_check.sh                       # here, or through the device tool:
#   run(command="bash bench/gpu_check.sh", timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export COMBCN_CACHE=${COMBCN_CACHE:-/tmp/combcn-gpu-check-cache}
status=0

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
  nproc
} 2>&1 | tee "$OUT/machine.txt"

echo "== build" | tee "$OUT/build.log"
"$PY" -m combcn.ops.build 2>&1 | tee -a "$OUT/build.log" || status=1
"$PY" -m combcn info 2>&1 | tee -a "$OUT/build.log" || true

echo "== tests" | tee "$OUT/tests.log"
"$PY" -m pytest -q -p no:cacheprovider -rs tests/test_ops_cuda.py tests/test_ops.py 2>&1 | tee -a "$OUT/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== benchmark" | tee "$OUT/bench.md"
"$PY" bench/bench_op.py --device cuda -d float32 bfloat16 float16 -r 11 2>&1 | tee -a "$OUT/bench.md"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "gpu_check: exit $status; logs in $OUT"
exit "$status"
