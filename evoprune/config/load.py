"""Loading a config: YAML files (safely, duplicate keys refused), `a.b=value` overrides, saving."""
from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from evoprune.atomic import write_text
from evoprune.config.coerce import build_section
from evoprune.config.rules import check_rules
from evoprune.config.schema import Config, ConfigError, short


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a plain mapping into a Config (missing keys take their defaults)."""
    try:
        cfg = build_section(Config, raw if raw is not None else {}, "")
    except RecursionError:  # a self-referencing YAML structure
        raise ConfigError("config", "too deeply nested") from None
    check_rules(cfg)
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
                if dict in [typing.get_origin(t) for t in (tp, *typing.get_args(tp))]:
                    cls = None  # a mapping setting (parent.kwargs): its keys are the user's
                elif not dataclasses.is_dataclass(tp):
                    raise ConfigError(".".join(path), f"'{where}' is a setting, not a section")
                else:
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
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
