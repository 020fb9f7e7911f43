"""How the command line fails: exit codes, UsageError, Terminated, and the one-line messages (no torch)."""
from __future__ import annotations

import shlex
import textwrap
from pathlib import Path
from typing import Any

from evoprune.config import short

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class UsageError(Exception):
    """Bad command-line input that is not a config error (paths, flags)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, a job scheduler, `kill`): handled like Ctrl-C, so the checkpoint is kept."""


def raise_terminated(signum: int, frame: Any) -> None:
    """The SIGTERM handler: stop like Ctrl-C."""
    raise Terminated()


def stop_code(exc: BaseException) -> int:
    """The exit code of a stop: 143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def stop_word(exc: BaseException) -> str:
    return "terminated" if isinstance(exc, Terminated) else "interrupted"


def one_line(text: object, limit: int = 1000) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def paragraph(text: str) -> str:
    """`text` as one paragraph wrapped at 100 columns (a failed run's account)."""
    return textwrap.fill(" ".join(text.split()), width=100, break_long_words=False, break_on_hyphens=False)


def as_path(text: str, flag: str) -> Path:
    if not text or "\0" in text:
        raise UsageError(f"{flag}: expected a path, got {short(text)}")
    return Path(text)


def os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def shell_command(*parts: str) -> str:
    """`python -m evoprune PARTS...`, quoted for a shell: what a message tells the user to run."""
    return " ".join(shlex.quote(p) for p in ("python", "-m", "evoprune", *parts))
