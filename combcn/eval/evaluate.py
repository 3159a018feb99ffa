"""Run fills on evaluation windows, score them, and summarise as markdown tables and JSON.

A *method* maps one window's input to one or more scored *rows*: ``method(frames, hole)`` with
frames Tensor[1, 3, T, H, W] (hole pixels zeroed, so nothing can leak the truth) and hole
Tensor[1, 1, T, H, W] returns ``{row_name: (output, row_hole)}``; output is Tensor[1, 3, T, h, w] for
(h, w) = (H, W) or half that (the 3DCN's own resolution, scored against the area-downsampled truth).
A :class:`ReferenceMethod` is also given the true middle frame, as an artist's cleaned frame.

Windows come in *groups*, one per (resolution, hole family) (:class:`combcn.eval.clips.Window`); each
group gets its own scores and table, and each resolution its own methods: at a square size the model
runs directly on the window (the paper's protocol), at ``native`` through :class:`combcn.engine.Engine`
exactly as a user's plate would.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from combcn.eval import metrics
from combcn.eval.baselines import BASELINES, composite
from combcn.eval.clips import Window
from combcn.precision import cpu_has_fast_bf16

log = logging.getLogger("combcn.eval")

#: row name -> (output, hole), or (output, hole, the hole MAE the method expects of its own fill: the
#: engine's probe holes)
Rows = dict[str, tuple[Tensor, Tensor] | tuple[Tensor, Tensor, float]]
Method = Callable[[Tensor, Tensor], Rows]


@dataclass(frozen=True)
class ReferenceMethod:
    """A method that is also given the window's true middle frame (Tensor[1, 3, H, W]) as a reference
    frame: ``fill(frames, hole, reference)``. Called as a plain method, it gets no reference."""

    fill: Callable[[Tensor, Tensor, Tensor | None], Rows]

    def __call__(self, frames: Tensor, hole: Tensor, reference: Tensor | None = None) -> Rows:
        return self.fill(frames, hole, reference)


#: metric key -> (column title, goal: "high", "low" or "one" (closest to 1.0 is best))
METRICS: dict[str, tuple[str, str]] = {
    "hole_mae": ("hole MAE (0-255) ↓", "low"),
    "temporal_error": ("temporal err (0-255) ↓", "low"),
    "psnr": ("PSNR dB ↑", "high"),
    "psnr_hole": ("PSNR hole dB ↑", "high"),
    "ssim": ("SSIM ↑", "high"),
    "ssim_hole": ("SSIM hole ↑", "high"),
    "detail": ("detail (truth = 1)", "one"),
}


def score(output: Tensor, truth: Tensor, hole: Tensor) -> dict[str, float]:
    """All metrics of one window (Tensor[1, 3, T, h, w] each, hole [1, 1, T, h, w]) as floats.

    A composited fill (equal to the truth outside the hole, checked bit for bit) is scored by
    :func:`_score_composited`, which touches only the hole's pixels and, for SSIM, each frame's hole
    box: the same values to float rounding at a fraction of the cost on plate-size frames. Anything
    else is scored on whole frames by the :mod:`combcn.eval.metrics` functions directly.
    """
    if output.shape[0] == 1 and output.shape[1] == 3:
        fast = _score_composited(output[0].float(), truth[0].float(), hole[0, 0] > 0.5)
        if fast is not None:
            return fast
    output, truth, hole = output.double(), truth.double(), (hole > 0.5).double()  # convert once
    ssim_whole, ssim_hole = metrics.ssim_whole_and_hole(output, truth, hole)
    values = {
        "hole_mae": metrics.hole_mae(output, truth, hole),
        "temporal_error": metrics.temporal_error(output, truth, hole),
        "psnr": metrics.psnr(output, truth),
        "psnr_hole": metrics.psnr_hole(output, truth, hole),
        "ssim": ssim_whole,
        "ssim_hole": ssim_hole,
        "detail": metrics.detail_ratio(output, truth, hole),
    }
    return {k: float(v[0]) for k, v in values.items()}


def _score_composited(output: Tensor, truth: Tensor, hole: Tensor) -> dict[str, float] | None:
    """:func:`score` of a fill that equals the truth outside the hole, or None if it does not.

    Outside the hole the error is exactly 0 and an 11x11 SSIM window that reaches no hole pixel
    compares identical patches (SSIM exactly 1), so every metric is computed frame by frame on the
    frame's hole box grown by 10 px only (:func:`_frame_box`).

    Args:
        output, truth (Tensor[3, T, H, W] float32), hole (Tensor[T, H, W] bool).
    """
    c, t, h, w = output.shape
    if h < metrics.SSIM_SIZE or w < metrics.SSIM_SIZE:
        raise ValueError(
            f"SSIM needs frames of at least {metrics.SSIM_SIZE}x{metrics.SSIM_SIZE}; got {(h, w)}"
        )
    if int(hole.sum()) == 0 or not torch.equal(output.masked_fill(hole, 0.0), truth.masked_fill(hole, 0.0)):
        return None
    r, half = metrics.SSIM_SIZE - 1, metrics.SSIM_SIZE // 2
    sums = dict.fromkeys(
        ("abs", "sq", "count", "ssim", "windows", "ssim_hole", "centres", "lap_out", "lap_truth"), 0.0
    )
    per_pair: list[float] = []
    for f in range(t):
        box = _frame_box(hole[f], r)
        if box is not None:
            y0, y1, x0, x1 = box
            o, g, m = output[:, f, y0:y1, x0:x1], truth[:, f, y0:y1, x0:x1], hole[f, y0:y1, x0:x1]
            inside = (o - g)[:, m].double()  # [C, K]
            sums["abs"] += float(inside.abs().sum())
            sums["sq"] += float((inside**2).sum())
            sums["count"] += float(m.sum()) * c
            smap = metrics.ssim_map(o, g)  # [C, bh - 10, bw - 10]
            centre = m[half : m.shape[0] - half, half : m.shape[1] - half].double()
            sums["ssim"] += float(smap.sum())
            sums["windows"] += smap.numel()
            sums["ssim_hole"] += float((smap * centre).sum())
            sums["centres"] += float(centre.sum()) * c
            interior = metrics.hole_interior(m[None, None, None])[0, 0, 0] > 0.5
            sums["lap_out"] += float(
                metrics.laplacian(metrics.grey(o[None, :, None]))[0, 0, 0][interior].abs().sum()
            )
            sums["lap_truth"] += float(
                metrics.laplacian(metrics.grey(g[None, :, None]))[0, 0, 0][interior].abs().sum()
            )
        if f == 0:
            continue
        pair = hole[f] | hole[f - 1]  # metrics.temporal_error: the fill's change minus the truth's
        pbox = _frame_box(pair, 0)
        if pbox is None:
            continue
        y0, y1, x0, x1 = pbox
        now = output[:, f, y0:y1, x0:x1] - truth[:, f, y0:y1, x0:x1]
        before = output[:, f - 1, y0:y1, x0:x1] - truth[:, f - 1, y0:y1, x0:x1]
        p = pair[y0:y1, x0:x1]
        per_pair.append(float((now - before)[:, p].double().abs().sum()) / (float(p.sum()) * c))
    total_windows = c * t * (h - r) * (w - r)
    return {
        "hole_mae": sums["abs"] * 255.0 / sums["count"],
        "temporal_error": 255.0 * sum(per_pair) / len(per_pair) if per_pair else math.nan,
        "psnr": _psnr(sums["sq"] / (c * t * h * w)),
        "psnr_hole": _psnr(sums["sq"] / sums["count"]),
        "ssim": (sums["ssim"] + (total_windows - sums["windows"])) / total_windows,
        "ssim_hole": sums["ssim_hole"] / sums["centres"] if sums["centres"] > 0 else math.nan,
        "detail": sums["lap_out"] / sums["lap_truth"] if sums["lap_truth"] > 0 else math.nan,
    }


def _frame_box(mask: Tensor, margin: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of a Tensor[H, W] bool mask grown by ``margin``, clipped to the frame and at
    least an SSIM window on each side; None if the mask is empty."""
    rows, cols = torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    h, w = mask.shape
    y0, y1 = max(0, int(rows[0]) - margin), min(h, int(rows[-1]) + 1 + margin)
    x0, x1 = max(0, int(cols[0]) - margin), min(w, int(cols[-1]) + 1 + margin)
    if y1 - y0 < metrics.SSIM_SIZE:
        y0, y1 = 0, h
    if x1 - x0 < metrics.SSIM_SIZE:
        x0, x1 = 0, w
    return y0, y1, x0, x1


