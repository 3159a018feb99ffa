#!/usr/bin/env bash
# Set up combcn in a virtual environment of its own (<repo>/.venv by default) and build its native op.
# Idempotent: re-running it when nothing changed takes about a second.
#
#   COMBCN_VENV=path     where the virtual environment lives (default: <repo>/.venv)
#   COMBCN_TORCH=spec    the torch requirement to install (default: torch==2.13.0 on a machine
#                        without an NVIDIA GPU, torch>=2.13 (a CUDA build) where nvidia-smi sees one)
#   PYTHON=python3.x     the interpreter to build the environment from (>= 3.10)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${COMBCN_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"

say() { printf 'combcn setup: %s\n' "$*" >&2; }

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    say "error: $python is missing or older than 3.10; set PYTHON=/path/to/python3.10+"
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    say "creating virtual environment $venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
fi
py="$venv/bin/python"

if [ -z "${COMBCN_TORCH:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        COMBCN_TORCH="torch>=2.13"
    else
        COMBCN_TORCH="torch==2.13.0"
    fi
fi

# Re-install only when the requirements changed (pyproject.toml, setup.py or the torch choice).
stamp="$venv/.combcn-setup-stamp"
want="$(cat "$repo/pyproject.toml" "$repo/setup.py"; echo "$COMBCN_TORCH")"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    if ! "$py" -c 'import torch' 2>/dev/null; then
        say "installing $COMBCN_TORCH"
        "$py" -m pip install -q "$COMBCN_TORCH"
    fi
    say "installing combcn and its development tools"
    # An editable install compiles nothing (the op is JIT-built below); --no-build-isolation spares
    # fetching a second torch into a throwaway build environment just to run setup.py.
    "$py" -m pip install -q "setuptools>=68" wheel
    "$py" -m pip install -q --no-build-isolation -e "$repo[dev]"
    printf '%s' "$want" >"$stamp"
fi

# Build (or confirm the cache of) the native masked_conv3d op now, not on first use.
say "building the native op (cached after the first build)"
MAX_JOBS="${MAX_JOBS:-2}" "$py" -m combcn.ops.build || say "warning: native op not built; the pure-PyTorch reference will be used"
say "ready: $venv"
