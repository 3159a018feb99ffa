#!/usr/bin/env bash
# The GPU checks of combcn as ONE prepared run, for a session that is lent a GPU machine (whose python3
# holds a CUDA torch, nvcc, ninja and pytest; nothing is fetched there):
#   1. machine facts; 2. remove a stale build lock, build the native op with its CUDA kernels and check
#      that the CUDA kernel is the one in use;
#   3. the CUDA runtime tests (tests/ops/test_ops_cuda.py -m cuda: both CUDA paths against the float64
#      reference under the precision contract, TF32 off unless asked, autocast, argument checks, layouts);
#   4. bench/bench_op.py --device cuda: the fused op against cuDNN's bare convolution (same precision) and
#      the unfused reference, at the paper's 3DCN layer shapes, float32, bfloat16 and float16;
#   5. a whole-model render of the bundled sample plate on the GPU, twice (times, and whether the two
#      renders are the same bytes); and the whole model on a synthetic window, GPU against CPU in float32
#      (cuDNN TF32 off, as the op's contract has it) and bf16 autocast against float32 (for information);
#   6. the rest of the op tests (CPU op, CUDA emulation, nvcc compile check, precision table).
# Results go to ONE folder, $OUT (default ./gpu_check_out): machine.txt, build.log, tests.log, bench.md,
# render.md, summary.md (six files, within what the device tool brings back), each written as its step
# finishes. Exit 0 only when every step passed. It never hangs: every step, the machine facts and the
# backend query included, runs under its own `timeout` (the L_* limits below, printed with their sum at
# the top of summary.md), and they sum, with each step's kill grace, under 8 minutes; a step that hangs
# costs its own limit and the results of the others still land in $OUT. A stale build lock left by a
# killed build (torch's `lock` file in its extension build folders, on which the next build would wait
# forever) is removed before building. A CUDA build that fails (python -m combcn.ops.build then falls
# back to the CPU kernel) fails the check loudly, and nothing CUDA is benchmarked or run.
#
#   bash bench/gpu_check.sh
#   through the device tool: run(command="bash bench/gpu_check.sh", timeout_s=540)
#
# The render needs OpenImageIO and av, which the GPU image may lack: download their wheels for that
# machine's Python (3.12, x86_64) here first and carry them (gpu_wheels/ is git-ignored), e.g.
#   python3 -m pip download --only-binary=:all: --no-deps --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 -d gpu_wheels OpenImageIO av
#   run(command="bash bench/gpu_check.sh", carry=["gpu_wheels"], timeout_s=540)
# Without them the render step is reported as failed (and the exit status is 1).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/combcn-gpu-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export ROOT PY WORK OUT PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export COMBCN_CACHE=${COMBCN_CACHE:-$WORK/cache}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/torch_extensions}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

# Each step's time limit (seconds), and the grace `timeout` gives a step that ignores SIGTERM.
L_MACHINE=20
L_LOCKS=5
L_BUILD=105
L_BACKENDS=30
L_CUDA_TESTS=60
L_BENCH=50
L_RENDER=50
L_MODEL=45
L_OP_TESTS=65
GRACE=5
STEPS=9
LIMITS=$((L_MACHINE + L_LOCKS + L_BUILD + L_BACKENDS + L_CUDA_TESTS + L_BENCH + L_RENDER + L_MODEL + L_OP_TESTS))
status=0
echo "gpu_check: $STEPS steps, time limits summing to $LIMITS s ($((LIMITS + STEPS * GRACE)) s with each step's ${GRACE} s kill grace)" |
  tee "$OUT/summary.md"

# step NAME SECONDS LOG CMD...: runs CMD with a time limit, appends its output to LOG, records the result.
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local start=$SECONDS rc
  echo "== $name" | tee -a "$log"
  timeout --kill-after="$GRACE" "$limit" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  local took=$((SECONDS - start))
  if [ "$rc" -eq 0 ]; then
    echo "- $name: ok (${took} s)" >>"$OUT/summary.md"
  else
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "$name: timed out after $limit s" | tee -a "$log"
    echo "- $name: FAILED, exit $rc (${took} s; see $(basename "$log"))" >>"$OUT/summary.md"
    status=1
  fi
  return "$rc"
}

# skipped NAME WHY: a step that was not run, in the summary (and the check fails).
skipped() {
  echo "- $1: SKIPPED ($2)" >>"$OUT/summary.md"
  status=1
}

