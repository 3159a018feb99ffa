"""Train CombCN at plate resolution (:class:`combcn.model.plate.PlateCombCN`) on what the engine feeds it.

Three steps, each a subcommand (``python -m combcn.train.plate --help``):

``collect``
    Runs the engine (the shipped weights, propagation on, the probe off, shaper ``none``) on short
    windows of clips at their native resolution with holes drawn at plate sizes (static paper boxes,
    moving strokes, object silhouettes), and records what the engine hands the plate network: per
    key frame, the crop's plate pixels with the propagated ones pasted, the pixels no frame shows, and
    the working-size fill scaled up to the plate. The truth is the clip's own frame. So the network is
    trained on exactly the inputs it meets in use: the plate's resolution, the engine's crops, its
    propagation, its working-size fill.
``train``
    Fine-tunes the network from the shipped working-size CombCN (last layer zeroed: it starts as the
    working-size fill) on random tiles of those samples, with the paper's L1 over the hole (Eq. 2) and,
    with ``--detail-weight``, a term matching the amount of fine detail (not in the paper); BatchNorm
    frozen by default. Checkpoints every few minutes; ``--resume`` continues. Validation on samples of
    held-out clips, by the probe's own score.
``export``
    Writes the shipped weights with the trained plate network added (``model.plate``), provenance
    included.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from combcn.errors import CombcnError, InputError
from combcn.model.plate import CONTEXT, PlateCombCN, from_combcn

log = logging.getLogger("combcn.train.plate")

#: frames of each collected window (the engine's key frames fall every 8th)
WINDOW = 12
#: clips held out for validation (those of configs/default.yaml)
VAL_CLIPS = ("bees", "makeup", "sam2_cups")
#: hole kinds drawn for collection, with their probabilities
HOLE_MIX = (("box", 0.5), ("strokes", 0.25), ("objects", 0.25))
HOLE_KINDS = [kind for kind, _ in HOLE_MIX]
HOLE_SHARES = [share for _, share in HOLE_MIX]


class Recorder:
    """Stands in for the plate network inside the engine: records its inputs, returns the
    working-size fill unchanged."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, int, int], np.ndarray, np.ndarray, np.ndarray]] = []

    def fill(
        self,
        rows: np.ndarray,
        hole: np.ndarray,
        coarse: np.ndarray,
        *,
        want: np.ndarray | None = None,
        origin: tuple[int, int, int] | None = None,
    ) -> np.ndarray:
        assert origin is not None
        self.calls.append((origin, rows.copy(), hole.copy(), coarse.copy()))
        return np.array(coarse, np.float32, copy=True)


def _draw_hole(
    rng: np.random.Generator, kind: str, t: int, h: int, w: int, tracks: list[tuple[int, np.ndarray]]
) -> np.ndarray:
    from combcn.holes import box_hole, moving_stroke_hole, silhouette_hole

    if kind == "objects" and tracks:
        track = tracks[int(rng.integers(len(tracks)))][1]
        return silhouette_hole(rng, track, t, h, w)
    if kind == "strokes":
        return moving_stroke_hole(rng, t, h, w)
    return box_hole(rng, t, h, w)


def _region(hole: np.ndarray) -> tuple[int, int, int, int]:
    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    return (
        max(0, int(ys.min()) - CONTEXT),
        min(h, int(ys.max()) + 1 + CONTEXT),
        max(0, int(xs.min()) - CONTEXT),
        min(w, int(xs.max()) + 1 + CONTEXT),
    )


