"""Replace a file atomically, so a reader (Hexo, rsync, a monitor polling last-run.json) sees
the old file or the new one, never half of one, and a crash leaves no partial file behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, data: bytes, *, fsync: bool = False, mode: int = 0o644) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`.

    `fsync` flushes the data to disk before the rename, so after a power cut the file holds
    either version in full. `mode` is set explicitly: mkstemp creates files 0600, which would
    keep the web server or a monitoring user from reading them."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
