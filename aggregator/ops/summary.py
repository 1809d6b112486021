"""What a `scrapy crawlall` run did, per source: a table for people, `last-run.json` for
monitoring.

Both come from the same numbers, each source's final crawl stats: listing pages read and failed,
articles new (written), already published, dropped on purpose and failed, and the time it took.
`last-run.json` lives in the state directory, is replaced atomically (a monitor never reads half
a file) and adds the overall status, the exit status and when the run started and finished.
"""

from __future__ import annotations

import json
import os
import socket
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aggregator import stats as keys
from aggregator.atomicfile import write_atomically
from aggregator.ops.runstatus import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

__all__ = [
    "ERROR",
    "FAILED",
    "INTERRUPTED",
    "LAST_RUN_FILE",
    "NOT_RUN",
    "OK",
    "RunSummary",
    "SourceResult",
    "count_dropped",
    "utcnow",
    "write_last_run",
]

LAST_RUN_FILE = "last-run.json"

# Per-source status
OK = "ok"  # finished, nothing failed
FAILED = "failed"  # a listing or an article failed, or the crawl did not finish normally
ERROR = "error"  # the crawl could not start (or raised): see the log
INTERRUPTED = "interrupted"  # stopped by a shutdown signal (Ctrl-C, SIGTERM)
NOT_RUN = "not run"  # the run was interrupted before this source's turn


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def count_dropped(stats: dict[str, Any]) -> int:
    """Sum of every `aggregator/articles/dropped/<reason>` counter."""
    prefix = keys.dropped("")
    return sum(int(v) for k, v in stats.items() if k.startswith(prefix))


@dataclass
class SourceResult:
    name: str
    spider: str
    status: str = NOT_RUN
    finish_reason: str | None = None
    listing_pages: int = 0
    listing_failed: int = 0
    new: int = 0
    already_published: int = 0
    dropped: int = 0
    failed: int = 0
    started: datetime | None = None
    finished: datetime | None = None
    elapsed: float = 0.0
    error: str | None = None

    @classmethod
    def from_stats(
        cls,
        name: str,
        spider: str,
        stats: dict[str, Any],
        *,
        started: datetime,
        elapsed: float,
        error: str | None = None,
    ) -> SourceResult:
        """A finished source; `error` when its crawl could not start or raised."""
        result = cls(
            name=name,
            spider=spider,
            finish_reason=stats.get("finish_reason"),
            listing_pages=int(stats.get(keys.LISTING_PAGES, 0)),
            listing_failed=int(stats.get(keys.LISTING_FAILED, 0)),
            new=int(stats.get(keys.ARTICLES_NEW, 0)),
            already_published=int(stats.get(keys.ARTICLES_DUPLICATE, 0)),
            dropped=count_dropped(stats),
            failed=int(stats.get(keys.ARTICLES_FAILED, 0)),
            started=started,
            finished=utcnow(),
            elapsed=elapsed,
            error=error,
        )
        if error is not None:
            result.status = ERROR
        elif result.finish_reason == "shutdown":
            result.status = INTERRUPTED
        elif keys.failures(stats) or result.finish_reason != "finished":
            result.status = FAILED
        else:
            result.status = OK
        return result

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spider": self.spider,
            "status": self.status,
            "finish_reason": self.finish_reason,
            "listings": {"pages": self.listing_pages, "failed": self.listing_failed},
            "articles": {
                "new": self.new,
                "already_published": self.already_published,
                "dropped": self.dropped,
                "failed": self.failed,
            },
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "elapsed_seconds": round(self.elapsed, 3),
            "error": self.error,
        }


@dataclass
class RunSummary:
    started: datetime
    sources_file: str
    sources: list[SourceResult] = field(default_factory=list)
    finished: datetime | None = None
    error: str | None = None  # a configuration error: nothing was crawled

    @property
    def exit_status(self) -> int:
        if self.error is not None:
            return EXIT_CONFIG
        if any(source.status != OK for source in self.sources):
            return EXIT_FAILED
        return EXIT_OK

    @property
    def status(self) -> str:
        return {EXIT_OK: "ok", EXIT_FAILED: "failed", EXIT_CONFIG: "config_error"}[self.exit_status]

    def to_json(self) -> dict[str, Any]:
        finished = self.finished or utcnow()
        return {
            "status": self.status,
            "exit_status": self.exit_status,
            "started": _iso(self.started),
            "finished": _iso(finished),
            "elapsed_seconds": round((finished - self.started).total_seconds(), 3),
            "sources_file": self.sources_file,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "error": self.error,
            "sources": [source.to_json() for source in self.sources],
        }

    def table(self) -> str:
        """The run as a plain-text table, one row per source and a total row."""
        header = (
            "source",
            "status",
            "pages",
            "page errors",
            "new",
            "already published",
            "dropped",
            "failed",
            "time",
        )
        rows = [header] + [_row(s) for s in self.sources]
        total = SourceResult(name="total", spider="", status=self.status)
        for source in self.sources:
            for name in _COUNTS:
                setattr(total, name, getattr(total, name) + getattr(source, name))
        if self.finished:
            total.elapsed = (self.finished - self.started).total_seconds()
        rows.append(_row(total))
        widths = [max(_width(row[i]) for row in rows) for i in range(len(header))]
        lines = []
        for number, row in enumerate(rows):
            cells = [
                _pad(cell, widths[i], right=i >= 2 and number > 0) for i, cell in enumerate(row)
            ]
            lines.append("  ".join(cells).rstrip())
            if number == 0 or number == len(rows) - 2:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


_COUNTS = ("listing_pages", "listing_failed", "new", "already_published", "dropped", "failed")


def _row(source: SourceResult) -> tuple[str, ...]:
    return (
        source.name,
        source.status,
        str(source.listing_pages),
        str(source.listing_failed),
        str(source.new),
        str(source.already_published),
        str(source.dropped),
        str(source.failed),
        f"{source.elapsed:.1f}s",
    )


def _width(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    room = " " * (width - _width(text))
    return room + text if right else text + room


def write_last_run(directory: Path, summary: RunSummary) -> Path:
    """Replace `<directory>/last-run.json` atomically with the summary."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LAST_RUN_FILE
    text = json.dumps(summary.to_json(), ensure_ascii=False, indent=1) + "\n"
    write_atomically(path, text.encode("utf-8"))
    return path
