"""One run at a time per state directory.

`scrapy crawlall` and `scrapy crawl` hold an exclusive lock on `<STATE_DIR>/run.lock` (filelock;
flock(2) on Unix) for the whole run, so a cron run never overlaps the previous one on the same
dedupe store and output. The kernel drops a flock when its process dies, however it dies, so a
lock left by a killed run never blocks the next one: there is nothing stale to clean up.

Who holds the lock is written next to it, in `run.lock.json` (pid, host, command, start time),
so the run that is locked out can say which process to look at.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from aggregator.atomicfile import write_atomically
from aggregator.errors import ConfigError
from aggregator.state import state_dir

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = ["LOCK_FILE", "OWNER_FILE", "LockHeld", "RunLock"]

logger = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
OWNER_FILE = "run.lock.json"


class LockHeld(RuntimeError):
    """Another process holds the run lock. `holder` is what it wrote in run.lock.json (empty
    when that could not be read: it may have only just taken the lock)."""

    def __init__(self, path: Path, holder: dict[str, Any]):
        self.path = path
        self.holder = holder
        super().__init__(f"another run holds the lock {path}: {describe_holder(holder)}")


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "holder unknown (no readable run.lock.json next to the lock)"
    return (
        f"pid {holder['pid']} on host {holder.get('host', '?')} "
        f"({holder.get('command', '?')}), started {holder.get('started', '?')}"
    )


class RunLock:
    """The state directory's run lock; `acquire` never waits (raises LockHeld at once)."""

    def __init__(self, directory: Path, command: str):
        self.directory = directory
        self.path = directory / LOCK_FILE
        self.owner_path = directory / OWNER_FILE
        self.command = command
        self._lock = FileLock(str(self.path), timeout=0)

    @classmethod
    def from_settings(cls, settings: BaseSettings, command: str) -> RunLock:
        return cls(state_dir(settings), command)

    def acquire(self) -> None:
        """Take the lock or raise LockHeld; ConfigError when the state directory is unusable."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout:
            raise LockHeld(self.path, self.holder()) from None
        except OSError as exc:
            raise self._unusable(exc) from exc
        try:
            self._write_owner()
        except OSError as exc:
            self._lock.release()
            raise self._unusable(exc) from exc
        logger.debug("Took the run lock %s", self.path)

    def release(self) -> None:
        if not self._lock.is_locked:
            return
        # Remove our record first: once the lock is released the next run writes its own.
        try:
            self.owner_path.unlink(missing_ok=True)
        finally:
            self._lock.release()

    def _unusable(self, exc: OSError) -> ConfigError:
        where = str(self.directory)
        return ConfigError(f"setting STATE_DIR={where!r}: cannot take the run lock: {exc}")

    def holder(self) -> dict[str, Any]:
        try:
            data = json.loads(self.owner_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _write_owner(self) -> None:
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        text = json.dumps(owner, ensure_ascii=False, indent=1)
        write_atomically(self.owner_path, text.encode("utf-8"))
