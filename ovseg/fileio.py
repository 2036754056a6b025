"""Atomic file writes: every file ovseg writes appears whole or not at all.

A file is written to a temporary name in its target directory, then renamed onto the target
(``os.replace`` is atomic on POSIX and Windows within one file system), so an interrupted run,
a full disk or a crash never leaves a half-written output behind. Also where caches live.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """Where ovseg keeps its caches (text embeddings, the precision probe): ``$OVSEG_CACHE``,
    else ``~/.cache/ovseg``."""
    return Path(os.environ.get("OVSEG_CACHE") or Path.home() / ".cache" / "ovseg")


def temp_path_beside(path: str | Path) -> str:
    """A new empty temp file next to ``path`` with the permissions a plain open() would give."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    _plain_mode(tmp)
    return tmp


def _plain_mode(path: str) -> None:
    """Give ``path`` the permissions a plain open() would (0666 less the umask), again after
    a writer that replaced the file with its own (safetensors writes a 0600 temp file and
    renames it)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: never a partial file at ``path``.

    Parent directories are created. Whatever ``write`` raises propagates, and the temp file is
    removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(path)
    try:
        write(tmp)
        _plain_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 text to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_many(writers: dict[Path, Callable[[str], None]]) -> None:
    """Write several files, each through a temp name, and rename them only once all of them
    are written: either every target is replaced or (on an error while writing) none is."""
    temps: dict[Path, str] = {}
    try:
        for path, write in writers.items():
            temps[path] = temp_path_beside(path)
            write(temps[path])
            _plain_mode(temps[path])
        for path in writers:
            os.replace(temps.pop(path), path)
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.remove(tmp)
