"""Typed configuration: defaults (the embedded default run), YAML loading, overrides, validation."""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from evoprune.config.vocab import CRITERIA, CROSSOVERS, KD_LOSSES


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""

    def __init__(self, key: str, message: str):
        key = key if key.isprintable() else short(key)  # a key from user input may hold newlines
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


INT_MAX = 2**31 - 1  # every integer setting is capped here (seeds and sizes reach numpy/torch)

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlist = _repr.maxdict = _repr.maxtuple = _repr.maxset = 4
_repr.maxlevel = 2


def short(value: Any) -> str:
    """A bounded, one-line repr for messages (safe on huge, deep or self-referencing values)."""
    try:
        text = _repr.repr(value)
    except Exception:  # an exotic value whose repr fails must not hide the real error
        text = f"<{type(value).__name__}>"
    return " ".join(text.split())


def _f(default: Any, *, lo: float | None = None, hi: float | None = None,
       lo_open: bool = False, hi_open: bool = False, doc: str = "") -> Any:
    """A config field with an optional numeric range; `doc` feeds the README reference."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)




@dataclass
class DataConfig:
    name: Literal["digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder"] = _f(
        "digits", doc="dataset: `digits` (ships with scikit-learn), torchvision `cifar10`, `cifar100`, `mnist`, "
                      "`fashion_mnist`, or `imagefolder` (class subfolders under data.root)")
    root: str | None = _f(None, doc="dataset directory (null: ./data for the torchvision datasets; "
                                    "required for imagefolder)")
    download: bool = _f(True, doc="download a missing torchvision dataset into data.root")
    image_size: int | None = _f(None, lo=1, doc="resize images to this square size (null: native size)")
    augment: Literal["auto", "none", "crop", "flip", "crop_flip"] = _f(
        "auto", doc="parent-training augmentation: random crop with padding and/or horizontal flip "
                    "(`auto`: none for digits, crop for mnist, crop_flip otherwise)")
    max_train_samples: int = _f(0, lo=0, doc="cap on the training split, a stratified seeded subset (0: all)")
    max_eval_samples: int = _f(0, lo=0, doc="cap on the validation and on the test split each (0: all)")
    val_fraction: float = _f(0.2, lo=0.01, hi=1, hi_open=True,
                             doc="share of the data held out for validation (selection)")
    test_fraction: float = _f(0.2, lo=0.01, hi=1, hi_open=True,
                              doc="share held out for the final test report only")
    split_seed: int | None = _f(None, lo=0, hi=INT_MAX, doc="seed of the train/val/test split and caps (null: the "
                                                           "run's seed); share it with a parent trained elsewhere")


@dataclass
class ParentConfig:
    arch: str = _f("simple_cnn", doc="parent architecture: built in (simple_cnn, resnet20/32/44/56/110) or any "
                                     "torchvision classification model name")
    width: int | None = _f(None, lo=4, doc="base channel width of the built-in architectures (null: standard)")
    pretrained: Literal["none", "imagenet"] = _f("none", doc="start a torchvision parent from its ImageNet weights")
    weights: str | None = _f(None, doc="state_dict file to load instead of training")
    trust_split: bool = _f(False, doc="parent.weights without evoprune's parent.json beside it: you state that this "
                                      "parent never saw this run's validation or test images")
    frozen_epochs: int | None = _f(None, lo=0, doc="epochs training only the new head, backbone frozen, before "
                                                   "the full fine-tune (null: 3 if pretrained, else 0)")
    epochs: int = _f(40, lo=1, doc="most training epochs when the parent is trained here (cosine schedule over them)")
    patience: int = _f(5, lo=0, doc="stop training when validation accuracy has not improved for this many "
                                    "epochs, keeping the best epoch's weights (0: train all epochs)")
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
    ratio_max: float = _f(0.95, lo=0, hi=1, hi_open=True, doc="largest pruning ratio drawn")
    jitter: float = _f(0.1, lo=0, hi=0.5, doc="per-group spread around the drawn ratio")


@dataclass
class SearchConfig:
    mode: Literal["pareto", "scalar"] = _f("pareto", doc="`pareto`: NSGA-II; `scalar`: accuracy - lambda*size, tournament GA")
    population: int = _f(16, lo=2, doc="individuals kept each generation (mu)")
    offspring: int = _f(16, lo=1, doc="children made each generation (lambda)")
    generations: int = _f(12, lo=0, doc="generations after the initial population")
    max_evaluations: int = _f(0, lo=0, doc="stop after this many fitness evaluations (0: no limit)")
    patience: int = _f(2, lo=0, doc="stop early when the last this many generations together raised the hypervolume "
                                    "(pareto) or the best scalar fitness (scalar) by less than search.min_gain "
                                    "(0: never)")
    min_gain: float = _f(0.002, lo=0, doc="least gain over search.patience generations that keeps the search going")
    size_metric: Literal["params", "macs"] = _f("params", doc="size objective")
    crossover: Literal[CROSSOVERS] = _f("uniform", doc="layer-swap crossover over groups")
    cx_prob: float = _f(0.7, lo=0, hi=1, doc="probability a child comes from crossover")
    mut_prob: float = _f(0.5, lo=0, hi=1, doc="probability a child is mutated")
    mut_groups: float = _f(0.25, lo=0, hi=1, lo_open=True, doc="share of groups a mutation touches")
    scalar_lambda: float = _f(0.3, lo=0, doc="size penalty in scalar mode")
    tournament_size: int = _f(3, lo=2, doc="tournament size in scalar mode")


@dataclass
class FitnessConfig:
    steps: int = _f(20, lo=0, doc="KD fine-tune steps per individual (0: no fine-tune)")
    batch_size: int = _f(64, lo=1, doc="fine-tune batch size")
    optimizer: Literal["sgd", "adam", "adamw"] = _f("sgd", doc="fine-tune optimiser")
    lr: float = _f(0.02, lo=0, lo_open=True, doc="fine-tune learning rate")
    momentum: float = _f(0.9, lo=0, hi=1, hi_open=True, doc="SGD momentum")
    weight_decay: float = _f(0.0, lo=0, doc="fine-tune weight decay")
    grad_clip: float = _f(0.0, lo=0, doc="clip the gradient norm at this value (0: no clipping)")
    adaptive_bn: int = _f(10, lo=0, doc="recalibrate BatchNorm statistics on this many train batches before "
                                         "scoring (EagleEye); with steps=0 a cheap pre-screen")
    temperature: float = _f(4.0, lo=0, lo_open=True, doc="KD softmax temperature")
    alpha: float = _f(0.9, lo=0, hi=1, doc="weight of the soft (teacher) term; 1 - alpha on the labels")
    kd: Literal[KD_LOSSES] = _f("hinton", doc="KD loss: `hinton`, logit `mse` / `smooth_l1`, `feature` (FitNets, "
                                              "1x1 adapters), `attention` (attention transfer); batched: logit losses only")
    beta: float | None = _f(None, lo=0, doc="weight of the feature / attention term (null: 1 for feature, 1000 for "
                                             "attention, the papers' values)")
    feature_layers: list[str] = _f([], doc="module names whose outputs `feature` / `attention` match (empty: the "
                                          "last block of each of the last three resolutions)")
    finetune_samples: int = _f(1024, lo=1, doc="size of the fixed fine-tune subset of train")
    val_samples: int = _f(0, lo=0, doc="validation samples scored (0: the whole split)")
    device: Literal["cpu", "cuda", "auto"] = _f("auto", doc="where fitness runs (`auto`: CUDA when available)")
    precision: Literal["fp32", "bf16", "fp16"] = _f("fp32", doc="fine-tune autocast precision (fp16 uses a grad scaler on CUDA)")
    channels_last: bool | Literal["auto"] = _f(
        "auto", doc="channels_last memory format for the fine-tune and scoring; `auto`: off (on CPUs torch 2.14.1 "
                    "corrupts memory in it, on GPUs it is unmeasured); `true` on a CPU first runs a crash probe in a "
                    "child process and refuses a torch that fails it")


@dataclass
class EvaluatorConfig:
    kind: Literal["auto", "batched", "sequential"] = _f(
        "auto", doc="`sequential`: each subnet in its pruned shape; `batched`: the population at once, masked "
                    "(vmap); `auto`: batched on CUDA where it is proven exact, sequential on a CPU")
    chunk: int = _f(0, lo=0, doc="individuals per batched step (0: the whole population); halved on CUDA OOM")
    threads: int = _f(0, lo=0, hi=256, doc="sequential: individuals fine-tuned at once on a CPU, one torch thread "
                                          "each (0: one per CPU core plus one on CPU, 1 on CUDA)")
    pool: Literal["auto", "processes", "threads"] = _f(
        "auto", doc="sequential on a CPU: run those individuals in forked `processes` (free of the GIL) or in "
                    "`threads`; `auto`: processes on Linux, threads elsewhere")
    backend: Literal["local", "ray"] = _f(
        "local", doc="`local`: this process; `ray`: Ray actors, on one machine or a cluster (pip install evoprune[ray])")
    address: str | None = _f(None, doc="ray: cluster to join (`auto` or an address; null: start a local Ray instance)")
    workers: int = _f(0, lo=0, hi=4096, doc="ray: number of worker actors (0: one per CPU, or per GPU share when "
                                            "gpus_per_worker > 0)")
    gpus_per_worker: float = _f(0.0, lo=0, hi=64, doc="ray: GPUs per worker, fractional packs several on one GPU "
                                                      "(0.25: four per GPU); 0: CPU workers")


@dataclass
class DistillConfig:
    """The final, long KD fine-tune of a chosen front member (`evoprune distill`)."""

    epochs: int = _f(15, lo=1, doc="epochs over the train split")
    lr: float = _f(0.05, lo=0, lo_open=True, doc="initial learning rate (SGD, Nesterov momentum 0.9, cosine schedule)")
    batch_size: int = _f(64, lo=1, doc="batch size")
    weight_decay: float = _f(5e-4, lo=0, doc="weight decay")
    kd: Literal[KD_LOSSES] = _f("hinton", doc="KD loss (as `fitness.kd`)")
    temperature: float = _f(4.0, lo=0, lo_open=True, doc="KD softmax temperature")
    alpha: float = _f(0.9, lo=0, hi=1, doc="weight of the soft (teacher) term; 1 - alpha on the labels")
    beta: float | None = _f(None, lo=0, doc="weight of the feature / attention term (null: as `fitness.beta`)")
    feature_layers: list[str] = _f([], doc="layers for `feature` / `attention` (empty: as `fitness.feature_layers`)")
    dml: bool = _f(False, doc="deep mutual learning: a second student trains alongside, each also learning from the other")
    augment: Literal["auto", "none", "crop", "flip", "crop_flip"] = _f(
        "auto", doc="train-time augmentation: random crop (padding 1/8 of the side) and/or horizontal flip; "
                    "`auto`: none below 16 px, else as `data.augment` (crop for mnist, crop_flip for natural images)")


@dataclass
class Config:
    seed: int = _f(0, lo=0, hi=INT_MAX, doc="one seed for everything")
    data: DataConfig = field(default_factory=DataConfig)
    parent: ParentConfig = field(default_factory=ParentConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    population: PopulationConfig = field(default_factory=PopulationConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    fitness: FitnessConfig = field(default_factory=FitnessConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

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


_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`; returns the value in its typed form."""
    origin = typing.get_origin(tp)
    bad = ConfigError(key, f"expected {_describe(tp)}, got {short(value)}")
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
        if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
            value = float(value)  # YAML 1.1 reads `1e-3` (no dot) as a string; it is meant as a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        try:
            value = float(value)
        except OverflowError:  # an integer too large for a float
            raise ConfigError(key, f"expected a finite number, got {short(value)}") from None
        if not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise bad


