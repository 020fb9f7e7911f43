"""Genome: for each prunable group of the parent, the sorted kept channel indices (plain data)."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any


class Genome(Mapping[str, tuple[int, ...]]):
    """An immutable mapping `group name -> kept channel indices` in the parent's coordinates."""

    __slots__ = ("_kept", "_key")

    def __init__(self, kept: Mapping[str, Any]):
        self._kept = {str(name): tuple(sorted(int(i) for i in idx)) for name, idx in kept.items()}
        self._key: str | None = None

    def __getitem__(self, name: str) -> tuple[int, ...]:
        return self._kept[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kept)

    def __len__(self) -> int:
        return len(self._kept)

    def __hash__(self) -> int:
        return hash(self.key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Genome) and self._kept == other._kept

    def __repr__(self) -> str:
        widths = ", ".join(f"{n}:{len(k)}" for n, k in self._kept.items())
        return f"Genome({self.key()}; {widths})"

    def key(self) -> str:
        """A short stable identifier: the same kept sets give the same key in any process."""
        if self._key is None:
            canon = json.dumps(sorted(self._kept.items()), separators=(",", ":"))
            self._key = hashlib.sha1(canon.encode()).hexdigest()[:16]
        return self._key

    def widths(self) -> dict[str, int]:
        return {name: len(kept) for name, kept in self._kept.items()}

    def with_group(self, name: str, kept: Any) -> "Genome":
        return Genome({**self._kept, name: kept})

    def to_json(self) -> dict[str, list[int]]:
        return {name: list(kept) for name, kept in self._kept.items()}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Genome":
        if not isinstance(obj, Mapping):
            raise ValueError(f"a genome must be a mapping of group name to channel indices, got {type(obj).__name__}")
        return cls(obj)