def _psnr(mse: float) -> float:
    return -10.0 * math.log10(mse) if mse > 0 else math.inf


def baseline_method(name: str) -> Method:
    """The baseline ``name`` of :data:`combcn.eval.baselines.BASELINES` as a one-row method."""
    fill = BASELINES[name][0]

    def run(frames: Tensor, hole: Tensor) -> Rows:
        return {name: (fill(frames, hole), hole)}

    return run


@contextlib.contextmanager
def _precision(precision: str, device: torch.device) -> Iterator[None]:
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def model_method(
    model: torch.nn.Module, name: str, *, precision: str = "fp32", with_3dcn: bool = True
) -> Method:
    """A loaded :class:`combcn.model.Inpainter` as a method.

    Rows: ``name`` (the model's composited output, what ``combcn inpaint`` produces); for a model
    with a 3DCN and ``with_3dcn``, also the 3DCN alone, taken from the same forward pass:
    ``3dcn@64`` (its own output at half resolution, known low-res pixels pasted back, scored against
    the area-downsampled truth with the model's low-res hole, as the paper's Table 2 does) and
    ``3dcn↑128`` (that output bilinearly upsampled to full size and composited, comparable to the
    other rows); the numbers are half and full window size (64 and 128 at the paper's 128).
    """
    device = next(model.parameters()).device
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        log.warning("bf16 on a CPU without AMX/AVX-512-bf16 is much slower than fp32; use --precision fp32")

    def run(frames: Tensor, hole: Tensor) -> Rows:
        x, m = frames.to(device), hole.to(device)
        with torch.no_grad(), _precision(precision, device):
            pred = model.predict(x, m)  # type: ignore[operator]
        out = composite(pred.full.float().clamp(0.0, 1.0), x, m)
        rows: Rows = {name: (out.cpu(), hole)}
        if with_3dcn and pred.low is not None:
            low_hole = pred.low_hole.float()
            low = composite(pred.low.float().clamp(0.0, 1.0), pred.low_input.float(), low_hole)
            n, c, t, h, w = low.shape
            up = F.interpolate(
                low.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w),
                size=tuple(frames.shape[-2:]),
                mode="bilinear",
                align_corners=False,
            )
            up = up.reshape(n, t, c, *frames.shape[-2:]).permute(0, 2, 1, 3, 4)
            size = frames.shape[-1]
            rows[f"3dcn@{size // 2}"] = (low.cpu(), low_hole.cpu())
            rows[f"3dcn↑{size}"] = (composite(up, x, m).cpu(), hole)
        return rows

    return run