machine_facts() {
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
    torch.backends.cudnn.version(), "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "capability", torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None)'
  echo "python $("$PY" -c 'import sys; print(sys.version.split()[0])'), nproc $(nproc)"
  git log -1 --format='commit %H %s' 2>/dev/null
  return 0 # the facts are for information: a missing tool is written down, not a failure
}

# A build killed mid-way leaves torch's `lock` file in its build folder; the next build waits on it
# forever. Nothing else builds on this machine while the check runs, so any such lock is stale.
clear_build_locks() {
  local dir lock
  for dir in "$TORCH_EXTENSIONS_DIR" "$COMBCN_CACHE"; do
    [ -d "$dir" ] || continue
    while IFS= read -r lock; do
      echo "removing a stale build lock: $lock (left by a killed build)"
      rm -f -- "$lock" || return 1
    done < <(find "$dir" -name lock -type f)
  done
  echo "no stale build lock left in $TORCH_EXTENSIONS_DIR or $COMBCN_CACHE"
}

# The op must have its CUDA kernel, in use: a CUDA build that failed fell back to the CPU kernel.
cuda_backend() {
  "$PY" - <<'PYEOF'
from combcn.ops import backends

state = backends()
for name, value in state.items():
    print(name, value)
if not state["cuda"]["active"]:
    raise SystemExit(f"gpu_check: FAILED: the CUDA kernel of the native op is not in use: {state['cuda']['note']}")
PYEOF
}

export -f machine_facts clear_build_locks cuda_backend
: >"$OUT/machine.txt"
step "machine facts" "$L_MACHINE" "$OUT/machine.txt" bash -c machine_facts

: >"$OUT/build.log"
step "stale build locks" "$L_LOCKS" "$OUT/build.log" bash -c clear_build_locks
step "build" "$L_BUILD" "$OUT/build.log" "$PY" -m combcn.ops.build &&
  step "CUDA kernel built and in use" "$L_BACKENDS" "$OUT/build.log" bash -c cuda_backend
built=$?
if [ "$built" -ne 0 ]; then
  echo "gpu_check: FAILED: the native op's CUDA kernel did not build or load (see $OUT/build.log);" \
    "the CUDA tests, benchmark, render and model check are not run" | tee -a "$OUT/summary.md" >&2
fi

: >"$OUT/tests.log"
pytest_args=(-q -p no:cacheprovider -rs)
if [ "$built" -eq 0 ]; then
  step "CUDA runtime tests" "$L_CUDA_TESTS" "$OUT/tests.log" "$PY" -m pytest "${pytest_args[@]}" -m cuda tests/ops/test_ops_cuda.py
else
  skipped "CUDA runtime tests" "no CUDA kernel"
fi

echo "# bench/bench_op.py --device cuda -d float32 bfloat16 float16 -r 3" >"$OUT/bench.md"
if [ "$built" -eq 0 ]; then
  step "benchmark" "$L_BENCH" "$OUT/bench.md" "$PY" bench/bench_op.py --device cuda -d float32 bfloat16 float16 -r 3
else
  skipped "benchmark" "no CUDA kernel: 'fused' would time the reference"
fi

