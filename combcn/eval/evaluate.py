"""Run fills on evaluation windows, score them, and summarise as a markdown table and JSON.

A *method* maps one window's input to one or more scored *rows*: ``method(frames, hole)`` with
frames Tensor[1, 3, T, S, S] (hole pixels zeroed, so nothing can leak the truth) and hole
Tensor[1, 1, T, S, S] returns ``{row_name: (output, row_hole)}``; output is Tensor[1, 3, T, s, s] for
s = S or S / 2 (the 3DCN's own resolution, scored against the area-downsampled truth).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
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

Rows = dict[str, tuple[Tensor, Tensor]]
Method = Callable[[Tensor, Tensor], Rows]

#: metric key -> (column title, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "hole_mae": ("hole MAE (0-255) ↓", False),
    "temporal_error": ("temporal err (0-255) ↓", False),
    "psnr": ("PSNR dB ↑", True),
    "psnr_hole": ("PSNR hole dB ↑", True),
    "ssim": ("SSIM ↑", True),
    "ssim_hole": ("SSIM hole ↑", True),
}


def score(output: Tensor, truth: Tensor, hole: Tensor) -> dict[str, float]:
    """All metrics of one window (Tensor[1, 3, T, s, s] each, hole [1, 1, T, s, s]) as floats."""
    output, truth, hole = output.double(), truth.double(), (hole > 0.5).double()  # convert once
    ssim_whole, ssim_hole = metrics.ssim_whole_and_hole(output, truth, hole)
    values = {
        "hole_mae": metrics.hole_mae(output, truth, hole),
        "temporal_error": metrics.temporal_error(output, truth, hole),
        "psnr": metrics.psnr(output, truth),
        "psnr_hole": metrics.psnr_hole(output, truth, hole),
        "ssim": ssim_whole,
        "ssim_hole": ssim_hole,
    }
    return {k: float(v[0]) for k, v in values.items()}


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


def _truth_at(truth: Tensor, size: int) -> Tensor:
    """The truth at the row's resolution: itself, or area-downsampled like the model's 3DCN input."""
    if truth.shape[-1] == size:
        return truth
    factor = truth.shape[-1] // size
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


def evaluate(
    windows: Sequence[Window], methods: dict[str, Method], *, progress: bool = True, keep_examples: int = 0
) -> EvalResult:
    """Run every method on every window and score each row (see the module docstring).

    ``keep_examples``: keep the middle frame of the first this-many windows (see :class:`EvalResult`).
    """
    from tqdm import tqdm

    result = EvalResult(seconds={name: 0.0 for name in methods})
    bar = tqdm(windows, desc="eval", unit="window", disable=not progress, leave=False)
    for win in bar:
        frames = win.truth * (1.0 - win.hole)  # the truth never reaches a method inside the hole
        entry: dict[str, Any] = {
            "clip": win.clip,
            "start": win.start,
            "box": None if win.box is None else list(win.box),
            "scores": {},
        }
        mid = win.truth.shape[2] // 2
        example: dict[str, Tensor] = {"truth": win.truth[0, :, mid], "input": frames[0, :, mid]}
        for name, method in methods.items():
            bar.set_postfix_str(f"{win.clip}:{win.start} {name}")
            t0 = time.perf_counter()
            rows = method(frames, win.hole)
            result.seconds[name] += time.perf_counter() - t0
            for row, (output, row_hole) in rows.items():
                truth = _truth_at(win.truth, output.shape[-1])
                entry["scores"][row] = score(output.float(), truth, row_hole)
                if output.shape[-1] == win.truth.shape[-1]:
                    example[row] = output[0, :, mid].float()
                if row not in result.rows:
                    result.rows.append(row)
                    result.row_method[row] = name
        result.windows.append(entry)
        if len(result.examples) < keep_examples:
            result.examples.append(example)
        log.debug("window %s:%d scored: %s", win.clip, win.start, entry["scores"])
    return result


def example_sheet(result: EvalResult) -> np.ndarray:
    """The kept examples as one RGB image: a row per window; columns truth, input, then each method.

    Returns:
        ndarray[rows * S, columns * S, 3] uint8.
    """
    if not result.examples:
        raise ValueError("no examples were kept (evaluate(..., keep_examples=N))")
    columns = list(result.examples[0])
    rows = []
    for example in result.examples:
        tiles = [example.get(c, torch.zeros_like(example["truth"])) for c in columns]
        rows.append(torch.cat(tiles, dim=2))
    sheet = torch.cat(rows, dim=1).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.rint(sheet * 255).astype(np.uint8)


def _fmt(value: float, key: str) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if key.startswith("ssim") else f"{value:.2f}"


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
            best[key] = max(vals) if METRICS[key][1] else min(vals)
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
