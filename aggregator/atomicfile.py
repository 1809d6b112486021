"""Replace a file atomically, so a reader (Hexo, rsync, a monitor polling last-run.json) sees
the old file or the new one, never half of one, and a crash leaves no partial file behind.

`write_atomically` does one file. The post storage commits many files at once with the two
halves apart (`stage_file` for each, then `os.replace` for each, then one `fsync_directory`), so
a batch pays for one directory sync instead of one per file."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import random
import sys
from pathlib import Path

__all__ = [
    "fsync_directory",
    "remove_quietly",
    "stage_file",
    "syncfs",
    "syncfs_available",
    "write_atomically",
]

# Temporary names need only be unlikely to clash (O_EXCL catches a clash); seeded from the OS.
_names = random.Random()
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def write_atomically(
    path: str | Path, data: bytes, *, fsync: bool = False, mode: int = 0o644
) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`.

    `fsync` flushes the data to disk before the rename, so after a power cut the file holds
    either version in full."""
    tmp = stage_file(path, data, fsync=fsync, mode=mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def remove_quietly(path: str | Path) -> None:
    """Remove a temporary file that may already be gone."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def stage_file(path: str | Path, data: bytes, *, fsync: bool, mode: int = 0o644) -> str:
    """Write `data` to a new hidden temporary file beside `path` (`.<name>.<random>.tmp`: Hexo
    and `*.md` globs skip it) and return its path; the caller renames it into place. With
    `fsync` its contents are on disk when this returns. A failure removes the temporary file.

    `mode` is set explicitly (fchmod), whatever the umask: the web server or a monitoring user
    must be able to read the file. Plain os calls rather than a file object: this runs once per
    post, and a buffered writer only adds work for one write of bytes already in memory.

    The temporary name is a plain string, never a Path: pathlib (3.11) interns every part of a
    path it parses, and a random name per post grew the interpreter's table of interned strings
    for good (about 210 B per article of a 20,000-article crawl's memory at close; issue 14)."""
    directory, name = os.path.split(os.fspath(path))
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{_names.getrandbits(48):012x}.tmp")
        try:
            fd = os.open(tmp, _FLAGS, 0o600)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"no free temporary name beside {path}")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    except BaseException:
        remove_quietly(tmp)
        raise
    return tmp


def fsync_directory(path: Path) -> None:
    """Flush a directory's entries (the renames into it) to disk: until then a power cut may
    undo a rename even though the file it names was synced."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> ctypes._CFuncPtr | None:
    """libc's syncfs on Linux 5.8 or newer, else None: older kernels' syncfs returned 0 even when
    writing some data back failed, so it could not vouch for a file."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        major, minor = (int(part) for part in platform.release().split(".")[:2])
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (ValueError, OSError, AttributeError):
        return None
    if (major, minor) < (5, 8):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs = _load_syncfs()


def syncfs_available() -> bool:
    return _syncfs is not None


def syncfs(fd: int) -> None:
    """Write back and commit everything pending on the filesystem that holds `fd` (one journal
    commit for all of it); raise OSError when any writeback on that filesystem has failed since
    `fd` was opened (Linux >= 5.8 reports such errors to syncfs)."""
    if _syncfs is None:
        raise OSError("syncfs is not available here (Linux 5.8 or newer)")
    if _syncfs(fd) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"syncfs: {os.strerror(errno)}")
