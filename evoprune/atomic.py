"""Atomic file writes: temporary file, fsync, rename, so a crash never leaves half a file."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # what mkstemp makes from our prefix/suffix


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp alone gives 0600


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Call `write(fh)` on a temporary file beside `path`, then move it over `path`.

    Either the whole new content is at `path` afterwards, or (on any error, Ctrl-C included)
    the previous content is untouched and the temporary file is gone. A process killed outright
    can leave a temporary file behind; `remove_temp_files` clears those.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def remove_temp_files(directory: str | Path) -> list[Path]:
    """Delete temporary files that a killed `atomic_write` left in `directory`; returns them."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for p in directory.glob(f".*{TMP_SUFFIX}"):
            if _TMP_NAME.match(p.name) and p.is_file():
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1) + "\n")
