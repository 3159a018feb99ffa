"""The :class:`Engine`: a loaded model that inpaints arrays (the API and the OpenFX server use it)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from combcn.engine.core import RenderSettings, composite, render_windows
from combcn.engine.matte import MatteOptions, shape_matte
from combcn.engine.shaper import default_shaper_for, get_shaper
from combcn.errors import BackendError, ConfigError, InputError

log = logging.getLogger("combcn.engine")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> cuda when present, else cpu; a requested but absent cuda raises :class:`BackendError`."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use cpu or cuda (cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError("--device cuda was asked for but no CUDA GPU is available here; use --device cpu")
    return dev


def matte_options(options: dict[str, Any]) -> MatteOptions:
    """Pop the matte keywords (threshold, invert, expand, feather) out of ``options``."""
    return MatteOptions(
        threshold=float(options.pop("threshold", 0.5)),
        invert=bool(options.pop("invert", False)),
        expand=int(options.pop("expand", 0)),
        feather=float(options.pop("feather", 0.0)),
    )


def render_settings(options: dict[str, Any]) -> RenderSettings:
    """Pop the window keywords (overlap, margin, context) out of ``options``."""
    context = options.pop("context", None)
    overlap = options.pop("overlap", None)
    settings = RenderSettings(
        overlap=None if overlap is None else int(overlap),
        margin=float(options.pop("margin", 0.5)),
        context=None if context is None else int(context),
    )
    if (
        (settings.overlap or 0) < 0
        or settings.margin < 0
        or (settings.context is not None and settings.context < 0)
    ):
        raise ConfigError("overlap, margin and context must be >= 0")
    return settings


def set_track(model: torch.nn.Module, track: bool) -> None:
    """Switch the camera-tracked clean plate of ``model`` on or off (it changes no weight).

    Raises:
        ConfigError: ``track`` is on and the model has no clean-plate pre-fill to track.
    """
    from combcn.model import ModelConfig

    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        if track:
            raise ConfigError("this model has no clean plate to track (it is not a combcn Inpainter)")
        return
    try:
        setattr(model, "config", dataclasses.replace(config, track=bool(track)))  # noqa: B010 (nn.Module typing)
    except ConfigError as exc:
        raise ConfigError(f"cannot switch camera tracking on for these weights: {exc}") from exc


class Engine:
    """A model kept loaded, to inpaint many clips or windows.

    Args:
        weights: weights file; None = the shipped default (random init with a warning if none).
        device: ``"cpu"``, ``"cuda"`` or None (cuda when present).
        model: an already built model (e.g. a tiny one in tests); overrides ``weights``.
        threads: CPU threads for torch (None = torch's default).
        track: None = as the weights say; False = the locked-off clean plate even where the camera
            moves; True = track the camera (weights with the ``plate`` pre-fill only). See
            docs/MODEL.md, "Tracked plate".
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | torch.device | None = None,
        *,
        model: torch.nn.Module | None = None,
        threads: int | None = None,
        track: bool | None = None,
    ):
        self.device = resolve_device(device)
        if self.device.type == "cuda":  # same window, same bits: chunked farm renders equal single ones
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"--threads must be >= 1, got {threads}")
            torch.set_num_threads(int(threads))
        if model is None:
            from combcn.model import load_model

            model = load_model(weights, device=self.device)
        if track is not None:
            set_track(model, track)
        self.model = model.to(self.device).eval()

    @property
    def window(self) -> int:
        """Frames per temporal window of the model."""
        return int(getattr(self.model, "window", 32))

    @property
    def resolution(self) -> int:
        """The model's working size in pixels."""
        return int(getattr(self.model, "resolution", 128))

    def inpaint(self, frames: Any, matte: Any, **options: Any) -> Any:
        """Inpaint frames held in memory.

        Args:
            frames (ndarray | Tensor [T, H, W, C], float32 or float16): channels 0-2 are RGB; other
                channels are returned untouched.
            matte (ndarray | Tensor [T, H, W]): in [0, 1], 1 = remove.
            **options: ``shaper`` (default acescct), ``threshold`` (0.5), ``invert``, ``expand`` (px),
                ``feather`` (px), ``overlap`` (frames, window/4), ``margin`` (0.5).

        Returns:
            Same type, dtype and shape as ``frames``; where the (feathered) matte is 0 the values are
            bit-exact copies of the input.

        Raises:
            InputError: bad shapes or types, NaN/Inf in RGB, a frame entirely under the matte.
        """
        is_torch = isinstance(frames, torch.Tensor)
        plate = frames.detach().cpu().numpy() if is_torch else np.asarray(frames)
        raw_matte = matte.detach().cpu().numpy() if isinstance(matte, torch.Tensor) else np.asarray(matte)
        if plate.ndim != 4 or plate.shape[-1] < 3:
            raise InputError(f"frames must be (T, H, W, C) with C >= 3, got shape {plate.shape}")
        if plate.dtype not in (np.float32, np.float16):
            raise InputError(f"frames must be float32 or float16, got {plate.dtype}")
        if raw_matte.shape != plate.shape[:3]:
            raise InputError(f"matte must be (T, H, W) = {plate.shape[:3]}, got {raw_matte.shape}")
        opts = dict(options)
        shaper = get_shaper(opts.pop("shaper", None) or default_shaper_for(plate.dtype))
        m_opts = matte_options(opts)
        settings = render_settings(opts)
        if opts:
            raise ConfigError(f"unknown option(s): {', '.join(sorted(opts))}")
        t = plate.shape[0]
        finite = np.isfinite(plate[..., :3]).reshape(t, -1).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise InputError("the RGB channels contain NaN or Inf; fix the plate first", frame=bad)
        alphas = [shape_matte(raw_matte[i], m_opts) for i in range(t)]
        for i, alpha in enumerate(alphas):
            if alpha.min() > 0:
                raise InputError("the matte covers the whole frame: nothing is left to fill from", frame=i)
        result = plate.copy()
        if not any(a.max() > 0 for a in alphas):
            log.warning("the matte is empty: returning the frames unchanged")
        else:

            def emit(position: int, fill: Any) -> None:
                result[position, :, :, :3] = composite(plate[position, :, :, :3], fill)

            render_windows(
                self.model,
                t,
                range(t),
                lambda p, y0, y1: plate[p, y0:y1, :, :3].astype(np.float32),
                lambda p: alphas[p],
                emit,
                shaper=shaper,
                settings=settings,
                device=self.device,
            )
        return torch.from_numpy(result).to(frames.device) if is_torch else result