# The render: the CLI on the sample, twice, on the GPU.
render() {
  if ! "$PY" -c 'import OpenImageIO, av' 2>/dev/null; then
    local wheels=${COMBCN_WHEELS:-$ROOT/gpu_wheels}
    if compgen -G "$wheels/*.whl" >/dev/null; then
      "$PY" -m pip install -q --no-index --no-deps --target "$WORK/pydeps" "$wheels"/*.whl || return 1
      export PYTHONPATH="$WORK/pydeps:$PYTHONPATH"
    fi
  fi
  if ! "$PY" -c 'import OpenImageIO, av'; then
    echo "render skipped: python3 here lacks OpenImageIO/av; carry their wheels (see bench/gpu_check.sh)"
    return 1
  fi
  local sample=$ROOT/combcn/data/sample
  "$PY" -m combcn info
  for run in 1 2; do
    local start=$SECONDS
    mkdir -p "$WORK/render$run"
    "$PY" -m combcn inpaint "$sample/plate.####.exr" --matte "$sample/matte.####.exr" --device cuda \
      -o "$WORK/render$run/plate_clean.####.exr" --progress none || return 1
    echo "render $run: $((SECONDS - start)) s wall for 32 frames of 432x240 (model load and first-call set-up included)"
  done
  local frames
  frames=$(find "$WORK/render1" -name '*.exr' | wc -l)
  echo "frames written: $frames"
  [ "$frames" -eq 32 ] || return 1
  if diff -rq "$WORK/render1" "$WORK/render2"; then
    echo "the two GPU renders are the same bytes"
  else
    echo "the two GPU renders differ"
    return 1
  fi
}

# The whole model, GPU against CPU, on a synthetic 32-frame window (needs no image I/O packages).
model_check() {
  "$PY" - <<'PYEOF'
import os
import time

import torch

from combcn.model import load_model


def window(t: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """frames [1, 3, t, h, w] in [0, 1] (a locked-off smooth picture, fresh noise per frame) and a disc hole
    [1, 1, t, h, w] that stays put: no frame shows what it covers, so the fill is the networks' own."""
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.linspace(0, 1, h).view(1, 1, 1, h, 1), torch.linspace(0, 1, w).view(1, 1, 1, 1, w)
    ts = torch.linspace(0, 1, t).view(1, 1, t, 1, 1)
    rgb = torch.cat(torch.broadcast_tensors(0.5 + 0.4 * torch.sin(6 * xs), 0.5 + 0.4 * torch.cos(5 * ys),
                                            0.3 + 0.2 * xs * ys + 0 * ts), 1)  # fmt: skip
    frames = (rgb + 0.02 * torch.randn(rgb.shape, generator=g)).clamp(0, 1)
    cy, cx = h / 2, w / 2
    yy, xx = torch.arange(h).view(1, 1, 1, h, 1), torch.arange(w).view(1, 1, 1, 1, w)
    hole = (((yy - cy) ** 2 + (xx - cx) ** 2) < (min(h, w) / 5) ** 2).float().expand(1, 1, t, h, w).contiguous()
    return frames, hole


def run(model, frames, hole, device, autocast=None):
    f, m = frames.to(device), hole.to(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        out = model(f, m)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out.float().cpu()


torch.set_num_threads(os.cpu_count() or 1)
torch.backends.cudnn.allow_tf32 = False  # the model's own 2D convolutions in full float32 too
cuda, cpu = torch.device("cuda"), torch.device("cpu")
ok = True
for t, h, w in ((32, 128, 224), (32, 240, 432)):
    frames, hole = window(t, h, w)
    gpu_model, cpu_model = load_model(None, device=cuda), load_model(None, device=cpu)
    run(gpu_model, frames, hole, cuda)  # warm-up: cuDNN plans, kernel loads
    start = time.perf_counter()
    gpu = run(gpu_model, frames, hole, cuda)
    gpu_s = time.perf_counter() - start
    inside = hole.expand_as(gpu) > 0
    finite = bool(torch.isfinite(gpu).all())
    kept = torch.equal(gpu[~inside], frames[~inside])
    line = f"window {t}x{h}x{w}: GPU float32 {gpu_s * 1e3:.0f} ms, finite {finite}, outside the hole bit-exact {kept}"
    ok &= finite and kept
    if h <= 128:  # the CPU forward of the larger window takes too long for this run
        start = time.perf_counter()
        ref = run(cpu_model, frames, hole, cpu)
        diff = (gpu - ref).abs()[inside].max().item()
        line += f"; CPU float32 {time.perf_counter() - start:.1f} s, max |GPU - CPU| in the hole {diff:.2e}"
        ok &= diff < 1e-3
    bf16 = run(gpu_model, frames, hole, cuda, torch.bfloat16)
    line += f"; bf16 autocast vs float32 max diff in the hole {(bf16 - gpu).abs()[inside].max().item():.2e}"
    print(line)
print("model check:", "ok" if ok else "FAILED (GPU and CPU disagree beyond 1e-3, or a non-finite value)")
raise SystemExit(0 if ok else 1)
PYEOF
}
export -f model_check
export -f render
echo "# whole-model render of combcn/data/sample on the GPU" >"$OUT/render.md"
if [ "$built" -eq 0 ]; then
  step "render" "$L_RENDER" "$OUT/render.md" bash -c render
  step "model check (GPU vs CPU)" "$L_MODEL" "$OUT/render.md" bash -c model_check
else
  skipped "render" "no CUDA kernel"
  skipped "model check (GPU vs CPU)" "no CUDA kernel"
fi

step "op tests (CPU op, CUDA emulation, nvcc check, precision table)" "$L_OP_TESTS" "$OUT/tests.log" \
  "$PY" -m pytest "${pytest_args[@]}" -m "not cuda" tests/ops/test_ops_cuda.py tests/ops/test_ops.py tests/ops/test_precision.py

echo "gpu_check: exit $status; results in $OUT" | tee -a "$OUT/summary.md"
exit "$status"
