"""The training loop: 3DCN pre-training then joint training (paper §3), checkpoints, logs, validation.

Run directory (``train.out``) contents:

- ``checkpoint.pt``: model + optimiser + iteration + wall time, written atomically every few minutes
  (``--resume`` continues from it);
- ``best.pt`` / ``last.pt``: weights files (see :mod:`combcn.model.weights`) of the best validation and
  the latest state;
- ``log.csv`` (per logged iteration), ``val.csv`` (per validation), ``loss.png`` (curves), ``config.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from combcn.errors import ConfigError, InputError, ModelError
from combcn.model.config import ModelConfig
from combcn.model.inpainter import Inpainter, to_channels_last
from combcn.model.weights import build_from_weights, read_weights, save_weights
from combcn.precision import grads_finite, resolve_precision
from combcn.train.config import TrainConfig
from combcn.train.data import Clip, discover, is_commercial, load_clips, split_by_clip
from combcn.train.losses import masked_l1, total_loss
from combcn.train.windows import WindowSampler

log = logging.getLogger("combcn.train")

CHECKPOINT_FORMAT = "combcn-train-checkpoint"


@dataclass
class TrainResult:
    """What a run did. ``status``: "done", "stopped" (time limit or signal) or "nan"."""

    status: str
    iteration: int
    wall_time_s: float
    best_val: float | None
    out: Path


def code_version() -> str:
    """The git commit of the combcn source (with ``-dirty`` if it has local changes), or "unknown"."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "combcn"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def mean_rgb(clips: list[Clip], max_frames: int = 8) -> tuple[float, float, float]:
    """Mean pixel of the training clips in [0, 1] (a few frames per clip): the hole pre-fill (paper §1)."""
    sums = np.zeros(3)
    count = 0
    for clip in clips:
        idx = np.linspace(0, clip.length - 1, num=min(max_frames, clip.length)).astype(int)
        f = np.asarray(clip.frames[idx], dtype=np.float64)
        sums += f.reshape(-1, 3).sum(0)
        count += f.shape[0] * f.shape[1] * f.shape[2]
    m = sums / max(count, 1) / 255.0
    return (round(float(m[0]), 4), round(float(m[1]), 4), round(float(m[2]), 4))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def plot_losses(out: Path) -> None:
    """Write ``loss.png`` from ``log.csv`` and ``val.csv`` (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_csv(out / "log.csv")
    vals = _read_csv(out / "val.csv")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label in (("loss_3dcn", "train 3DCN (Eq. 1)"), ("loss_combcn", "train CombCN (Eq. 2)")):
        pts = [(int(r["iteration"]), float(r[key]) * 255) for r in rows if r.get(key) not in ("", None)]
        if pts:
            xs, ys = zip(*pts, strict=True)
            k = max(1, len(ys) // 50)  # moving average: single windows are noisy
            smooth = np.convolve(ys, np.ones(k) / k, mode="valid")
            ax.plot(xs[k - 1 :], smooth, label=label)
    for key, label in (("val_3dcn", "val 3DCN (64x64)"), ("val_full", "val output (128x128)")):
        pts = [(int(r["iteration"]), float(r[key])) for r in vals if r.get(key) not in ("", None)]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "o-", label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("masked L1 (0-255 scale)")
    ax.set_title(f"combcn training: {out.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=".loss.", suffix=".png", dir=out)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=90)
        os.replace(tmp, out / "loss.png")
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_grown(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``model``, where some layers of ``model`` may take more input channels.

    A tensor of the same shape is copied. A weight whose input-channel dimension (dim 1) is larger in
    ``model`` (a new input such as ``model.seen``) gets the old weights in its first channels and zeros
    in the new ones, so the grown model computes exactly what the old one did until it is trained.

    Raises:
        ConfigError: a tensor is missing or differs in another way.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise ConfigError(f"train.init weights lack {', '.join(missing[:5])}")
    grown: dict[str, torch.Tensor] = {}
    for name, mine in own.items():
        old = state[name]
        if old.shape == mine.shape:
            grown[name] = old
        elif (
            old.dim() == mine.dim() >= 2
            and old.shape[1] < mine.shape[1]
            and (old.shape[:1] + old.shape[2:] == mine.shape[:1] + mine.shape[2:])
        ):
            value = torch.zeros_like(mine)
            value[:, : old.shape[1]] = old
            grown[name] = value
        else:
            raise ConfigError(
                f"train.init weights do not fit the model: {name} is {tuple(old.shape)}, "
                f"the model needs {tuple(mine.shape)}"
            )
    model.load_state_dict(grown)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class _CsvLog:
    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path = path
        self.fields = fields
        if path.is_file():
            # a resumed run keeps the columns its log was started with
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                self.fields = header
        else:
            with open(path, "w", newline="") as f:
                csv.DictWriter(f, fields).writeheader()

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow({k: row.get(k, "") for k in self.fields})


def prepare_data(cfg: TrainConfig) -> tuple[list[Clip], list[Clip]]:
    """Discover, filter, cache and split the clips: (train, validation), split by clip."""
    d = cfg.data
    if not d.sources:
        raise ConfigError("data.sources is empty: list folders of clips, clip folders or movie files")
    sources = discover(d.sources)
    if d.licence == "commercial":
        dropped = [s.name for s in sources if not is_commercial(s.licence)]
        sources = [s for s in sources if is_commercial(s.licence)]
        if dropped:
            log.info("licence filter: %d clip(s) not commercially usable left out", len(dropped))
    if d.include:
        unknown = sorted(set(d.include) - {s.name for s in sources})
        if unknown:
            log.warning("data.include names unknown (or filtered) clips: %s", ", ".join(unknown))
        sources = [s for s in sources if s.name in set(d.include)]
    sources = [s for s in sources if s.name not in set(d.exclude)]
    clips = load_clips(sources, d.cache, short_side=d.short_side, window=d.window, resolution=d.resolution)
    if not clips:
        raise InputError(
            "no usable training clips (all missing, filtered, too short, too small or unreadable)"
        )
    train_names, val_names = split_by_clip(
        [c.name for c in clips], d.val_clips, d.val_fraction, cfg.train.seed
    )
    by_name = {c.name: c for c in clips}
    train = [by_name[n] for n in train_names]
    val = [by_name[n] for n in val_names]
    if not train:
        raise ConfigError("every usable clip is a validation clip; leave some for training")
    log.info(
        "clips: %d train (%s), %d validation (%s)",
        len(train),
        ", ".join(train_names),
        len(val),
        ", ".join(val_names),
    )
    return train, val


@torch.no_grad()
def validate(
    model: Inpainter, sampler: WindowSampler, n: int, autocast: torch.dtype | None, device: torch.device
) -> dict[str, float]:
    """Masked L1 on the paper's box holes, 0-255 scale: ``val_3dcn`` (64x64, Eq. 1) and ``val_full``
    (the 128x128 output, Eq. 2 over the whole window) on ``n`` fixed validation windows."""
    was_training = model.training
    model.eval()
    l3d, lfull = [], []
    for i in range(n):
        frames, hole, _ = sampler.sample(i, kind="box", clip_index=i)  # every validation clip in turn
        frames, hole = frames[None].to(device), hole[None].to(device)
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            pred = model.predict(frames, hole)
        if pred.low is not None:
            from combcn.model.inpainter import downsample

            l3d.append(float(masked_l1(pred.low.clamp(0, 1), downsample(frames), pred.low_hole)) * 255)
        lfull.append(float(masked_l1(pred.full.clamp(0, 1), frames, (hole > 0).float())) * 255)
    model.train(was_training)
    out = {"val_full": float(np.mean(lfull))}
    if l3d:
        out["val_3dcn"] = float(np.mean(l3d))
    return out


@torch.no_grad()
def validation_report(
    model: Inpainter,
    clips: list[Clip],
    *,
    per_clip: int = 8,
    seed: int = 1234,
    window: int = 32,
    resolution: int = 128,
) -> dict[str, Any]:
    """Masked L1 (0-255) on the paper's box holes, ``per_clip`` fixed windows of every clip.

    Returns ``{"val_3dcn", "val_full", "mean_fill", "smooth_fill", "plate_fill", "windows", "per_clip":
    {name: val_full}}``; the ``*_fill`` values are the errors of the three pre-fills alone (context).
    """
    from combcn.model.inpainter import downsample
    from combcn.model.prefill import cleanplate_fill, pushpull_fill

    model.eval()
    mean = torch.tensor(model.config.mean_rgb).view(1, 3, 1, 1, 1)
    l3d: list[float] = []
    lfull: list[float] = []
    lmean: list[float] = []
    lsmooth: list[float] = []
    lplate: list[float] = []
    per: dict[str, float] = {}
    for clip in clips:
        sampler = WindowSampler([clip], window=window, resolution=resolution, seed=seed, augment=False)
        errs = []
        for i in range(per_clip):
            frames, hole, _ = sampler.sample(i, kind="box")
            frames, hole = frames[None], hole[None]
            pred = model.predict(frames, hole)
            if pred.low is not None:
                l3d.append(float(masked_l1(pred.low.clamp(0, 1), downsample(frames), pred.low_hole)) * 255)
            errs.append(float(masked_l1(pred.full.clamp(0, 1), frames, hole)) * 255)
            lmean.append(float(masked_l1(mean.expand_as(frames), frames, hole)) * 255)
            lsmooth.append(float(masked_l1(pushpull_fill(frames, hole), frames, hole)) * 255)
            lplate.append(float(masked_l1(cleanplate_fill(frames, hole), frames, hole)) * 255)
        per[clip.name] = round(float(np.mean(errs)), 3)
        lfull += errs
    out: dict[str, Any] = {
        "metric": "masked L1 per hole pixel and channel, 0-255 scale, paper box holes (one 48-64 px box)",
        "val_full": round(float(np.mean(lfull)), 3),
        "mean_fill": round(float(np.mean(lmean)), 3),
        "smooth_fill": round(float(np.mean(lsmooth)), 3),
        "plate_fill": round(float(np.mean(lplate)), 3),
        "windows": len(lfull),
        "per_clip": per,
    }
    if l3d:
        out["val_3dcn"] = round(float(np.mean(l3d)), 3)
    return out


def _lr_at(cfg: TrainConfig, it: int) -> float:
    t = cfg.train
    if t.lr_schedule == "constant":
        return t.lr
    return t.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(it, t.iterations) / t.iterations)))


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train as ``cfg`` says; see the module docstring for what is written where.

    Raises:
        ConfigError / InputError: bad config or no usable data.
        ModelError: ``resume`` with a checkpoint that does not match the config.
    """
    import cv2

    t = cfg.train
    torch.set_num_threads(t.threads)

    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(t.threads)  # window propagation runs OpenCV; it keeps to train.threads like torch
    try:
        return _train(cfg, resume=resume, progress=progress)
    finally:
        cv2.setNumThreads(cv2_threads)


