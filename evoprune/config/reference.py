"""The README's config reference, generated from the fields' defaults and docs (`--check` fails on drift)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from evoprune.config.schema import Config

BEGIN = "<!-- config reference: generated from evoprune/config/schema.py by `python -m evoprune.config.reference --write README.md`; edit the docs there -->"
END = "<!-- end of config reference -->"


def _default(value: Any) -> str:
    """A default as YAML writes it in a config file (flow style, one line)."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def rows(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, doc) of every field, sections in order."""
    out: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += rows(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", _default(f.default), f.metadata["doc"]))
    return out


def table() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | `{default}` | {doc} |" for key, default, doc in rows()]
    return "\n".join(lines)


def section() -> str:
    return f"{BEGIN}\n{table()}\n{END}"


def readme_section(text: str) -> str:
    """The generated part of a README's text (ValueError when its markers are missing)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError("no generated config reference (its marker comments) in this README")
    return text[start: end + len(END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evoprune.config.reference", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="README", help="replace the reference in this file")
    group.add_argument("--check", metavar="README", help="exit 1 if the reference in this file differs")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(table())
        return 0
    path = Path(args.write or args.check)
    text = path.read_text(encoding="utf-8")
    current = readme_section(text)
    if args.check:
        if current != section():
            print(f"{path}: the config reference differs from the fields' docs; run "
                  f"python -m evoprune.config.reference --write {path}", file=sys.stderr)
            return 1
        return 0
    path.write_text(text.replace(current, section()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
