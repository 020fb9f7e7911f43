"""Checking one raw (YAML) value against its field's annotation and range, and building a section from a mapping."""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from typing import Any, Literal

from evoprune.config.schema import INT_MAX, ConfigError, short


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
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
    if origin in (list, tuple):  # a YAML list; held as a tuple, so a loaded config cannot change
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(_coerce(f"{key}[{i}]", v, typing.get_args(tp)[0]) for i, v in enumerate(value))
    if origin is dict and typing.get_args(tp) == (str, str):  # names to names (e.g. module names, dotted)
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v
                                                  for k, v in value.items()):
            raise ConfigError(key, f"expected a mapping of names to names, got {short(value)}")
        return dict(value)
    if origin is dict:  # keyword arguments for the user's code: its own values, only the keys are checked
        if not isinstance(value, dict) or not all(isinstance(k, str) and k.isidentifier() for k in value):
            raise ConfigError(key, f"expected a mapping of argument names to values, got {short(value)}")
        return dict(value)
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


def build_section(cls: type, raw: Any, prefix: str) -> Any:
    """A (frozen) config section of type `cls` from a raw mapping; keys are named with `prefix` in errors."""
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
            values[name] = build_section(tp, raw[name], key + ".")
        else:
            values[name] = _coerce(key, raw[name], tp)
            _check_range(key, values[name], f.metadata)
    return cls(**values)


