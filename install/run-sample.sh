#!/usr/bin/env bash
# Set everything up, then inpaint the bundled sample plate into ./out/sample/.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/install/setup.sh"
venv="${COMBCN_VENV:-$repo/.venv}"
sample="$repo/combcn/data/sample"
out="${1:-$repo/out/sample}"
mkdir -p "$out"
"$venv/bin/combcn" info
"$venv/bin/combcn" inpaint "$sample/plate.####.exr" --matte "$sample/matte.####.exr" \
    -o "$out/plate_clean.####.exr" --resume
echo "combcn: the inpainted sample is in $out" >&2
