"""The model's configuration: widths, conv type, variant (paper §2, Table 1)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from combcn.errors import ConfigError

Conv = Literal["plain", "masked"]
Variant = Literal["combined", "3dcn", "2dcn"]
NormStats = Literal["window", "running"]
Prefill = Literal["mean", "smooth", "plate"]

#: Mean RGB of the commercially usable training clips in [0, 1] (measured on the frame cache);
#: holes are pre-filled with it (paper §1). Stored in every weights file, so this is only the default.
DEFAULT_MEAN_RGB: tuple[float, float, float] = (0.45, 0.44, 0.41)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; saved inside every weights file.

    Attributes:
        width: channel multiplier over the paper's Table 1 widths (1.0 = paper).
        conv: ``"plain"`` (paper-exact: the matte is an input channel of every 3DCN layer's input) or
            ``"masked"`` (3DCN encoder layers use :func:`combcn.ops.masked_conv3d`, partial convolution).
        variant: ``"combined"`` (3DCN + CombCN, the paper's model), ``"3dcn"`` (3DCN alone, output
            upsampled) or ``"2dcn"`` (CombCN without guidance, per frame; the paper's 2DCN baseline).
        window: frames per window the model was trained on (paper: F = 32).
        resolution: working size in pixels the model was trained on (paper: 128).
        r: downsampling factor of the 3DCN input (paper: 2; only 2 is implemented).
        mean_rgb: hole pre-fill value in [0, 1] (paper §1: "mean pixel value of the training set").
        norm_stats: what BatchNorm uses at inference: ``"window"`` (the window's own statistics, as in
            training; measured much better) or ``"running"`` (the usual running averages).
        prefill: ``"mean"`` (paper §1: holes start as ``mean_rgb``; the networks' outputs are the fill),
            ``"smooth"`` (holes start as a space-time push-pull interpolation,
            :func:`combcn.model.prefill.pushpull_fill`) or ``"plate"`` (holes start as the window's clean
            plate, :func:`combcn.model.prefill.cleanplate_fill`); with ``smooth`` and ``plate`` each
            network's output is a correction added to its pre-fill (docs/MODEL.md).
        seen: give CombCN a fifth input channel, :func:`combcn.model.inpainter.seen_in_window`: 1 at
            hole pixels that are known in another frame of the window (there the clean plate shows the
            real background), 0 elsewhere (never-known hole pixels, where the plate is a guess, and
            known pixels). Not in the paper; docs/MODEL.md, "Seen".
        keep_seen: with ``prefill="plate"``: hole pixels that another frame of the window shows keep
            their clean-plate value (the median of what the window shows there) in the output, and the
            networks fill only the pixels no frame shows. Not in the paper; docs/MODEL.md, "Seen".
        track: with ``prefill="plate"``: track the camera through the window and build the clean
            plate in one frame's coordinates (:func:`combcn.model.track.tracked_plate_fill`), so a
            panning or hand-held shot gets the background that moves with it; ``seen`` and
            ``keep_seen`` then mean "shown by another frame after the track". A locked-off window
            gets the untracked plate, bit for bit. Inference-side: it changes no weight, so weights
            trained without it can use it. Not in the paper; docs/MODEL.md, "Tracked plate".
        plate: a third network, CombCN at plate resolution (:class:`combcn.model.plate.PlateCombCN`,
            the ``plate`` attribute of the model), guided by this model's fill at the working size;
            the engine runs it over the pixels no frame shows (docs/MODEL.md, "CombCN at plate
            resolution"). Needs ``variant="combined"``.
    """

    width: float = 1.0
    conv: Conv = "plain"
    variant: Variant = "combined"
    window: int = 32
    resolution: int = 128
    r: int = 2
    mean_rgb: tuple[float, float, float] = field(default=DEFAULT_MEAN_RGB)
    norm_stats: NormStats = "window"
    prefill: Prefill = "mean"
    seen: bool = False
    keep_seen: bool = False
    track: bool = False
    plate: bool = False

    def __post_init__(self) -> None:
        if not (0.0 < float(self.width) <= 4.0):
            raise ConfigError(f"model width must be in (0, 4], got {self.width!r}")
        if self.conv not in ("plain", "masked"):
            raise ConfigError(f"model conv must be 'plain' or 'masked', got {self.conv!r}")
        if self.variant not in ("combined", "3dcn", "2dcn"):
            raise ConfigError(f"model variant must be 'combined', '3dcn' or '2dcn', got {self.variant!r}")
        if self.norm_stats not in ("window", "running"):
            raise ConfigError(f"model norm_stats must be 'window' or 'running', got {self.norm_stats!r}")
        if self.prefill not in ("mean", "smooth", "plate"):
            raise ConfigError(f"model prefill must be 'mean', 'smooth' or 'plate', got {self.prefill!r}")
        for name in ("seen", "keep_seen", "track", "plate"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"model {name} must be true or false, got {getattr(self, name)!r}")
        if self.plate and self.variant != "combined":
            raise ConfigError(f"model plate needs variant 'combined' (it is guided), got {self.variant!r}")
        if self.keep_seen and self.prefill != "plate":
            raise ConfigError(
                f"model keep_seen needs prefill 'plate' (the clean plate), got {self.prefill!r}"
            )
        if self.track and self.prefill != "plate":
            raise ConfigError(
                f"model track needs prefill 'plate' (it tracks the clean plate), got {self.prefill!r}"
            )
        if self.r != 2:
            raise ConfigError(f"only r = 2 is implemented (paper §1), got r = {self.r!r}")
        if int(self.window) < 1 or int(self.resolution) < 8 or int(self.resolution) % 8:
            raise ConfigError(
                "window must be >= 1 and resolution a multiple of 8, "
                f"got {self.window!r}, {self.resolution!r}"
            )
        if len(tuple(self.mean_rgb)) != 3:
            raise ConfigError(f"mean_rgb must have 3 values, got {self.mean_rgb!r}")
        object.__setattr__(self, "mean_rgb", tuple(float(v) for v in self.mean_rgb))

    def ch(self, paper_channels: int) -> int:
        """Channels of a layer that has ``paper_channels`` in Table 1, scaled by ``width`` (at least 4)."""
        return max(4, int(round(paper_channels * self.width)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean_rgb"] = list(self.mean_rgb)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "model config") -> ModelConfig:
        """Build from a mapping; unknown keys raise :class:`ConfigError` naming the key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(sorted(names))}"
            )
        kwargs = dict(data)
        if "mean_rgb" in kwargs:
            kwargs["mean_rgb"] = tuple(kwargs["mean_rgb"])
        return cls(**kwargs)

    @classmethod
    def paper(cls) -> ModelConfig:
        """The paper's exact configuration (Table 1 widths, plain convs, combined model)."""
        return cls()
