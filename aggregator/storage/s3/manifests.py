"""A run's manifest on its way to the bucket: the lines go first to a local journal, locked while
the run lives; at close the storage sends it as `{prefix}/_manifests/...jsonl`. A run that dies,
or cannot reach the bucket at close, leaves the journal; the next run on the same state directory
and OUTPUT_URI sends it (`resend_leftover_manifests`), so no written post escapes the manifests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError
from filelock import FileLock, Timeout

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["ManifestJournal", "journal_dir", "resend_leftover_manifests"]

_SPIDER_CHARS = re.compile(r"[^A-Za-z0-9_.]")


def journal_dir(state_dir: str | Path, bucket: str, prefix: str) -> Path:
    """`STATE_DIR/s3-manifests/<bucket>/<quoted prefix or _>`: one per destination."""
    return Path(state_dir) / "s3-manifests" / bucket / (quote(prefix, safe="") or "_")


class ManifestJournal:
    """A run's manifest lines, appended to a local file as objects are written and locked
    while the run lives."""

    def __init__(self, directory: Path, spider: str, run_id: str):
        # the spider name is part of file and manifest names, which split on "-"
        self.spider = _SPIDER_CHARS.sub("_", spider)
        self.path = directory / f"{self.spider}-{run_id}.jsonl"
        self.lines = 0
        self._lock = FileLock(f"{self.path}.lock", thread_local=False)
        self._handle: Any = None

    def claim(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire(timeout=0)

    def append(self, entry: dict[str, Any]) -> None:
        self.extend((entry,))

    def extend(self, entries: Iterable[dict[str, Any]]) -> None:
        """Append lines, written out in one write (a batch's lines, from persist_batch)."""
        lines = [json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n" for entry in entries]
        if not lines:
            return
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write("".join(lines))
        self._handle.flush()
        self.lines += len(lines)

    def _close_file(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def finish(self) -> bytes:
        """The lines written so far, as the manifest body."""
        self._close_file()
        return self.path.read_bytes()

    def discard(self) -> None:
        """Forget the lines: the manifest is in the bucket."""
        self._close_file()
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Let the next run send what is left (nothing, unless sending failed)."""
        self._close_file()
        if self._lock.is_locked:
            if self.lines == 0:
                self.path.unlink(missing_ok=True)
            self._lock.release()
            if not self.path.exists():
                Path(self._lock.lock_file).unlink(missing_ok=True)

    @staticmethod
    def resend(path: Path, send: Callable[[str, str, bytes], str]) -> str | None:
        """Send a leftover journal with `send(spider, run_id, body)` unless its run still holds
        it; remove it once sent. Returns the manifest key, or None when skipped or empty."""
        lock = FileLock(f"{path}.lock", thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return None
        try:
            if not path.exists():
                return None
            body = path.read_bytes()
            spider, _, run_id = path.stem.rpartition("-")
            key = send(spider, run_id, body) if body.strip() else None
            path.unlink()
            return key
        finally:
            lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)


def resend_leftover_manifests(
    directory: Path,
    send: Callable[[str, str, bytes], str],
    *,
    skip: Path | None = None,
) -> tuple[list[str], list[str]]:
    """Send the journals earlier runs left in `directory` (they died, or the bucket was out of
    reach at close), except `skip` (this run's) and those of runs still going (locked). Blocking.

    Returns the keys sent and a message per journal that could not be sent: that one stays
    for the next run, and this run goes on, since its own posts should not wait for it."""
    sent: list[str] = []
    failed: list[str] = []
    for path in sorted(directory.glob("*.jsonl")):
        if path == skip:
            continue
        try:
            key = ManifestJournal.resend(path, send)
        except (BotoCoreError, ClientError) as exc:
            failed.append(f"{path}: {exc}")
            continue
        if key is not None:
            sent.append(key)
    return sent, failed
