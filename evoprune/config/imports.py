"""Import paths (`package.module:attribute`) in a config: the syntax checked without importing (so that
reading a config stays fast), the object resolved with one-line errors naming the key."""
from __future__ import annotations

import importlib
import re
from typing import Any

from evoprune.config.schema import ConfigError

IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_import_path(text: str) -> bool:
    return ":" in text


def import_path_problem(text: str) -> str | None:
    """None for a well-formed `package.module:attribute`, else what is wrong with it."""
    if IMPORT_PATH.match(text):
        return None
    return f"expected an import path like my_pkg.models:build (a module, a colon, a callable in it), got {text!r}"


def resolve(text: str, key: str) -> Any:
    """The object an import path names; ConfigError(key, ...) when it cannot be imported or is missing."""
    problem = import_path_problem(text)
    if problem:
        raise ConfigError(key, problem)
    module_name, attribute = text.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the user's module raises while it loads
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(key, f"cannot import {module_name} ({type(exc).__name__}: {detail}); is it installed or "
                               "on PYTHONPATH?") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(key, f"{module_name} has no {attribute}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(key, f"{text} is a {type(obj).__name__}, not a callable")
    return obj


def call(text: str, key: str, kwargs: dict[str, Any] | None = None) -> Any:
    """Resolve `text` and call it with `kwargs`; an error raised by the call is one ConfigError line."""
    fn = resolve(text, key)
    try:
        return fn(**(kwargs or {}))
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(key, f"{text}(**{kwargs or {}}) failed: {type(exc).__name__}: {detail}") from None
