#!/usr/bin/env bash
# Set everything up, then run every check: lint, types, the CUDA compile-check and the test suite.
# Extra arguments go to pytest (e.g. -k ops, -x).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/install/setup.sh"
venv="${COMBCN_VENV:-$repo/.venv}"
cd "$repo"
export PATH="$venv/bin:$PATH"
echo "== ruff" >&2
ruff check combcn tests bench plugin install setup.py
echo "== mypy" >&2
mypy combcn
echo "== pytest" >&2
pytest -q "$@"