def engine_method(
    engine: Any, name: str, options: dict[str, Any] | None = None, *, reference_middle: bool = False
) -> Method:
    """A :class:`combcn.engine.Engine` as a method: ``engine.inpaint`` on the window's frames as arrays,
    exactly what a user's plate goes through (crop around the hole, the model at its working size,
    the fill scaled back and composited).

    Args:
        engine: the engine (its model loaded).
        name: the row name.
        options: keyword options of :meth:`combcn.engine.Engine.inpaint`; ``shaper`` defaults to
            ``none`` (the clips are display-referred, sRGB-encoded in [0, 1], what the shipped
            weights were trained on).
        reference_middle: a :class:`ReferenceMethod`: the engine gets the true frame at the window's
            middle (the truth under its hole) as a reference frame, as an artist's cleaned frame.
    """
    opts = {"shaper": "none", **(options or {})}

    def run(frames: Tensor, hole: Tensor, reference: Tensor | None = None) -> Rows:
        plate = frames[0].permute(1, 2, 3, 0).contiguous().numpy()  # [T, H, W, 3] float32
        matte = hole[0, 0].numpy()
        given = dict(opts)
        if reference is not None:
            given["references"] = {plate.shape[0] // 2: reference[0].permute(1, 2, 0).numpy()}
        filled, expected = engine.inpaint_with_report(plate, matte, **given)
        out = torch.from_numpy(filled).permute(3, 0, 1, 2)[None].clamp(0.0, 1.0)
        if expected:
            return {name: (out, hole, sum(expected.values()) / len(expected))}
        return {name: (out, hole)}

    return ReferenceMethod(run) if reference_middle else run


def _truth_at(truth: Tensor, shape: Sequence[int]) -> Tensor:
    """The truth at the row's resolution: itself, or area-downsampled like the model's 3DCN input."""
    if tuple(truth.shape[-2:]) == tuple(shape):
        return truth
    factor = truth.shape[-1] // shape[-1]
    return F.avg_pool3d(truth, (1, factor, factor))


@dataclass
class EvalResult:
    """Per-window scores and per-row summaries.

    Attributes:
        windows (list[dict]): one entry per window: clip, start, box, and {row: {metric: value}}.
        seconds (dict[str, float]): total wall time per method name.
        rows (list[str]): row names in first-seen order.
        examples (list[dict[str, Tensor]]): for the first ``keep_examples`` windows, the middle
            frame (Tensor[3, S, S]) of the truth, the input and every full-size row's output.
    """

    windows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    rows: list[str] = field(default_factory=list)
    row_method: dict[str, str] = field(default_factory=dict)
    examples: list[dict[str, Tensor]] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float]]:
        """{row: {metric: mean over windows (finite values only), "windows": count, "s_per_window"}}."""
        out: dict[str, dict[str, float]] = {}
        for row in self.rows:
            per = [w["scores"][row] for w in self.windows if row in w["scores"]]
            stats: dict[str, float] = {"windows": float(len(per))}
            for key in METRICS:
                vals = [v[key] for v in per if math.isfinite(v[key])]
                stats[key] = sum(vals) / len(vals) if vals else math.nan
            method = self.row_method[row]
            stats["s_per_window"] = self.seconds.get(method, math.nan) / max(1, len(per))
            out[row] = stats
        return out


