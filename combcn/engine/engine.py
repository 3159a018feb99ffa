"""The :class:`Engine`: a loaded model that inpaints arrays (the API and the OpenFX server use it)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from combcn.engine.core import References, RenderSettings, composite, render_windows
from combcn.engine.guards import FillGuard
from combcn.engine.matte import MatteOptions, shape_matte
from combcn.engine.propagate import propagation_settings
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
    """Pop the window keywords (overlap, margin, context, probe) out of ``options``."""
    context = options.pop("context", None)
    overlap = options.pop("overlap", None)
    settings = RenderSettings(
        overlap=None if overlap is None else int(overlap),
        margin=float(options.pop("margin", 0.5)),
        context=None if context is None else int(context),
        probe=bool(options.pop("probe", True)),
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


def _as_array(value: Any, name: str) -> np.ndarray:
    """A numpy view of an API argument (numpy array, torch tensor or nested lists), or InputError."""
    if isinstance(value, torch.Tensor):
        if value.dtype in (torch.bfloat16, torch.complex64, torch.complex128) or not (
            value.dtype.is_floating_point
            or value.dtype in (torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool)
        ):
            raise InputError(
                f"{name} is a {value.dtype} tensor; give float32 or float16 (convert with .float())"
            )
        return np.asarray(value.detach().cpu().numpy())
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} is not an array ({exc})") from None


def _references(given: Any, wins: Any, plate: np.ndarray, alphas: list[np.ndarray]) -> References | None:
    """The ``references`` option of :meth:`Engine.inpaint`: {frame index: the frame with its hole
    filled, ndarray | Tensor [H, W, C >= 3]}; only RGB inside that frame's (shaped) matte is used.

    Raises:
        InputError: an index outside the frames, another size, NaN/Inf inside the hole.
        ConfigError: not a mapping, or ``reference_wins`` not a bool.
    """
    if not isinstance(wins, bool | np.bool_):
        raise ConfigError(f"reference_wins must be True or False, got {wins!r}")
    if given is None or (isinstance(given, dict) and not given):
        return None
    if not isinstance(given, dict):
        raise ConfigError(
            f"references must be a dict {{frame index: frame array}}, got {type(given).__name__}"
        )
    t, h, w = plate.shape[:3]
    arrays: dict[int, np.ndarray] = {}
    for index, value in given.items():
        if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < t:
            raise InputError(
                f"reference frame index {index!r} is not a frame of the {t} given (0 to {t - 1}); "
                "key each reference by its frame index"
            )
        ref = _as_array(value, f"references[{index}]")
        if ref.ndim != 3 or ref.shape[:2] != (h, w) or ref.shape[2] < 3:
            raise InputError(
                f"the reference is {ref.shape}, the frames are {h}x{w}: "
                f"give (H, W, C >= 3) = ({h}, {w}, ...)",
                frame=int(index),
            )
        if not np.issubdtype(ref.dtype, np.floating):
            raise InputError(f"the reference is {ref.dtype}; give float32 or float16", frame=int(index))
        rgb = ref[..., :3].astype(np.float32)
        if not np.isfinite(rgb[alphas[int(index)] > 0]).all():
            raise InputError("the reference has NaN or Inf inside the hole; fix it first", frame=int(index))
        arrays[int(index)] = rgb
    return References(
        tuple(sorted(arrays)),
        lambda p, b: arrays[p][b[0] : b[1], b[2] : b[3]].copy(),
        bool(wins),
    )


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
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"--threads must be a whole number >= 1, got {threads!r}")
        #: CPU threads for torch and OpenImageIO during a call (None = leave the process's setting)
        self.threads = threads
        if model is None:
            from combcn.model import load_model

            model = load_model(weights, device=self.device)
        if track is not None:
            set_track(model, track)
        self.model = model.to(self.device).eval()

    @contextlib.contextmanager
    def threads_for_call(self) -> Iterator[None]:
        """Within the block: this engine's thread count, and on CUDA deterministic cuDNN (the same
        window gives the same bits, so chunked farm renders equal single ones); restored afterwards."""
        import cv2
        import OpenImageIO as oiio

        threads = torch.get_num_threads()
        oiio_threads = oiio.get_int_attribute("threads")
        cv2_threads = cv2.getNumThreads()
        deterministic = torch.backends.cudnn.deterministic
        benchmark = torch.backends.cudnn.benchmark
        try:
            if self.threads is not None:
                torch.set_num_threads(self.threads)
                oiio.attribute("threads", self.threads)
                cv2.setNumThreads(self.threads)  # propagation's flow and sampling
            if self.device.type == "cuda":
                torch.backends.cudnn.deterministic = True
                torch.backends.cudnn.benchmark = False
            yield
        finally:
            torch.set_num_threads(threads)
            oiio.attribute("threads", oiio_threads)
            cv2.setNumThreads(cv2_threads)
            torch.backends.cudnn.deterministic = deterministic
            torch.backends.cudnn.benchmark = benchmark

    @property
    def window(self) -> int:
        """Frames per temporal window of the model."""
        return int(getattr(self.model, "window", 32))

    @property
    def resolution(self) -> int:
        """The model's working size in pixels."""
        return int(getattr(self.model, "resolution", 128))

    def inpaint(self, frames: Any, matte: Any, **options: Any) -> Any:
        """Inpaint frames held in memory (:meth:`inpaint_with_report`, without the report)."""
        return self.inpaint_with_report(frames, matte, **options)[0]

    def inpaint_with_report(self, frames: Any, matte: Any, **options: Any) -> tuple[Any, dict[int, float]]:
        """Inpaint frames held in memory, and say how good the fill of what no frame shows should be.

        Args:
            frames (ndarray | Tensor [T, H, W, C], float32 or float16): channels 0-2 are RGB; other
                channels are returned untouched.
            matte (ndarray | Tensor [T, H, W]): numbers in [0, 1], 1 = remove; or booleans,
                True = remove.
            **options: ``shaper`` (default acescct), ``threshold`` (0.5), ``invert``, ``expand`` (px),
                ``feather`` (px), ``overlap`` (frames, window/4), ``margin`` (0.5), ``propagate``
                (True: carry what other frames show at full resolution first), ``reach`` (0 frames),
                ``probe`` (True: score the network and Telea on holes of the matte's shape cut into
                known pixels, fill what no frame shows with the better, log its expected error),
                ``references`` ({frame index: that frame with its hole filled, [H, W, C >= 3]}: carried
                along the motion to the other frames, ahead of synthesis; only its RGB inside that
                frame's matte is used), ``reference_wins`` (False: a frame that shows the point itself,
                nearer in time than the reference, wins; True: the reference wins wherever it reaches).

        Returns:
            (the frames: same type, dtype and shape as ``frames``; where the (feathered) matte is 0 the
            values are bit-exact copies of the input; per frame index whose fill synthesised pixels
            and could measure them: the expected hole MAE of those pixels, 0-255 of the working
            range, from the probe holes (``probe`` option)).

        Raises:
            InputError: bad shapes or types, NaN/Inf in RGB, a frame entirely under the matte.
        """
        is_torch = isinstance(frames, torch.Tensor)
        plate = _as_array(frames, "frames")
        raw_matte = _as_array(matte, "matte")
        if plate.ndim != 4 or plate.shape[-1] < 3 or 0 in plate.shape:
            raise InputError(
                f"frames must be (T, H, W, C) with T, H, W >= 1 and C >= 3, got shape {plate.shape}"
            )
        if plate.dtype not in (np.float32, np.float16):
            raise InputError(f"frames must be float32 or float16, got {plate.dtype}")
        if raw_matte.shape != plate.shape[:3]:
            raise InputError(f"matte must be (T, H, W) = {plate.shape[:3]}, got {raw_matte.shape}")
        if raw_matte.dtype == np.bool_:
            raw_matte = raw_matte.astype(np.float32)  # True = remove, as every library reads it
        if not np.issubdtype(raw_matte.dtype, np.number) or np.issubdtype(
            raw_matte.dtype, np.complexfloating
        ):
            raise InputError(f"matte must hold real numbers in [0, 1] or booleans, got {raw_matte.dtype}")
        if not np.isfinite(raw_matte).all():
            raise InputError("matte has NaN or Inf values; it must hold numbers in [0, 1]")
        opts = dict(options)
        shaper = get_shaper(opts.pop("shaper", None) or default_shaper_for(plate.dtype))
        m_opts = matte_options(opts)
        settings = render_settings(opts)
        propagation = propagation_settings(opts)
        given_references, reference_wins = opts.pop("references", None), opts.pop("reference_wins", False)
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
        references = _references(given_references, reference_wins, plate, alphas)
        result = plate.copy()
        expected: dict[int, float] = {}
        if not any(a.max() > 0 for a in alphas):
            log.warning("the matte is empty: returning the frames unchanged")
        else:
            guard = FillGuard()

            def emit(position: int, fill: Any) -> None:
                fill = guard.check(
                    plate[position, :, :, :3].astype(np.float32), fill, path=None, frame=position
                )
                result[position, :, :, :3] = composite(plate[position, :, :, :3], fill)
                if fill.expected_error is not None:
                    expected[position] = fill.expected_error

            with self.threads_for_call():
                render_windows(
                    self.model,
                    t,
                    range(t),
                    lambda p, b: plate[p, b[0] : b[1], b[2] : b[3], :3].astype(np.float32),
                    lambda p: alphas[p],
                    emit,
                    shaper=shaper,
                    settings=settings,
                    device=self.device,
                    propagation=propagation,
                    references=references,
                )
            if guard.pixels:
                log.warning("%s", guard.warning())
        return (torch.from_numpy(result).to(frames.device) if is_torch else result), expected