def _check_range(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    lo, hi = meta.get("lo"), meta.get("hi")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if isinstance(value, int):
        if value > INT_MAX or value < -INT_MAX:
            raise ConfigError(key, f"expected an integer between -{INT_MAX} and {INT_MAX}, got {short(value)}")
    too_low = lo is not None and (value <= lo if meta.get("lo_open") else value < lo)
    too_high = hi is not None and (value >= hi if meta.get("hi_open") else value > hi)
    if too_low and hi is None:
        raise ConfigError(key, f"expected a value {'>' if meta.get('lo_open') else '>='} {lo}, got {short(value)}")
    if too_low or too_high:
        left = "(" if meta.get("lo_open") else "["
        right = ")" if meta.get("hi_open") else "]"
        span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ConfigError(key, f"expected a value in {span}, got {short(value)}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(prefix.rstrip(".") or "config", f"expected a mapping, got {short(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in fields:
            key = f"{prefix}{name}" if isinstance(name, str) else f"{prefix}{short(name)}"
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
        raise ConfigError("population.ratio_min",
                          f"expected <= population.ratio_max ({pop.ratio_max}), got {pop.ratio_min}")
    if not pop.criteria:
        raise ConfigError("population.criteria", "expected at least one criterion")
    for i, c in enumerate(pop.criteria):
        if c not in CRITERIA:
            raise ConfigError(f"population.criteria[{i}]", f"expected one of {', '.join(CRITERIA)}, got {short(c)}")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 0.9:
        raise ConfigError("data.test_fraction", "expected data.val_fraction + data.test_fraction < 0.9")
    _check_parent_and_data(cfg)


def _check_parent_and_data(cfg: Config) -> None:
    """parent.arch against the known names (with a suggestion); settings that only fit some archs."""
    from evoprune.config.archs import BUILTIN_ARCHS, arch_problem

    problem = arch_problem(cfg.parent.arch)
    if problem:
        raise ConfigError("parent.arch", problem)
    builtin = cfg.parent.arch in BUILTIN_ARCHS
    if builtin and cfg.parent.pretrained != "none":
        raise ConfigError("parent.pretrained", f"ImageNet weights exist for torchvision architectures only, "
                                               f"not for {cfg.parent.arch}; use none")
    if not builtin and cfg.parent.width is not None:
        raise ConfigError("parent.width", f"applies to the built-in architectures only, not to {cfg.parent.arch}; "
                                          f"use null")
    if cfg.data.name == "imagefolder" and not cfg.data.root:
        raise ConfigError("data.root", "required for data.name=imagefolder (a directory of class subfolders)")


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a plain mapping into a Config (missing keys take their defaults)."""
    try:
        cfg = _build(Config, raw if raw is not None else {}, "")
    except RecursionError:  # a self-referencing YAML structure
        raise ConfigError("config", "too deeply nested") from None
    _check_cross_fields(cfg)
    return cfg


def _duplicate_key(node: Any, path: str, seen: set[int]) -> tuple[str, int, int] | None:
    """(dotted key, first line, repeated line) of the first mapping key given twice, or None.
    Keys merged in with `<<: *anchor` may be overridden; only literal repeats count."""
    if id(node) in seen:  # an alias of a node already walked (YAML may refer to itself)
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = f"{path}{key_node.value}" if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None:
                if key in lines:
                    return key, lines[key], key_node.start_mark.line + 1
                lines[key] = key_node.start_mark.line + 1
            found = _duplicate_key(value_node, f"{key}." if key is not None else path, seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, f"{path.rstrip('.')}[{i}].", seen)
            if found:
                return found
    return None


def _safe_load(text: str, where: str, prefix: str = "") -> Any:
    """yaml.safe_load, but a key given twice in one mapping is a ConfigError naming it (plain YAML
    silently keeps the last one)."""
    found = _duplicate_key(yaml.compose(text, Loader=yaml.SafeLoader), prefix, set())
    if found:
        key, first, again = found
        lines = f" (lines {first} and {again})" if first != again else ""
        raise ConfigError(key, f"given twice in {where}{lines}; keep one")
    return yaml.safe_load(text)


def _yaml_value(text: str, key: str = "") -> Any:
    """An override's value read as YAML (safely); text that is not valid YAML stays a string."""
    if not text.strip():
        return None
    try:
        return _safe_load(text, f"the value of --set {short(key)}", f"{key}.")
    except ConfigError:
        raise
    except Exception:  # any parse failure (YAMLError, a bad timestamp, nesting too deep...)
        return text


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse `a.b=value` (value read as YAML) into (["a", "b"], value)."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError("--set", f"expected KEY=VALUE (e.g. search.generations=20), got {short(item)}")
    key, text = item.split("=", 1)
    path = [part.strip() for part in key.split(".")]
    if not all(path):
        raise ConfigError("--set", f"expected a key like section.name before '=', got {short(key)}")
    return path, _yaml_value(text, ".".join(path))


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `a.b=value` into a nested mapping (a copy); only sections can hold sub-keys."""
    try:
        out = copy.deepcopy(raw) if raw else {}
    except RecursionError:
        raise ConfigError("config", "too deeply nested") from None
    if not isinstance(out, dict):
        raise ConfigError("config", f"expected a mapping, got {short(out)}")
    for item in overrides:
        path, value = parse_override(item)
        node, cls = out, Config
        for depth, part in enumerate(path[:-1]):
            where = ".".join(path[: depth + 1])
            fields = {f.name: f for f in dataclasses.fields(cls)} if cls is not None else {}
            if part in fields:
                tp = typing.get_type_hints(cls)[part]
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(".".join(path), f"'{where}' is a setting, not a section")
                cls = tp
            else:
                cls = None  # unknown: reported with its suggestions when the result is validated
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(where, f"expected a mapping (a section), got {short(node)}")
        node[path[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely (no python tags: yaml.safe_load); errors name the file."""
    p = Path(path)
    try:
        if p.is_dir():
            raise ConfigError("config", f"{p} is a directory, not a YAML file")
        if not p.is_file():
            raise ConfigError("config", f"file not found: {p}")
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("config", f"{p} is not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError("config", f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        raw = _safe_load(text, str(p))
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        raise ConfigError("config", f"malformed YAML in {p}{where}" + (f": {problem}" if problem else "")) from None
    except Exception as exc:  # only parsing runs here: a bad timestamp, nesting too deep...
        detail = " ".join(str(exc).split())[:80]
        raise ConfigError("config", f"malformed YAML in {p} ({exc.__class__.__name__}: {detail})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("config", f"expected a mapping at the top of {p}, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config: the embedded default when `path` is None, then `a.b=value` overrides."""
    raw = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(raw, overrides or []))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from evoprune.atomic import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
