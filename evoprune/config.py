"""Typed configuration: defaults (the embedded default run), YAML loading, overrides, validation."""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


def _f(default: Any, *, lo: float | None = None, hi: float | None = None,
       lo_open: bool = False, hi_open: bool = False, doc: str = "") -> Any:
    """A config field with an optional numeric range; `doc` feeds the README reference."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


CRITERIA = ("l1", "l2", "bn_scale", "taylor", "lamp", "fpgm", "random")


@dataclass
class DataConfig:
    name: Literal["digits"] = _f("digits", doc="dataset; `digits` ships with scikit-learn")
    val_fraction: float = _f(0.2, lo=0, hi=1, lo_open=True, hi_open=True,
                             doc="share of the data held out for validation (selection)")
    test_fraction: float = _f(0.2, lo=0, hi=1, lo_open=True, hi_open=True,
                              doc="share held out for the final test report only")


@dataclass
class ParentConfig:
    arch: Literal["simple_cnn", "resnet20"] = _f("simple_cnn", doc="parent architecture")
    width: int | None = _f(None, lo=4, doc="base channel width of the built-in architectures (null: standard)")
    weights: str | None = _f(None, doc="state_dict file to load instead of training")
    epochs: int = _f(40, lo=1, doc="training epochs when the parent is trained here")
    lr: float = _f(0.05, lo=0, lo_open=True, doc="parent training learning rate (SGD)")
    batch_size: int = _f(64, lo=1, doc="parent training batch size")


@dataclass
class SpaceConfig:
    min_keep: float = _f(0.1, lo=0, hi=1, lo_open=True, doc="floor: least share of a group's channels kept")
    min_channels: int = _f(2, lo=1, doc="floor: least channels kept in any group")
    round_to: int = _f(1, lo=1, doc="kept channel counts are multiples of this (or the full width)")


@dataclass
class PopulationConfig:
    criteria: list[str] = _f(list(CRITERIA), doc=f"torch-pruning importance criteria: {', '.join(CRITERIA)}")
    ratio_min: float = _f(0.1, lo=0, hi=1, hi_open=True, doc="least pruning ratio (share removed) drawn")
    ratio_max: float = _f(0.85, lo=0, hi=1, hi_open=True, doc="largest pruning ratio drawn")
    jitter: float = _f(0.1, lo=0, hi=0.5, doc="per-group spread around the drawn ratio")


@dataclass
class SearchConfig:
    mode: Literal["pareto", "scalar"] = _f("pareto", doc="`pareto`: NSGA-II; `scalar`: accuracy - lambda*size, tournament GA")
    population: int = _f(24, lo=2, doc="individuals kept each generation (mu)")
    offspring: int = _f(24, lo=1, doc="children made each generation (lambda)")
    generations: int = _f(12, lo=0, doc="generations after the initial population")
    max_evaluations: int = _f(0, lo=0, doc="stop after this many fitness evaluations (0: no limit)")
    size_metric: Literal["params", "macs"] = _f("params", doc="size objective")
    crossover: Literal["uniform", "one_point", "two_point"] = _f("uniform", doc="layer-swap crossover over groups")
    cx_prob: float = _f(0.7, lo=0, hi=1, doc="probability a child comes from crossover")
    mut_prob: float = _f(0.5, lo=0, hi=1, doc="probability a child is mutated")
    mut_groups: float = _f(0.25, lo=0, hi=1, lo_open=True, doc="share of groups a mutation touches")
    scalar_lambda: float = _f(0.3, lo=0, doc="size penalty in scalar mode")
    tournament_size: int = _f(3, lo=2, doc="tournament size in scalar mode")


@dataclass
class FitnessConfig:
    steps: int = _f(40, lo=0, doc="KD fine-tune steps per individual (0: no fine-tune)")
    batch_size: int = _f(64, lo=1, doc="fine-tune batch size")
    optimizer: Literal["sgd", "adam", "adamw"] = _f("sgd", doc="fine-tune optimiser")
    lr: float = _f(0.02, lo=0, lo_open=True, doc="fine-tune learning rate")
    momentum: float = _f(0.9, lo=0, hi=1, hi_open=True, doc="SGD momentum")
    weight_decay: float = _f(0.0, lo=0, doc="fine-tune weight decay")
    grad_clip: float = _f(0.0, lo=0, doc="clip the gradient norm at this value (0: no clipping)")
    temperature: float = _f(4.0, lo=0, lo_open=True, doc="KD softmax temperature")
    alpha: float = _f(0.9, lo=0, hi=1, doc="weight of the soft (teacher) term; 1 - alpha on the labels")
    finetune_samples: int = _f(1024, lo=1, doc="size of the fixed fine-tune subset of train")
    val_samples: int = _f(0, lo=0, doc="validation samples scored (0: the whole split)")
    device: Literal["cpu", "cuda", "auto"] = _f("cpu", doc="where fitness runs")


@dataclass
class Config:
    seed: int = _f(0, lo=0, doc="one seed for everything")
    data: DataConfig = field(default_factory=DataConfig)
    parent: ParentConfig = field(default_factory=ParentConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    population: PopulationConfig = field(default_factory=PopulationConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    fitness: FitnessConfig = field(default_factory=FitnessConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            type(None): "null"}.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`; returns the value in its typed form."""
    origin = typing.get_origin(tp)
    bad = ConfigError(key, f"expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        raise bad
    if origin is list:
        if not isinstance(value, list):
            raise bad
        return [_coerce(f"{key}[{i}]", v, typing.get_args(tp)[0]) for i, v in enumerate(value)]
    if tp is type(None):
        if value is not None:
            raise bad
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise bad


def _check_range(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    lo, hi = meta.get("lo"), meta.get("hi")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    too_low = lo is not None and (value <= lo if meta.get("lo_open") else value < lo)
    too_high = hi is not None and (value >= hi if meta.get("hi_open") else value > hi)
    if too_low or too_high:
        left = "(" if meta.get("lo_open") else "["
        right = ")" if meta.get("hi_open") else "]"
        span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ConfigError(key, f"expected a value in {span}, got {value!r}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(prefix or "config", f"expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in fields:
            key = f"{prefix}{name}"
            close = difflib.get_close_matches(str(name), list(fields), n=1, cutoff=0.5)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(key, f"unknown key{hint}; known keys: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key, tp = f"{prefix}{name}", hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw[name], key + ".")
        else:
            values[name] = _coerce(key, raw[name], tp)
            _check_range(key, values[name], f.metadata)
    return cls(**values)


def _check_cross_fields(cfg: Config) -> None:
    pop = cfg.population
    if pop.ratio_min > pop.ratio_max:
        raise ConfigError("population.ratio_min", f"expected <= population.ratio_max ({pop.ratio_max}), got {pop.ratio_min}")
    if not pop.criteria:
        raise ConfigError("population.criteria", "expected at least one criterion")
    for i, c in enumerate(pop.criteria):
        if c not in CRITERIA:
            raise ConfigError(f"population.criteria[{i}]", f"expected one of {', '.join(CRITERIA)}, got {c!r}")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 0.9:
        raise ConfigError("data.test_fraction", "expected data.val_fraction + data.test_fraction < 0.9")


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a plain mapping into a Config (missing keys take their defaults)."""
    cfg = _build(Config, raw if raw is not None else {}, "")
    _check_cross_fields(cfg)
    return cfg


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse `a.b=value` (value read as YAML) into (["a", "b"], value)."""
    if "=" not in item:
        raise ConfigError(item, "an override must look like key.sub=value")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `a.b=value` into a nested mapping (a copy)."""
    out = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(".".join(path), f"'{part}' is not a section")
        node[path[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config", f"file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("config", f"malformed YAML in {p}{where}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("config", f"expected a mapping at the top of {p}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config: the embedded default when `path` is None, then `a.b=value` overrides."""
    raw = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(raw, overrides or []))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from .atomic import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
