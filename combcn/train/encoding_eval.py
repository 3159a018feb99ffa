"""Fill quality when the plate is float (scene-linear) and the engine feeds the network through a shaper.

``combcn eval`` feeds the clips' JPG values to the engine as they are (shaper ``none``, as an integer
plate is fed). This check makes each evaluation window a float plate instead: the sRGB values are
linearised (the sRGB EOTF) and scaled by ``2 ** stops``, the engine fills them with ``shaper``
(``acescct`` by default, its default for float plates), and the fill is taken back to sRGB and scored
there, with the eval's windows, holes and metrics, so the numbers compare with ``combcn eval``'s.

    python -m combcn.train.encoding_eval davis_tennis office_realshort --data /work/shared/data/clips \\
        --window 16 --holes strokes,objects,box -w shipped=combcn/weights/combcn_default.pt -w new=new.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch


def float_plate_method(engine: Any, name: str, shaper: str, stops: float) -> Any:
    """An eval method (see :mod:`combcn.eval.evaluate`) that fills the window as a float plate.

    frames (Tensor[1, 3, T, H, W] sRGB in [0, 1]), hole (Tensor[1, 1, T, H, W]) -> {name: (output
    Tensor[1, 3, T, H, W] sRGB in [0, 1], hole)}.
    """
    from combcn.engine.shaper import get_shaper

    srgb = get_shaper("srgb")
    gain = np.float32(2.0**stops)

    def run(frames: torch.Tensor, hole: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        display = frames[0].permute(1, 2, 3, 0).contiguous().numpy()
        linear = srgb.decode(display) * gain
        filled = engine.inpaint(linear, hole[0, 0].numpy(), shaper=shaper)
        back = np.clip(srgb.encode(filled / gain), 0.0, 1.0)
        return {name: (torch.from_numpy(back).permute(3, 0, 1, 2)[None], hole)}

    return run


def main(argv: list[str] | None = None) -> int:
    from combcn.engine import Engine
    from combcn.eval.clips import (
        iter_windows,
        list_frames,
        parse_families,
        plan_windows,
        resolve_clips,
        silhouette_tracks,
    )
    from combcn.eval.evaluate import evaluate_groups, paired_gaps

    parser = argparse.ArgumentParser(prog="python -m combcn.train.encoding_eval", description=__doc__)
    parser.add_argument("clips", nargs="+", help="clip names under --data")
    parser.add_argument("-d", "--data", required=True, help="folder of clip folders")
    parser.add_argument("-w", "--weights", action="append", required=True, help="NAME=PATH (repeatable)")
    parser.add_argument("-W", "--window", type=int, default=16, help="frames per window (default: 16)")
    parser.add_argument("-k", "--windows-per-clip", type=int, default=1, help="(default: 1)")
    parser.add_argument("-H", "--holes", default="strokes,objects,box", help="hole families")
    parser.add_argument("-s", "--shaper", default="acescct", help="engine shaper (default: acescct)")
    parser.add_argument("--stops", type=float, default=0.0, help="exposure of the float plate (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the holes (default: 0)")
    parser.add_argument("-t", "--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("-o", "--output", help="write the per-window scores here (.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    clip_dirs = resolve_clips(args.clips, data)
    families = parse_families(args.holes)
    plan = plan_windows(clip_dirs, window=args.window, per_clip=args.windows_per_clip)
    tracks = []
    if "objects" in families:
        pool = [d for d in sorted(data.iterdir()) if d.is_dir() and (d / "masks").is_dir()]
        tracks = silhouette_tracks([d for d in pool if list_frames(d)])
    methods = {}
    for item in args.weights:
        name, _, path = item.partition("=")
        methods[name] = float_plate_method(Engine(path, "cpu"), name, args.shaper, args.stops)
    windows = iter_windows(
        plan, window=args.window, resolutions=["native"], families=families, seed=args.seed, tracks=tracks
    )
    results = evaluate_groups(windows, lambda _: methods, total=len(plan) * len(families), progress=False)
    first = next(iter(methods))
    report: dict[str, Any] = {"argv": sys.argv[1:] if argv is None else argv, "groups": []}
    print(f"| holes ({args.shaper}, {args.stops:+g} stops) | " + " | ".join(methods) + f" | gap to {first} |")
    print("|---|" + "---:|" * (len(methods) + 1))
    for (_, family), result in results.items():
        summary = result.summary()
        gaps = paired_gaps(result, first)
        cells = [f"{summary[m]['hole_mae']:.2f} / {summary[m]['temporal_error']:.2f}" for m in methods]
        gap = "; ".join(
            f"{m} {g['gap']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]" for m, g in gaps.items() if m != first
        )
        print(f"| {family} (MAE / temporal) | " + " | ".join(cells) + f" | {gap} |")
        report["groups"].append(
            {"holes": family, "summary": summary, "gaps": gaps, "windows": result.windows}
        )
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
