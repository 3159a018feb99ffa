"""The network of Wang et al. (AAAI 2019): 3DCN + CombCN, its config, and weights files.

Public API (the contract with the engine):

- :func:`load_model` -> :class:`Inpainter` (``window``, ``resolution``, ``forward(frames, hole)``)
- :func:`default_weights_info` -> provenance dict of the shipped weights, or None
- :class:`ModelConfig`, :func:`save_weights`, :func:`read_weights`, :func:`build_from_weights`
"""

from __future__ import annotations

from combcn.model.config import ModelConfig
from combcn.model.inpainter import Inpainter, Prediction, downsample, downsample_hole, to_channels_last
from combcn.model.networks import CombCN, ThreeDCN
from combcn.model.weights import (
    DEFAULT_PROVENANCE,
    DEFAULT_WEIGHTS,
    build_from_weights,
    default_weights_info,
    load_model,
    read_weights,
    save_weights,
)

__all__ = [
    "DEFAULT_PROVENANCE",
    "DEFAULT_WEIGHTS",
    "CombCN",
    "Inpainter",
    "ModelConfig",
    "Prediction",
    "ThreeDCN",
    "build_from_weights",
    "default_weights_info",
    "downsample",
    "downsample_hole",
    "load_model",
    "read_weights",
    "save_weights",
    "to_channels_last",
]
