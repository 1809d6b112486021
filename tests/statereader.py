"""A synchronous view of a crawl-state store, for tests that check what a crawl left behind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aggregator.state.sqlite import SqliteCrawlState


class StateReader:
    def __init__(self, path: Path):
        self.state = SqliteCrawlState(f"sqlite:///{path}")

    def published_among(self, keys: Iterable[str]) -> set[str]:
        return asyncio.run(self.state.published.published_among(list(keys)))

    def pending(self, site: str) -> list[tuple[str, dict[str, Any]]]:
        return [(a.key, a.payload) for a in asyncio.run(self.state.pending.list(site))]

    def mark_published(self, key: str, location: str) -> None:
        asyncio.run(self.state.published.mark_published([(key, location)]))

    def get(self, name: str) -> str | None:
        return asyncio.run(self.state.records.get(name))

    def close(self) -> None:
        asyncio.run(self.state.close())
