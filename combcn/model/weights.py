"""Weights files: one ``torch.save`` dict with the state_dict, the model config and provenance.

Layout (loadable with ``torch.load(..., weights_only=True)``)::

    {"format": "combcn-weights", "format_version": 1,
     "config": ModelConfig.to_dict(), "state_dict": {name: Tensor}, "provenance": {...}}

Tensors may be stored as float16 to halve the file; they are cast back to float32 on load.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from combcn.errors import ConfigError, ModelError
from combcn.model.config import ModelConfig
from combcn.model.inpainter import Inpainter, to_channels_last

log = logging.getLogger("combcn.model")

FORMAT = "combcn-weights"
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "combcn_default.pt"
DEFAULT_PROVENANCE = WEIGHTS_DIR / "PROVENANCE.json"


def save_weights(
    model: Inpainter, path: str | Path, *, provenance: dict[str, Any] | None = None, half: bool = False
) -> Path:
    """Write ``model`` to ``path`` atomically (temp file then rename).

    Args:
        model: the inpainter to save.
        path: destination ``.pt`` file.
        provenance: JSON-able facts about how the weights were made (clips, iterations, ...).
        half: store floating-point tensors as float16 (about half the size).
    """
    path = Path(path)
    state = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        if half and t.is_floating_point():
            t = t.half()
        state[name] = t
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": state,
        "provenance": dict(provenance or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; weights are shipped/shared files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_weights(path: str | Path) -> dict[str, Any]:
    """Read and check a weights file; raise :class:`ModelError` (naming the file) if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ModelError("weights file not found; pass an existing .pt file made by combcn train", path=path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        # torch's own text can run to dozens of lines; its first line says enough.
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")[:200]
        raise ModelError(
            f"not a readable combcn weights file ({type(exc).__name__}: {first})", path=path
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"not a combcn weights file (no format tag {FORMAT!r})", path=path)
    version = payload.get("format_version", -1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelError(f"not a combcn weights file (format version {version!r} is not a number)", path=path)
    if version > FORMAT_VERSION:
        raise ModelError(
            f"weights format version {payload.get('format_version')} is newer than this combcn supports "
            f"({FORMAT_VERSION}); upgrade combcn",
            path=path,
        )
    if not isinstance(payload.get("state_dict"), dict) or not isinstance(payload.get("config"), dict):
        raise ModelError("weights file lacks its state_dict or config", path=path)
    return payload


def build_from_weights(payload: dict[str, Any], *, path: str | Path | None = None) -> Inpainter:
    """Rebuild an :class:`Inpainter` from a payload of :func:`read_weights`; ModelError on mismatch."""
    try:
        cfg = ModelConfig.from_dict(payload["config"], where="weights config")
    except (ConfigError, TypeError, ValueError) as exc:
        raise ModelError(f"weights config is invalid: {exc}", path=path) from exc
    try:
        model = Inpainter(cfg)
    except (RuntimeError, MemoryError, ValueError) as exc:  # a config too large or odd to build
        raise ModelError(
            f"cannot build the model the weights config describes ({type(exc).__name__})", path=path
        ) from exc
    state = check_state_dict(payload["state_dict"], model.state_dict(), path=path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # check_state_dict should have caught it; keep torch's text to one line
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")[:200]
        raise ModelError(f"weights do not match the model they describe: {first}", path=path) from exc
    return model


def _names(names: list[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def check_state_dict(
    stored: dict[Any, Any], expected: dict[str, torch.Tensor], *, path: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """Check a stored state_dict against the model's own, tensor by tensor; return it as float32.

    Args:
        stored: ``{name: Tensor}`` read from a weights file.
        expected: ``model.state_dict()`` of the model the file's config describes.
        path: the file, for the message.

    Raises:
        ModelError: one line naming the file and the first thing that does not match: entries that
            are not tensors, missing or unexpected layers, a shape mismatch (by layer name), or
            NaN/Inf values.
    """
    bad = sorted(
        str(k) for k, v in stored.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    )
    if bad:
        raise ModelError(
            f"not a combcn weights file: state_dict entries {_names(bad)} are not tensors", path=path
        )
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} layer tensor(s) ({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) ({_names(unexpected)})")
        raise ModelError(
            "weights do not match the model their config describes: "
            + "; ".join(parts)
            + "; the file was not made by this combcn's train/finetune or was edited",
            path=path,
        )
    for name, want in expected.items():
        got = stored[name]
        if tuple(got.shape) != tuple(want.shape):
            raise ModelError(
                f"weights do not match the model their config describes: layer {name} has shape "
                f"{list(got.shape)}, the model needs {list(want.shape)}",
                path=path,
            )
    state: dict[str, torch.Tensor] = {}
    for name, tensor in stored.items():
        if tensor.is_floating_point():
            tensor = tensor.float()
            if not bool(torch.isfinite(tensor).all()):
                raise ModelError(
                    f"layer {name} holds NaN or Inf values; these weights are broken (a diverged "
                    "training run?): use another file",
                    path=path,
                )
        state[name] = tensor
    return state


def load_model(weights: str | Path | None = None, *, device: str | torch.device = "cpu") -> Inpainter:
    """Load an :class:`Inpainter` ready for inference (eval mode, channels-last weights).

    Args:
        weights: a ``.pt`` file from ``combcn train``/``finetune``; None = the shipped default
            (``combcn/weights/combcn_default.pt``) if present, else a randomly initialised model
            (logged as a warning: its fills are meaningless).
        device: where to put the model.

    Raises:
        ModelError: the file is missing, unreadable, not combcn weights, or does not match its config.
    """
    if weights is None and not DEFAULT_WEIGHTS.is_file():
        log.warning("no shipped weights in %s: using a RANDOMLY INITIALISED model (noise fills)", WEIGHTS_DIR)
        model = Inpainter(ModelConfig())
    else:
        path = DEFAULT_WEIGHTS if weights is None else Path(weights)
        model = build_from_weights(read_weights(path), path=path)
        log.info("loaded weights %s (%s)", path, model.config)
    to_channels_last(model)
    return model.to(device).eval()


def training_chain(provenance: dict[str, Any]) -> dict[str, Any] | None:
    """Totals over a run and the runs it started from (``train.init``, recorded as nested ``init``).

    Returns ``{"stages", "iterations", "wall_time_h"}`` summed over the chain, or None when the
    weights come from a single run. A stage whose numbers are missing counts as 0.
    """
    if not isinstance(provenance.get("init"), dict):
        return None
    stages, iterations, hours = 0, 0, 0.0
    node: Any = provenance
    while isinstance(node, dict):
        stages += 1
        iterations += int(node.get("iterations") or 0)
        hours += float(node.get("wall_time_h") or 0.0)
        node = node.get("init")
    return {"stages": stages, "iterations": iterations, "wall_time_h": round(hours, 3)}


def default_weights_info() -> dict[str, Any] | None:
    """Provenance of the shipped default weights (name, path, trained_on, config, iterations,
    wall_time_h, validation, code_version), or None if none are shipped. Reads only the JSON."""
    if not DEFAULT_WEIGHTS.is_file():
        return None
    info: dict[str, Any] = {}
    if DEFAULT_PROVENANCE.is_file():
        try:
            info = json.loads(DEFAULT_PROVENANCE.read_text())
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s: %s", DEFAULT_PROVENANCE, exc)
    chain = training_chain(info)
    if chain is not None:
        info["all_stages"] = chain
    info.setdefault("name", DEFAULT_WEIGHTS.stem)
    info["path"] = str(DEFAULT_WEIGHTS)
    return info