def full_size(row: str) -> bool:
    """Whether a row is scored on full-size pixels (the 3DCN's own ``3dcn@<size>`` row is at half size)."""
    return "@" not in row


def paired_gaps(
    result: EvalResult, reference: str, metric: str = "hole_mae", *, resamples: int = 20000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Each row's score minus ``reference``'s on the same windows, with a paired bootstrap interval.

    Args:
        result: the evaluation.
        reference: the row every other row is compared with (the main model).
        metric: a key of :data:`METRICS`.
        resamples: bootstrap resamples of the windows (with replacement).
        seed: of the resampling, so that a report is reproducible.

    Returns:
        ``{row: {"gap": mean of row - reference, "low": 2.5 %, "high": 97.5 %, "windows": n}}`` for every
        other full-size row (the 3DCN's half-size row scores another resolution and is left out); windows
        where either score is not finite are dropped. The interval says how much the choice of windows
        moves the gap, not how much retraining would.
    """
    out: dict[str, dict[str, float]] = {}
    rng = np.random.default_rng(seed)
    for row in result.rows:
        if row == reference or not full_size(row):
            continue
        pairs = [
            (w["scores"][row][metric], w["scores"][reference][metric])
            for w in result.windows
            if row in w["scores"] and reference in w["scores"]
        ]
        gaps = np.array([a - b for a, b in pairs if math.isfinite(a) and math.isfinite(b)], dtype=np.float64)
        if gaps.size == 0:
            continue
        means = gaps[rng.integers(0, gaps.size, (resamples, gaps.size))].mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        gap = float(gaps.mean())
        out[row] = {"gap": gap, "low": float(low), "high": float(high), "windows": float(gaps.size)}
    return out


def gaps_table(gaps: dict[str, dict[str, float]], reference: str, metric: str = "hole_mae") -> str:
    """Markdown table of :func:`paired_gaps` (negative: the row scores lower than ``reference``)."""
    interval = "95 % interval (paired bootstrap over windows)"
    lines = [f"| method | {METRICS[metric][0]} minus {reference}'s | {interval} |", "|---|---:|---|"]
    for row, g in gaps.items():
        lines.append(f"| {row} | {g['gap']:+.2f} | {g['low']:+.2f} to {g['high']:+.2f} |")
    return "\n".join(lines) + "\n"


def expected_table(result: EvalResult) -> str:
    """Per window, the error a method expected of its fill (the engine's probe holes) against the hole
    MAE measured, and their ratio; empty where no method said. The engine's figure is for the pixels
    it synthesised; on a hole other frames partly show, the measured MAE also counts propagated ones."""
    lines = []
    for w in result.windows:
        for row, expected in w.get("expected", {}).items():
            measured = w["scores"][row]["hole_mae"]
            ratio = expected / measured if measured > 0 else math.nan
            lines.append(
                f"| {w['clip']}:{w['start']} | {row} | {expected:.2f} | {measured:.2f} | {ratio:.2f} |"
            )
    if not lines:
        return ""
    head = "| window | method | expected MAE | measured hole MAE | expected ÷ measured |\n"
    return head + "|---|---|---:|---:|---:|\n" + "\n".join(lines) + "\n"


def per_clip_table(result: EvalResult, metric: str = "hole_mae") -> str:
    """A markdown table of one metric's mean per clip (columns) and row (rows)."""
    clips = list(dict.fromkeys(w["clip"] for w in result.windows))
    lines = ["| method | " + " | ".join(clips) + " |", "|---|" + "---:|" * len(clips)]
    for row in result.rows:
        cells = []
        for clip in clips:
            vals = [
                w["scores"][row][metric] for w in result.windows if w["clip"] == clip and row in w["scores"]
            ]
            vals = [v for v in vals if math.isfinite(v)]
            cells.append(_fmt(sum(vals) / len(vals), metric) if vals else "n/a")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


Group = tuple[str, str]  # (resolution, hole family)


def evaluate_groups(
    windows: Iterable[Window],
    methods: Callable[[str], dict[str, Method]],
    *,
    total: int | None = None,
    progress: bool = True,
    keep_examples: int = 0,
) -> dict[Group, EvalResult]:
    """Run every method on every window and score each row, one :class:`EvalResult` per group.

    Args:
        windows: the windows, in any order (a lazy iterable is read once).
        methods: resolution (``"native"``, ``"128"``, ...) -> {method name: method} to run there.
        total: how many windows ``windows`` yields (for the progress bar).
        progress: show a progress bar on stderr.
        keep_examples: per group, keep the middle frame of the first this-many windows.

    Returns:
        {(resolution, family): result}, in first-seen order.
    """
    from tqdm import tqdm

    results: dict[Group, EvalResult] = {}
    cache: dict[str, dict[str, Method]] = {}
    bar = tqdm(windows, total=total, desc="eval", unit="window", disable=not progress, leave=False)
    for win in bar:
        group = (win.resolution, win.family)
        if win.resolution not in cache:
            cache[win.resolution] = methods(win.resolution)
        chosen = cache[win.resolution]
        if group not in results:
            results[group] = EvalResult(seconds={name: 0.0 for name in chosen})
        result = results[group]
        frames = win.truth * (1.0 - win.hole)  # the truth never reaches a method inside the hole
        entry: dict[str, Any] = {
            "clip": win.clip,
            "start": win.start,
            "box": None if win.box is None else list(win.box),
            "hole_fraction": float(win.hole.mean()),
            "scores": {},
        }
        if win.source is not None:
            entry["silhouette"] = win.source
        mid = win.truth.shape[2] // 2
        example: dict[str, Tensor] = {"truth": win.truth[0, :, mid], "input": frames[0, :, mid]}
        for name, method in chosen.items():
            bar.set_postfix_str(f"{win.resolution} {win.family} {win.clip}:{win.start} {name}")
            t0 = time.perf_counter()
            if isinstance(method, ReferenceMethod):
                rows = method(frames, win.hole, win.truth[:, :, mid])
            else:
                rows = method(frames, win.hole)
            result.seconds[name] += time.perf_counter() - t0
            for row, (output, row_hole, *said) in rows.items():
                if said:
                    entry.setdefault("expected", {})[row] = float(said[0])
                truth = _truth_at(win.truth, output.shape[-2:])
                entry["scores"][row] = score(output.float(), truth, row_hole)
                if tuple(output.shape[-2:]) == tuple(win.truth.shape[-2:]):
                    example[row] = output[0, :, mid].float()
                if row not in result.rows:
                    result.rows.append(row)
                    result.row_method[row] = name
        result.windows.append(entry)
        if len(result.examples) < keep_examples:
            result.examples.append(example)
        log.debug("window %s:%d (%s, %s) scored: %s", win.clip, win.start, *group, entry["scores"])
    return results


def evaluate(
    windows: Sequence[Window], methods: dict[str, Method], *, progress: bool = True, keep_examples: int = 0
) -> EvalResult:
    """Run every method on every window and score each row, all windows as one group.

    ``keep_examples``: keep the middle frame of the first this-many windows (see :class:`EvalResult`).
    """
    merged = [Window(w.clip, w.start, w.box, w.truth, w.hole, "all", "all", w.source) for w in windows]
    results = evaluate_groups(
        merged, lambda _: methods, total=len(merged), progress=progress, keep_examples=keep_examples
    )
    return results.get(("all", "all"), EvalResult(seconds={name: 0.0 for name in methods}))


def example_sheet(result: EvalResult, tile_height: int | None = None) -> np.ndarray:
    """The kept examples as one RGB image: a row per window; columns truth, input, then each method.

    Every tile is resized (area filter) to the first example's size, or to ``tile_height`` pixels tall
    with the first example's aspect ratio, so windows of different sizes line up.

    Returns:
        ndarray[rows * h, columns * w, 3] uint8.
    """
    if not result.examples:
        raise ValueError("no examples were kept (evaluate(..., keep_examples=N))")
    columns = list(result.examples[0])
    h, w = result.examples[0]["truth"].shape[-2:]
    if tile_height is not None and tile_height < h:
        h, w = tile_height, max(1, round(w * tile_height / h))

    def tile(image: Tensor) -> Tensor:
        if tuple(image.shape[-2:]) == (h, w):
            return image
        return F.interpolate(image[None], size=(h, w), mode="area")[0]

    rows = []
    for example in result.examples:
        tiles = [tile(example.get(c, torch.zeros_like(example["truth"]))) for c in columns]
        rows.append(torch.cat(tiles, dim=2))
    sheet = torch.cat(rows, dim=1).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.rint(sheet * 255).astype(np.uint8)


def against_baselines(
    summary: dict[str, dict[str, float]], models: Sequence[str], baselines: Sequence[str]
) -> str:
    """Markdown: each model row's hole MAE and temporal error as a multiple of the best baseline's
    (below 1: better than every baseline), and its detail ratio. Empty without both kinds of row."""
    present = [b for b in baselines if b in summary]
    rows = [m for m in models if m in summary]
    if not present or not rows:
        return ""
    lines = [
        "| method | hole MAE ÷ best baseline's | temporal err ÷ best baseline's | detail (truth = 1) |",
        "|---|---:|---:|---:|",
    ]
    for model in rows:
        cells = []
        for key in ("hole_mae", "temporal_error"):
            finite = [(summary[b][key], b) for b in present if math.isfinite(summary[b][key])]
            value = summary[model][key]
            if not finite or not math.isfinite(value) or min(finite)[0] <= 0:
                cells.append("n/a")
                continue
            best, which = min(finite)
            cells.append(f"{value / best:.2f} (best: {which}, {best:.2f})")
        cells.append(_fmt(summary[model]["detail"], "detail"))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _badness(key: str, value: float) -> float:
    """Lower is better, for every metric: the value, its negative, or its distance from 1."""
    goal = METRICS[key][1]
    return -value if goal == "high" else abs(value - 1.0) if goal == "one" else value


def _fmt(value: float, key: str) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if key.startswith("ssim") else f"{value:.3f}" if key == "detail" else f"{value:.2f}"


def markdown_table(summary: dict[str, dict[str, float]], descriptions: dict[str, str] | None = None) -> str:
    """The summary as a GitHub markdown table; the best value of each column in bold.

    Rows at a lower resolution (``@64``) are left out of the bolding: their scores are not on the
    same pixels.
    """
    descriptions = descriptions or {}
    keys = list(METRICS)
    header = "| method | " + " | ".join(METRICS[k][0] for k in keys) + " | s/window | windows |"
    sep = "|---|" + "---:|" * (len(keys) + 2)
    comparable = [r for r in summary if full_size(r)]
    best: dict[str, float] = {}
    for key in keys:
        vals = [summary[r][key] for r in comparable if math.isfinite(summary[r][key])]
        if vals:
            best[key] = min(vals, key=lambda v, k=key: _badness(k, v))  # type: ignore[misc]
    lines = [header, sep]
    for row, stats in summary.items():
        cells = []
        for key in keys:
            text = _fmt(stats[key], key)
            if row in comparable and key in best and stats[key] == best[key]:
                text = f"**{text}**"
            cells.append(text)
        label = f"{row} ({descriptions[row]})" if row in descriptions else row
        cells.append(_fmt(stats["s_per_window"], "s"))
        cells.append(str(int(stats["windows"])))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
