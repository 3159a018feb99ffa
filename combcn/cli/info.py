"""``combcn info``: what this installation is made of and what it will run on."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
from typing import Any

import combcn
from combcn.cli import DefaultsHelpFormatter


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _op_source() -> dict[str, Any]:
    """Where the native op in use came from: kind ("prebuilt" | "jit" | "reference"), path, why, line."""
    from combcn.ops import _ext

    st = _ext.state()
    kind = (st.get("source") or "jit") if st.get("loaded") else "reference"
    why = st.get("note") if st.get("loaded") else st.get("error")
    return {"kind": kind, "path": st.get("path"), "why": why, "line": _ext.describe_source(st)}


def collect() -> dict[str, Any]:
    """Gather versions, op backends, device and weights as one JSON-able dict."""
    import torch

    from combcn import ops
    from combcn.precision import cpu_has_fast_bf16

    info: dict[str, Any] = {
        "combcn": combcn.__version__,
        "torch": torch.__version__,
        "openimageio": _version("OpenImageIO"),
        "av": _version("av"),
        "op_backends": ops.backends(),
        "op_source": _op_source(),
        "device": {
            "cuda_available": torch.cuda.is_available(),
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "default": "cuda" if torch.cuda.is_available() else "cpu",
            "cpu_threads": torch.get_num_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "cpu_fast_bf16": cpu_has_fast_bf16(),
        },
    }
    try:
        from combcn.model import default_weights_info
    except ImportError:
        info["weights"] = None
    else:
        info["weights"] = default_weights_info()
    return info


def _print_human(info: dict[str, Any]) -> None:
    print(f"combcn       {info['combcn']}")
    print(f"torch        {info['torch']}")
    print(f"OpenImageIO  {info['openimageio']}")
    print(f"av (PyAV)    {info['av']}")
    print("op backends:")
    for name, state in info["op_backends"].items():
        flags = ("compiled" if state.get("compiled") else "not compiled") + (
            ", active" if state.get("active") else ""
        )
        note = f"  ({state['note']})" if state.get("note") else ""
        print(f"  {name:<10} {flags}{note}")
    print(f"op source    {info['op_source']['line']}")
    dev = info["device"]
    print(f"device       {dev['default']}" + (f" ({dev['cuda_device']})" if dev["cuda_device"] else ""))
    print(f"cpu threads  {dev['cpu_threads']}  oneDNN: {'yes' if dev['mkldnn'] else 'no'}")
    print(
        f"cpu          {dev['cpu_capability']}, fast bf16: {'yes' if dev['cpu_fast_bf16'] else 'no'} "
        "(training and finetune use bf16 where yes)"
    )
    weights = info.get("weights")
    if not weights:
        print("weights      none shipped (random initialisation)")
    else:
        print(f"weights      {weights.get('name', '?')}  [{weights.get('path', '')}]")
        # iterations and wall_time_h are the last run's; "all stages" sums the runs it started from
        for key in ("trained_on", "iterations", "wall_time_h", "validation", "code_version"):
            if key in weights:
                value = weights[key]
                if isinstance(value, list):
                    value = f"{len(value)} clips: " + ", ".join(map(str, value))
                print(f"  {key:<12} {value}")
        chain = weights.get("all_stages")
        if chain:
            print(
                f"  all stages   {chain['stages']} training runs, each from the last one's weights: "
                f"{chain['iterations']} iterations, {chain['wall_time_h']} h in all"
            )
        plate = weights.get("plate")
        if isinstance(plate, dict):
            clips = plate.get("training_clips") or []
            print(
                f"  plate net    CombCN at plate resolution: {len(clips)} clips, "
                f"{plate.get('samples', '?')} samples, {plate.get('iterations', '?')} iterations, "
                f"{plate.get('wall_time_h', '?')} h"
            )


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        _print_human(info)
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "info",
        help="print versions, op backends, device and weights in use",
        description="Print the versions of combcn and its libraries, which masked-conv3d op backends "
        "are compiled and active, the compute device, and the weights in use with their provenance.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("-j", "--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)