def collect(args: argparse.Namespace) -> None:
    """Record the plate network's inputs on windows of the clips (see the module's docstring)."""
    from combcn.engine import Engine
    from combcn.holes import object_tracks
    from combcn.model import load_model
    from combcn.train.data import decode, discover, is_commercial
    from combcn.train.windows import from_plate, to_plate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = [s for s in discover([args.data]) if is_commercial(s.licence)]
    sources = [s for s in sources if (s.name in VAL_CLIPS) == bool(args.val)]
    if args.clips:
        sources = [s for s in sources if s.name in set(args.clips)]
    if args.val and not sources:
        raise InputError(f"none of the validation clips ({', '.join(VAL_CLIPS)}) is in {args.data}")
    model = load_model(args.weights)
    if model.config.plate:
        model.plate = None  # the samples hold the working-size fill, not a plate network's
    recorder = Recorder()
    model.plate = recorder  # type: ignore[assignment]
    engine = Engine(model=model, device="cpu", threads=args.threads)
    decoded = {}
    tracks: list[tuple[int, np.ndarray]] = []
    for source in sources:
        frames, masks, index = decode(source, 1 << 20)
        if frames.shape[0] < WINDOW:
            log.warning("skipping %s: %d frames, fewer than %d", source.name, frames.shape[0], WINDOW)
            continue
        decoded[source.name] = frames
        if masks is not None:
            tracks += object_tracks(masks, index)
    for c, (name, frames) in enumerate(sorted(decoded.items())):
        target = out / f"{name}.npz"
        if target.is_file():
            log.info("%s: done already", name)
            continue
        samples: dict[str, np.ndarray] = {}
        t_all, h, w = frames.shape[:3]
        started = time.monotonic()
        for k in range(args.windows_per_clip):
            rng = np.random.default_rng([args.seed, c, k])
            start = int(rng.integers(0, t_all - WINDOW + 1))
            kind = str(rng.choice(HOLE_KINDS, p=HOLE_SHARES))
            hole = _draw_hole(rng, kind, WINDOW, h, w, tracks)
            display = frames[start : start + WINDOW].astype(np.float32) / 255.0
            # a float plate, as the engine's default shaper meets it: linear light, +-1 stop, ACEScct
            enc_rng = np.random.default_rng([args.seed, c, k, 1])
            encoding = "acescct" if enc_rng.random() < args.acescct else "srgb"
            plate = to_plate(display, encoding, float(enc_rng.uniform(-1.0, 1.0)))
            recorder.calls.clear()
            engine.inpaint(plate, hole, shaper="none" if encoding == "srgb" else encoding, probe=False)
            truths = from_plate(plate, encoding)
            calls = [call for call in recorder.calls if int(call[2].sum()) >= 64]
            picked = rng.permutation(len(calls))[: args.frames_per_window]
            for j in sorted(int(i) for i in picked):
                (p, y0, x0), rows, net_hole, coarse = calls[j]
                ry0, ry1, rx0, rx1 = _region(net_hole)
                ch, cw = net_hole.shape
                truth = truths[p, y0 : y0 + ch, x0 : x0 + cw]
                key = f"{k:02d}_{p:02d}"
                samples[f"{key}_rows"] = rows[ry0:ry1, rx0:rx1].astype(np.float16)
                samples[f"{key}_hole"] = net_hole[ry0:ry1, rx0:rx1]
                samples[f"{key}_coarse"] = coarse[ry0:ry1, rx0:rx1].astype(np.float16)
                samples[f"{key}_truth"] = truth[ry0:ry1, rx0:rx1].astype(np.float16)
                samples[f"{key}_kind"] = np.array(f"{kind} {encoding}")
        tmp = out / f".{name}.tmp.npz"
        np.savez(tmp, **samples)  # type: ignore[arg-type]
        os.replace(tmp, target)
        log.info(
            "%s: %d samples from %d windows in %.0f s",
            name,
            len([k for k in samples if k.endswith("_rows")]),
            args.windows_per_clip,
            time.monotonic() - started,
        )


@dataclasses.dataclass
class Sample:
    rows: np.ndarray
    hole: np.ndarray
    coarse: np.ndarray
    truth: np.ndarray
    clip: str
    kind: str


def load_samples(folder: Path) -> list[Sample]:
    """Every sample of ``collect``'s files in ``folder``."""
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise InputError("no samples here; run `python -m combcn.train.plate collect` first", path=folder)
    out = []
    for f in files:
        with np.load(f) as data:
            keys = sorted({k.rsplit("_", 1)[0] for k in data.files})
            for key in keys:
                out.append(
                    Sample(
                        data[f"{key}_rows"],
                        data[f"{key}_hole"],
                        data[f"{key}_coarse"],
                        data[f"{key}_truth"],
                        f.stem,
                        str(data[f"{key}_kind"]),
                    )
                )
    return out


