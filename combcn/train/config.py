"""Training configuration: a YAML or TOML file with sections ``model``, ``data``, ``holes``, ``train``.

Unknown keys are errors (a typo must not silently train the wrong thing). A file may name another
with a top-level ``base: other.yaml`` (relative to its own folder): it starts from that file's keys
and states only what it changes, section by section. See ``configs/`` and ``docs/MODEL.md`` for
examples and defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from combcn.errors import ConfigError
from combcn.model.config import ModelConfig
from combcn.train.windows import HoleMix, check_encoding


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from and how windows are cut (paper §4-5)."""

    sources: tuple[str, ...] = ()
    licence: str = "any"  # "commercial": only clips whose manifest licence starts with Apache/MIT/BSD
    include: tuple[str, ...] = ()  # clip names to keep (empty = all)
    exclude: tuple[str, ...] = ()
    val_clips: tuple[str, ...] = ()  # explicit validation clips (else val_fraction of them, by clip)
    val_fraction: float = 0.15
    cache: str = "runs/cache"
    short_side: int = 192
    window: int = 32
    resolution: int = 128
    # per window, the weight of each encoding: srgb (the stored values, as integer plates are fed) or a
    # shaper (acescct, log) applied to the linearised window, as float plates are fed (docs/MODEL.md)
    encoding: dict[str, float] = field(default_factory=lambda: {"srgb": 1.0})
    exposure: float = 0.0  # a linearised window gets a random exposure in [-exposure, exposure] stops


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation schedule (paper §3) and run bookkeeping."""

    iterations: int = 100_000
    pretrain_3dcn: int = 20_000  # iterations of 3DCN-only pre-training before joint training (combined only)
    lr: float = 1e-3
    weight_decay: float = 0.01
    lr_schedule: str = "cosine"  # "cosine" (to 10 % at the end) or "constant"
    alpha: float = 1.0
    temporal: float = 0.0  # weight of the flicker term on CombCN's output (not in the paper; docs/MODEL.md)
    init: str = ""  # weights (.pt) to start from instead of random ones: continue a finished run
    batch: int = 1
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    precision: str = "auto"  # "auto" | "fp32" | "bf16"
    checkpoint_minutes: float = 5.0
    val_every: int = 200
    val_samples: int = 8
    log_every: int = 10
    snapshot_every: int = 0  # also keep weights every N iterations in snapshots/ (0 = off)
    max_minutes: float = 0.0  # stop (with a checkpoint) after this many minutes of this process; 0 = no limit
    out: str = "runs/train"


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    holes: HoleMix = field(default_factory=HoleMix)
    train: TrainSettings = field(default_factory=TrainSettings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "data": {
                k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.data).items()
            },
            "holes": dataclasses.asdict(self.holes),
            "train": dataclasses.asdict(self.train),
        }


def _build(cls: Any, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table of keys, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; "
            f"known keys in [{where}]: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        default = names[key].default
        if isinstance(default, tuple) or key in ("sources",):
            value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        elif isinstance(default, bool):
            pass
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        elif (
            default is not dataclasses.MISSING and not isinstance(value, type(default)) and key != "mean_rgb"
        ):
            raise ConfigError(f"{where}.{key}: expected {type(default).__name__}, got {value!r}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def parse_config(data: dict[str, Any], *, base_dir: Path | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from a mapping; relative ``data.sources`` resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError("the config file must be a table/mapping with sections model, data, holes, train")
    unknown = sorted(set(data) - {"model", "data", "holes", "train"})
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; known: model, data, holes, train")
    model = ModelConfig.from_dict(dict(data.get("model") or {}), where="model")
    dcfg: DataConfig = _build(DataConfig, data.get("data"), "data")
    if dcfg.licence not in ("any", "commercial"):
        raise ConfigError(f"data.licence must be 'any' or 'commercial', got {dcfg.licence!r}")
    if isinstance(dcfg.encoding, dict):  # YAML keys and whole-number weights as names and floats
        encoding = {
            str(k): float(v) if isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in dcfg.encoding.items()
        }
        dcfg = dataclasses.replace(dcfg, encoding=encoding)
    check_encoding(dcfg.encoding, dcfg.exposure)  # (also refuses an encoding that is not a table)
    if base_dir is not None:
        sources = tuple(str(p if Path(p).is_absolute() else (base_dir / p)) for p in dcfg.sources)
        dcfg = dataclasses.replace(dcfg, sources=sources)
    model = dataclasses.replace(model, window=dcfg.window, resolution=dcfg.resolution)
    holes: HoleMix = _build(HoleMix, data.get("holes"), "holes")
    train: TrainSettings = _build(TrainSettings, data.get("train"), "train")
    if train.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"train.precision must be auto, fp32 or bf16, got {train.precision!r}")
    if train.lr_schedule not in ("cosine", "constant"):
        raise ConfigError(f"train.lr_schedule must be cosine or constant, got {train.lr_schedule!r}")
    if train.iterations < 1 or train.batch < 1 or train.threads < 1:
        raise ConfigError("train.iterations, train.batch and train.threads must be >= 1")
    if train.temporal < 0 or train.alpha < 0 or train.lr < 0:
        raise ConfigError("train.lr, train.alpha and train.temporal must be >= 0")
    return TrainConfig(model=model, data=dcfg, holes=holes, train=train)


def _read_mapping(path: Path) -> dict[str, Any]:
    """Parse one YAML or TOML file into a mapping, without following ``base``."""
    if not path.is_file():
        raise ConfigError("config file not found", path=path)
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError("config must be .yaml, .yml or .toml", path=path)
    except ConfigError:
        raise
    except Exception as exc:  # yaml/toml parse errors carry line numbers in their message
        raise ConfigError(f"cannot parse config: {exc}", path=path) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            "the config file must be a table/mapping with sections model, data, holes, train", path=path
        )
    return data


def _check_names(data: dict[str, Any], path: Path) -> None:
    """Unknown sections and keys, reported against the file in a base chain that states them."""
    sections = {"model": ModelConfig, "data": DataConfig, "holes": HoleMix, "train": TrainSettings}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(
            f"unknown section(s) {', '.join(unknown)}; known: base, {', '.join(sections)}", path=path
        )
    for section, cls in sections.items():
        keys = data.get(section)
        if isinstance(keys, dict):
            names = {f.name for f in dataclasses.fields(cls)}
            wrong = sorted(set(keys) - names)
            if wrong:
                raise ConfigError(
                    f"unknown key(s) {', '.join(f'{section}.{k}' for k in wrong)}; "
                    f"known keys in [{section}]: {', '.join(sorted(names))}",
                    path=path,
                )


def _merge(base: dict[str, Any], child: dict[str, Any], path: Path) -> dict[str, Any]:
    """Child over base, key by key inside each section; a list or value in the child replaces the base's."""
    merged = dict(base)
    for section, keys in child.items():
        if keys is None:  # an empty section in the child changes nothing
            continue
        below = merged.get(section)
        if isinstance(keys, dict) and isinstance(below, dict):
            merged[section] = {**below, **keys}
        elif isinstance(keys, dict) or below is None:
            merged[section] = keys
        else:
            raise ConfigError(f"[{section}] must be a table of keys, got {type(keys).__name__}", path=path)
    return merged


def resolve_config(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping a config file means once its ``base`` chain is followed (base first, then each child).

    Args:
        path: a .yaml, .yml or .toml config; its ``base`` (if any) is relative to its folder.

    Returns:
        dict[str, dict[str, Any]]: sections model, data, holes, train as the merged file would state them.

    Raises:
        ConfigError: a file in the chain is missing or unparsable, or the chain loops; names the file.
    """
    path = Path(path)
    real = path.resolve()
    if real in _chain:
        loop = " -> ".join(p.name for p in (*_chain, real))
        raise ConfigError(f"config base chain loops ({loop}); remove one of the base: keys", path=path)
    data = _read_mapping(path)
    base = data.pop("base", None)
    _check_names(data, path)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"base must be the path of another config file, got {base!r}", path=path)
    base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigError(f"base config {base} not found (looked in {path.parent})", path=path)
    return _merge(resolve_config(base_path, (*_chain, real)), data, path)


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML (.yaml/.yml) or TOML (.toml) training config, following its ``base`` chain.

    Raises:
        ConfigError: naming the file that is wrong.
    """
    path = Path(path)
    data = resolve_config(path)
    try:
        return parse_config(data, base_dir=None)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=path) from exc
