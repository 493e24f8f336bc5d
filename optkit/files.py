"""optkit's own files: where its caches live, how a file is written so a reader never sees half of it, and how a
cache file is read so a damaged one is rebuilt rather than trusted. The lowest floor: it imports nothing of optkit."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("OPTKIT_CACHE", Path.home() / ".cache" / "optkit"))


def read_memo(path: Path) -> dict:
    """A JSON object of optkit's own cache, or {} when it is missing, unreadable or of another shape: a cache
    is rebuilt, never trusted into a traceback."""
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return memo if isinstance(memo, dict) else {}


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file and rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; reports are meant to be shared like any file
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