def _tile(rng: np.random.Generator, s: Sample, size: int) -> tuple[np.ndarray, ...]:
    """A random tile of ``size`` (less where the sample is smaller; multiples of 8) that holds hole
    pixels, maybe mirrored: (pre, hole, truth) float32 [C, h, w]."""
    h, w = s.hole.shape
    th, tw = min(size, h - h % 8), min(size, w - w % 8)
    ys, xs = np.nonzero(s.hole)
    i = int(rng.integers(len(ys)))
    y0 = int(np.clip(ys[i] - int(rng.integers(0, th)), 0, h - th))
    x0 = int(np.clip(xs[i] - int(rng.integers(0, tw)), 0, w - tw))
    sl = (slice(y0, y0 + th), slice(x0, x0 + tw))
    hole = s.hole[sl]
    pre = np.where(hole[..., None], s.coarse[sl], s.rows[sl]).astype(np.float32)
    truth = s.truth[sl].astype(np.float32)
    hole = hole.astype(np.float32)
    if rng.random() < 0.5:
        pre, hole, truth = pre[:, ::-1], hole[:, ::-1], truth[:, ::-1]
    return (
        np.ascontiguousarray(pre.transpose(2, 0, 1)),
        np.ascontiguousarray(hole[None]),
        np.ascontiguousarray(truth.transpose(2, 0, 1)),
    )


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of Tensor[B, C, H, W] (reflected edges)."""
    from combcn.eval.metrics import gaussian_window

    radius = max(1, int(math.ceil(3 * sigma)))
    taps = gaussian_window(2 * radius + 1, sigma).to(x.dtype)
    c = x.shape[1]
    x = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = torch.nn.functional.conv2d(x, taps.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(x, taps.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def detail_energy(x: torch.Tensor) -> torch.Tensor:
    """How much fine detail each pixel's neighbourhood holds: the magnitude of ``x`` above a
    Gaussian of sigma 1.5 (the probe's texture band), averaged by a Gaussian of sigma 4.
    Tensor[B, 3, H, W] -> Tensor[B, 3, H, W]."""
    from combcn.engine.probe import TEXTURE_SIGMA

    return _blur(torch.abs(x - _blur(x, TEXTURE_SIGMA)), 4.0)


def _freeze_norm(plate: PlateCombCN) -> None:
    """Every BatchNorm of ``plate`` normalises with its running statistics and stops updating them."""
    for module in plate.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()


def validate(plate: PlateCombCN, samples: list[Sample], *, frozen: bool = False) -> dict[str, float]:
    """The probe's scores (:func:`combcn.engine.probe.score`: hole MAE 0-255, detail ratio, and the
    value it ranks by) on whole validation samples, filled through :meth:`PlateCombCN.fill` as the
    engine runs it, beside the working-size fill alone."""
    from combcn.engine import probe

    plate.eval()
    coarse_fills, plate_fills, truths, holes = [], [], [], []
    for s in samples:
        rows, coarse, truth = (a.astype(np.float32) for a in (s.rows, s.coarse, s.truth))
        out = plate.fill(rows, s.hole, coarse)
        coarse_fills.append(np.where(s.hole[..., None], coarse, rows))
        plate_fills.append(np.where(s.hole[..., None], out, rows))
        truths.append(truth)
        holes.append(s.hole)
    plate.train()
    if frozen:
        _freeze_norm(plate)
    before, after = probe.score(coarse_fills, truths, holes), probe.score(plate_fills, truths, holes)
    return {
        "coarse_mae": before.mae,
        "plate_mae": after.mae,
        "coarse_detail": before.detail,
        "plate_detail": after.detail,
        "coarse_score": before.value,
        "plate_score": after.value,
    }


def train(args: argparse.Namespace) -> None:
    """Fine-tune the plate network (see the module's docstring)."""
    from combcn.model import load_model
    from combcn.precision import resolve_precision

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = [s for folder in args.samples for s in load_samples(Path(folder))]
    val = load_samples(Path(args.val))[: args.val_samples]
    base = load_model(args.weights)
    cfg = dataclasses.replace(base.config, plate=True)
    assert base.net2d is not None
    plate = from_combcn(base.net2d, cfg)
    plate.train()
    if args.norm == "frozen":  # BatchNorm as at inference (running statistics), also while training
        _freeze_norm(plate)
    opt = torch.optim.AdamW(plate.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, args.iterations) / args.iterations))
    )
    start, best, wall = 0, math.inf, 0.0
    checkpoint = out / "checkpoint.pt"
    if args.resume and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        plate.load_state_dict(state["plate"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, best, wall = state["iteration"], state["best"], state["wall"]
        log.info("resumed at iteration %d", start)
    dtype = resolve_precision(args.precision, torch.device("cpu"))
    log.info(
        "%d training samples (%d clips), %d validation; precision %s",
        len(samples),
        len({s.clip for s in samples}),
        len(val),
        dtype,
    )
    log_file = out / "log.csv"
    began, last_save = time.monotonic(), time.monotonic()

    def save(path: Path, iteration: int) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save(
            {
                "plate": plate.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "iteration": iteration,
                "best": best,
                "wall": wall + time.monotonic() - began,
                "config": cfg.to_dict(),
                "args": {k: v for k, v in vars(args).items() if k != "func"},
                "training_clips": sorted({s.clip for s in samples}),
                "samples": len(samples),
            },
            tmp,
        )
        os.replace(tmp, path)

    if start == 0:
        first = validate(plate, val, frozen=args.norm == "frozen")
        log.info("validation at start: %s", first)
        with open(log_file, "w", newline="") as f:
            csv.writer(f).writerow(["iteration", "loss", *first])
            csv.writer(f).writerow([0, "", *(f"{first[k]:.4f}" for k in first)])
    losses: list[float] = []
    for it in range(start, args.iterations):
        rng = np.random.default_rng([args.seed, it])
        batch = [_tile(rng, samples[int(rng.integers(len(samples)))], args.tile) for _ in range(args.batch)]
        shape = min(b[0].shape[1] for b in batch), min(b[0].shape[2] for b in batch)
        pre, hole, truth = (
            torch.from_numpy(np.stack([b[i][:, : shape[0], : shape[1]] for b in batch])) for i in range(3)
        )
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            fill = plate(pre, hole)
        fill = fill.float()
        pixels = (hole.sum() * 3).clamp(min=1.0)
        loss = (torch.abs(fill - truth) * hole).sum() / pixels
        if args.detail_weight > 0:  # not in the paper: the amount of detail (not its phase) matched
            energy = torch.abs(detail_energy(fill) - detail_energy(truth))
            loss = loss + args.detail_weight * (energy * hole).sum() / pixels
        if not torch.isfinite(loss):
            raise CombcnError(f"non-finite loss at iteration {it}; the checkpoint keeps the last good state")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item() * 255.0)
        done = it + 1
        if done % args.val_every == 0 or done == args.iterations:
            scores = validate(plate, val, frozen=args.norm == "frozen")
            mean_loss = float(np.mean(losses)) if losses else float("nan")
            losses.clear()
            log.info("iteration %d: training loss %.2f, validation %s", done, mean_loss, scores)
            with open(log_file, "a", newline="") as f:
                csv.writer(f).writerow([done, f"{mean_loss:.4f}", *(f"{scores[k]:.4f}" for k in scores)])
            if scores["plate_score"] < best:  # the probe's ranking: MAE, raised outside the detail band
                best = scores["plate_score"]
                save(out / "best.pt", done)
            save(out / "last.pt", done)
        if time.monotonic() - last_save > 60 * args.checkpoint_minutes or done == args.iterations:
            save(checkpoint, done)
            last_save = time.monotonic()


def export(args: argparse.Namespace) -> None:
    """The shipped weights with the trained plate network added, provenance included."""
    from combcn.model import Inpainter, read_weights, save_weights
    from combcn.model.config import ModelConfig
    from combcn.train.trainer import code_version

    state = torch.load(args.run, weights_only=False)
    base_path = Path(args.weights) if args.weights else None
    from combcn.model.weights import DEFAULT_WEIGHTS

    payload = read_weights(base_path or DEFAULT_WEIGHTS)
    cfg = dataclasses.replace(ModelConfig.from_dict(payload["config"]), plate=True)
    model = Inpainter(cfg)
    merged = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    merged.update({f"plate.{k}": v for k, v in state["plate"].items()})
    model.load_state_dict(merged, strict=True)
    provenance = dict(payload.get("provenance", {}))
    provenance["plate"] = {
        "what": "CombCN at plate resolution (combcn.train.plate), from the working-size CombCN",
        "training_clips": state["training_clips"],
        "validation_clips": list(VAL_CLIPS),
        "samples": state["samples"],
        "iterations": state["iteration"],
        "wall_time_h": round(state["wall"] / 3600.0, 3),
        "validation": _logged(Path(args.run).parent / "log.csv", int(state["iteration"])),
        "settings": {k: v for k, v in state["args"].items() if k != "func"},
        "code_version": code_version(),
    }
    save_weights(model, args.output, provenance=provenance, half=True)
    if args.provenance:
        Path(args.provenance).write_text(json.dumps(provenance, indent=2) + "\n")
    log.info("wrote %s", args.output)


def _logged(log_file: Path, iteration: int) -> dict[str, float]:
    """The validation row of ``iteration`` in a run's ``log.csv`` (empty where there is none)."""
    if not log_file.is_file():
        return {}
    with open(log_file, newline="") as f:
        for row in csv.DictReader(f):
            if int(row["iteration"]) == iteration:
                return {k: float(v) for k, v in row.items() if k not in ("iteration", "loss") and v}
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m combcn.train.plate",
        description="Train CombCN at plate resolution on what the engine feeds it: collect samples, "
        "train, export (docs/MODEL.md, 'CombCN at plate resolution').",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="record the engine's plate-network inputs on windows of clips")
    c.add_argument("--data", required=True, help="folder of clip folders with a manifest.json (licences)")
    c.add_argument("--out", required=True, help="folder for the samples (one .npz per clip; resumable)")
    c.add_argument(
        "--val", action="store_true", help=f"collect the validation clips ({', '.join(VAL_CLIPS)})"
    )
    c.add_argument("--clips", nargs="*", help="only these clips")
    c.add_argument("--windows-per-clip", type=int, default=6)
    c.add_argument("--frames-per-window", type=int, default=3, help="key frames kept per window")
    c.add_argument("--weights", help="working-size weights (default: the shipped ones)")
    c.add_argument(
        "--acescct",
        type=float,
        default=0.0,
        help="fraction of windows fed as float plates (linear light, +-1 stop) through the ACEScct shaper, "
        "the engine's default for float plates; the rest as sRGB values (shaper none)",
    )
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=int, default=1)
    c.set_defaults(func=collect)
    t = sub.add_parser("train", help="fine-tune the plate network on collected samples")
    t.add_argument("--samples", required=True, nargs="+", help="folders of collected samples")
    t.add_argument("--val", required=True, help="samples of the validation clips")
    t.add_argument("--out", required=True, help="run folder (checkpoint.pt, best.pt, last.pt, log.csv)")
    t.add_argument("--weights", help="working-size weights to start from (default: the shipped ones)")
    t.add_argument("--iterations", type=int, default=3000)
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--tile", type=int, default=192, help="training tile side in pixels")
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument(
        "--detail-weight",
        type=float,
        default=0.0,
        help="weight of a term matching the amount of fine detail around each hole pixel to the truth's "
        "(its phase is free); 0 = the paper's L1 alone",
    )
    t.add_argument(
        "--norm",
        choices=("frozen", "batch"),
        default="frozen",
        help="BatchNorm while training: frozen (the running statistics it uses at inference; no "
        "train/inference mismatch) or batch (each batch's own statistics, running ones updated)",
    )
    t.add_argument("--precision", default="auto", help="auto (bf16 where the CPU is fast at it), fp32, bf16")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--val-every", type=int, default=250)
    t.add_argument("--val-samples", type=int, default=40)
    t.add_argument("--checkpoint-minutes", type=float, default=3.0)
    t.add_argument("--resume", action="store_true")
    t.set_defaults(func=train)
    e = sub.add_parser("export", help="write the shipped weights with the trained plate network")
    e.add_argument("run", help="best.pt or last.pt of a training run")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--weights", help="working-size weights to add it to (default: the shipped ones)")
    e.add_argument("--provenance", help="also write the plate network's provenance here (JSON)")
    e.set_defaults(func=export)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        args.func(args)
    except CombcnError as exc:
        print(f"combcn: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
