"""The one place the server calls the inpainting engine.

``load_engine(weights, device)`` returns a callable ``fill(frames, matte, params) -> frames`` with
frames float32 [T, H, W, 3] (scene-linear RGB, top-down rows), matte float32 [T, H, W] (1 = remove),
result float32 [T, H, W, 3], composited (outside the matte = input). It uses
:class:`combcn.engine.Engine`, which keeps the model loaded. A window with reference frames is
filled with ``fill(frames, matte, params, references={index: float32 [H, W, 3]})``; the server passes
``references`` only then, so a custom factory without references still serves every other window.

``COMBCN_SERVE_ENGINE=package.module:factory`` (or ``combcn serve --engine``) plugs in another
factory with the same signature as :func:`load_engine` (custom engines; the tests use it for a slow
engine to kill the server mid-render).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from combcn.errors import BackendError, ConfigError
from combcn.serve.protocol import FillParams

log = logging.getLogger("combcn.serve.engine")

ENGINE_ENV = "COMBCN_SERVE_ENGINE"


class FillFn(Protocol):
    def __call__(
        self,
        frames: np.ndarray,
        matte: np.ndarray,
        params: FillParams,
        references: dict[int, np.ndarray] | None = None,
    ) -> np.ndarray: ...


EngineFactory = Callable[[str | None, str | None], FillFn]


def _options(params: FillParams, references: dict[int, np.ndarray] | None) -> dict[str, Any]:
    options: dict[str, Any] = {"expand": params.expand, "feather": params.feather, "shaper": params.shaper}
    if references:
        options.update(references=references, reference_wins=params.reference_wins)
    return options


def load_engine(weights: str | None, device: str | None) -> FillFn:
    """A loaded engine for ``weights`` (None = shipped default) on ``device`` (None = auto).

    Raises:
        BackendError: this combcn install has no sequence engine.
        ModelError: the weights cannot be loaded (raised by the engine).
    """
    try:
        from combcn.engine import Engine
    except ImportError as exc:
        raise BackendError(
            f"this combcn install has no sequence engine (combcn.engine: {exc}); reinstall combcn"
        ) from exc
    from combcn.engine.engine import set_track

    engine = Engine(weights=weights, device=device)
    config = getattr(engine.model, "config", None)

    def fill(
        frames: np.ndarray,
        matte: np.ndarray,
        params: FillParams,
        references: dict[int, np.ndarray] | None = None,
    ) -> np.ndarray:
        # the server serialises engine calls, so switching the shared model for one call is safe
        if not params.track:
            set_track(engine.model, False)
        try:
            options = _options(params, references)
            return np.asarray(engine.inpaint(frames, matte, **options), dtype=np.float32)
        finally:
            if config is not None:
                setattr(engine.model, "config", config)  # noqa: B010 (nn.Module typing)

    return fill


def resolve_factory(spec: str | None) -> EngineFactory:
    """The engine factory named by ``module:callable`` (or the default :func:`load_engine`)."""
    if not spec:
        return load_engine
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"engine must be given as 'package.module:factory', got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import the engine factory {spec!r}: {exc}") from exc
    if not callable(factory):
        raise ConfigError(f"engine factory {spec!r} is not callable")
    log.info("using engine factory %s", spec)
    return factory  # type: ignore[no-any-return]