def _train(cfg: TrainConfig, *, resume: bool, progress: bool) -> TrainResult:
    """:func:`train` once the thread counts are set."""
    from tqdm import tqdm

    t = cfg.train
    device = torch.device(t.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        from combcn.errors import BackendError

        raise BackendError('train.device is cuda but no CUDA device is available; use device = "cpu"')
    out = Path(t.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file() and not resume:
        raise ConfigError(
            f"{ckpt_path} exists: pass --resume to continue that run, or choose another train.out"
        )

    train_clips, val_clips = prepare_data(cfg)
    mcfg = cfg.model
    if mcfg.mean_rgb == ModelConfig().mean_rgb:
        mcfg = dataclasses.replace(mcfg, mean_rgb=mean_rgb(train_clips))
    start_it, wall_before, best_val = 0, 0.0, None
    ckpt: dict[str, Any] | None = None
    if resume and ckpt_path.is_file():
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"cannot read checkpoint ({exc})", path=ckpt_path) from exc
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ModelError("not a combcn training checkpoint", path=ckpt_path)
        saved = ModelConfig.from_dict(ckpt["model_config"], where="checkpoint model config")
        if dataclasses.replace(saved, mean_rgb=mcfg.mean_rgb) != mcfg:
            raise ModelError(
                f"checkpoint was made with model config {saved}, the config asks for {mcfg}; "
                "use the run's original config or a new train.out",
                path=ckpt_path,
            )
        mcfg = saved
    init: dict[str, Any] | None = None
    if ckpt is None and t.init:
        init = read_weights(t.init)
        start_cfg = ModelConfig.from_dict(init["config"], where=f"{t.init} model config")
        grows = mcfg.seen and not start_cfg.seen
        same = dataclasses.replace(
            start_cfg, mean_rgb=mcfg.mean_rgb, seen=mcfg.seen, keep_seen=mcfg.keep_seen, track=mcfg.track
        )
        if same != mcfg or (start_cfg.seen and not mcfg.seen):
            raise ConfigError(
                f"train.init {t.init} holds a model {start_cfg}, the config asks for {mcfg}; "
                "make the config's model section match the weights (only model.seen may be added, and "
                "model.keep_seen and model.track changed)"
            )
        mcfg = dataclasses.replace(mcfg, mean_rgb=start_cfg.mean_rgb)  # the weights were trained with it
    model = Inpainter(mcfg)
    if init is not None:
        load_grown(model, build_from_weights(init, path=t.init).state_dict())
        log.info("starting from the weights %s%s", t.init, " (CombCN's seen channel added)" if grows else "")
    to_channels_last(model).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        to_channels_last(model)
        opt.load_state_dict(ckpt["optimizer"])
        start_it, wall_before = int(ckpt["iteration"]), float(ckpt["wall_time_s"])
        best_val = ckpt.get("best_val")
        log.info("resuming %s at iteration %d (%.2f h trained)", out, start_it, wall_before / 3600)
    (out / "config.json").write_text(json.dumps({**cfg.to_dict(), "model": mcfg.to_dict()}, indent=2))

    autocast = resolve_precision(t.precision, device)
    log.info(
        "model %s, %.2f M parameters, precision %s, %d thread(s)",
        mcfg,
        sum(p.numel() for p in model.parameters()) / 1e6,
        "bf16" if autocast else "fp32",
        t.threads,
    )
    train_sampler = WindowSampler(
        train_clips,
        window=cfg.data.window,
        resolution=cfg.data.resolution,
        holes=cfg.holes,
        seed=t.seed,
        encoding=cfg.data.encoding,
        exposure=cfg.data.exposure,
    )
    val_sampler = WindowSampler(
        val_clips or train_clips,
        window=cfg.data.window,
        resolution=cfg.data.resolution,
        seed=t.seed + 1_000_003,
        augment=False,
    )
    log_csv = _CsvLog(
        out / "log.csv",
        [
            "iteration",
            "stage",
            "loss_total",
            "loss_3dcn",
            "loss_combcn",
            "loss_temporal",
            "lr",
            "samples_per_s",
            "wall_time_s",
        ],
    )
    val_csv = _CsvLog(out / "val.csv", ["iteration", "val_3dcn", "val_full", "wall_time_s"])
    provenance_base = {
        "trained_on": [c.name for c in train_clips],
        "validation_clips": [c.name for c in val_clips],
        "config": {**cfg.to_dict(), "model": mcfg.to_dict()},
        "code_version": code_version(),
    }
    if t.init:
        # a continued run: what the starting weights had been through is part of the story
        start = (init or {}).get("provenance") or {}
        if ckpt is not None:
            start = ckpt.get("init_provenance") or {}
        provenance_base["init"] = {
            "weights": t.init,
            "iterations": start.get("iterations"),
            "wall_time_h": start.get("wall_time_h"),
            "code_version": start.get("code_version"),
            "init": start.get("init"),  # the starting weights' own start, if they had one
        }

    stop: dict[str, int | None] = {"signal": None}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    t_start = time.monotonic()
    last_ckpt = t_start
    it = start_it
    skipped = 0
    status = "done"

    def wall() -> float:
        return wall_before + time.monotonic() - t_start

    def provenance(extra: dict[str, Any]) -> dict[str, Any]:
        return {**provenance_base, "iterations": it, "wall_time_h": round(wall() / 3600, 3), **extra}

    def save_checkpoint() -> None:
        _atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "model_config": mcfg.to_dict(),
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "iteration": it,
                "wall_time_s": wall(),
                "best_val": best_val,
                "init_provenance": (provenance_base.get("init") or {}) if t.init else None,
            },
            ckpt_path,
        )
        save_weights(model, out / "last.pt", provenance=provenance({}))
        try:
            plot_losses(out)
        except Exception as exc:  # a plotting problem must never stop a long run
            log.warning("could not draw loss.png: %s", exc)

    bar = tqdm(total=t.iterations, initial=start_it, disable=not progress, unit="it", dynamic_ncols=True)
    try:
        while it < t.iterations:
            if stop["signal"] is not None:
                log.info("signal %s: checkpointing and stopping at iteration %d", stop["signal"], it)
                status = "stopped"
                break
            if t.max_minutes and time.monotonic() - t_start > t.max_minutes * 60:
                log.info("max_minutes reached: checkpointing and stopping at iteration %d", it)
                status = "stopped"
                break
            pretrain = mcfg.variant == "combined" and it < t.pretrain_3dcn
            lr = _lr_at(cfg, it)
            for group in opt.param_groups:
                group["lr"] = lr
            tic = time.monotonic()
            # inputs: the truth with any propagated pixels pasted in; hole: what the network must fill
            inputs, frames, hole = train_sampler.batch([it * t.batch + b for b in range(t.batch)])
            inputs, frames, hole = inputs.to(device), frames.to(device), hole.to(device)
            with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                pred = model.predict(inputs, hole, only_3dcn=pretrain)
            losses = total_loss(pred, frames, hole, alpha=t.alpha, temporal=t.temporal)
            loss = losses["3dcn"] if pretrain else losses["total"]
            if not torch.isfinite(loss):
                log.error(
                    "loss is %s at iteration %d: stopping; %s keeps the last good state "
                    "(iteration of the last checkpoint). Lower train.lr and --resume.",
                    float(loss.detach()),
                    it,
                    ckpt_path,
                )
                status = "nan"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grads_finite(model):
                opt.step()
            else:
                # a bf16 backward can overflow on a rare window; one inf gradient would turn Adam's
                # state and then every weight into NaN, so that step is skipped instead
                skipped += 1
                log.warning(
                    "iteration %d: non-finite gradient (bf16 overflow?): step skipped (%d so far)",
                    it + 1,
                    skipped,
                )
            it += 1
            sps = t.batch / max(time.monotonic() - tic, 1e-9)
            bar.update(1)
            bar.set_postfix(
                loss=f"{float(loss.detach()) * 255:.2f}",
                stage="3dcn" if pretrain else "joint",
                sps=f"{sps:.2f}",
            )
            if it % t.log_every == 0 or it == 1:
                log_csv.write(
                    {
                        "iteration": it,
                        "stage": "pretrain_3dcn" if pretrain else "joint",
                        "loss_total": f"{float(loss.detach()):.6f}",
                        "loss_3dcn": f"{float(losses['3dcn'].detach()):.6f}" if "3dcn" in losses else "",
                        "loss_combcn": f"{float(losses['combcn'].detach()):.6f}"
                        if "combcn" in losses and not pretrain
                        else "",
                        "loss_temporal": f"{float(losses['temporal'].detach()):.6f}"
                        if "temporal" in losses and not pretrain
                        else "",
                        "lr": f"{lr:.3g}",
                        "samples_per_s": f"{sps:.3f}",
                        "wall_time_s": f"{wall():.1f}",
                    }
                )
            if it % t.val_every == 0 or it == t.iterations:
                v = validate(model, val_sampler, t.val_samples, autocast, device)
                val_csv.write(
                    {
                        "iteration": it,
                        "val_3dcn": f"{v.get('val_3dcn', float('nan')):.4f}",
                        "val_full": f"{v['val_full']:.4f}",
                        "wall_time_s": f"{wall():.1f}",
                    }
                )
                log.info("iteration %d: validation %s", it, {k: round(x, 3) for k, x in v.items()})
                # only joint-stage numbers describe the final output
                if not pretrain and (best_val is None or v["val_full"] < best_val):
                    best_val = v["val_full"]
                    save_weights(model, out / "best.pt", provenance=provenance({"validation": v}))
            if t.snapshot_every and it % t.snapshot_every == 0:
                save_weights(model, out / "snapshots" / f"iter{it:06d}.pt", provenance=provenance({}))
            if time.monotonic() - last_ckpt > t.checkpoint_minutes * 60:
                save_checkpoint()
                last_ckpt = time.monotonic()
        if status != "nan":
            save_checkpoint()
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    log.info("%s at iteration %d after %.2f h; best validation %s", status, it, wall() / 3600, best_val)
    return TrainResult(status, it, wall(), best_val, out)


def export_weights(
    run_dir: str | Path,
    dest: str | Path,
    *,
    which: str = "best",
    half: bool = True,
    extra: dict[str, Any] | None = None,
    validate: list[Clip] | None = None,
    per_clip: int = 8,
) -> dict[str, Any]:
    """Copy a run's ``best.pt`` (or ``last.pt``) to ``dest`` (fp16 storage by default) and write
    ``PROVENANCE.json`` next to it. Returns the provenance."""
    run_dir = Path(run_dir)
    src = run_dir / f"{which}.pt"
    payload = read_weights(src)
    model = build_from_weights(payload, path=src)
    prov = dict(payload.get("provenance") or {})
    prov.update(extra or {})
    if validate:
        window, resolution = model.config.window, model.config.resolution
        report = validation_report(model, validate, per_clip=per_clip, window=window, resolution=resolution)
        prov["validation_during_training"] = prov.get("validation")
        prov["validation"] = report
    prov["name"] = Path(dest).stem
    prov["exported_from"] = str(src)
    save_weights(model, dest, provenance=prov, half=half)
    prov_path = Path(dest).parent / "PROVENANCE.json"
    prov_path.write_text(json.dumps(prov, indent=2) + "\n")
    return prov
