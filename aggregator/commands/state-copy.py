"""(A file name with a hyphen: Scrapy names a command after its module.)

`scrapy state-copy SRC_URI DST_URI`: copy the crawl state (published keys, pending articles,
records such as feed validators and the S3 writer id) from one store to another, e.g. from the
SQLite file to Redis before switching a machine to cluster mode.

Idempotent: what the destination already has is kept (a published key keeps its record, a
pending article its attempts, a record its value), so running it twice copies nothing new.
Exit statuses: 0 copied, 1 a store could not be reached, 2 a malformed URI or unknown scheme.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from scrapy import Spider
from scrapy.commands import ScrapyCommand
from scrapy.crawler import Crawler
from scrapy.exceptions import UsageError

from aggregator.errors import ConfigError, StateUnavailable
from aggregator.ops.runstatus import EXIT_CONFIG, EXIT_FAILED
from aggregator.state.copy import build_state, copy_state
from aggregator.state.redis import redacted

if TYPE_CHECKING:
    from aggregator.state.base import CrawlState


class Command(ScrapyCommand):
    requires_project = True

    def syntax(self) -> str:
        return "SRC_URI DST_URI"

    def short_desc(self) -> str:
        return "Copy published keys, pending articles and records from one state store to another"

    def long_desc(self) -> str:
        return (
            "Copy the crawl state (published keys, pending articles, feed validators, the S3 "
            "writer id) from SRC_URI to DST_URI, e.g. sqlite:///.state/dedupe.sqlite3 to "
            "redis://host:6379/0. Idempotent: what DST_URI already has is kept. Exit status: 0 "
            "copied, 1 a store is unreachable, 2 a malformed URI."
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 2:
            raise UsageError("give SRC_URI and DST_URI", print_help=True)
        assert self.settings is not None
        crawler = Crawler(Spider, self.settings)
        try:
            source = build_state(crawler, args[0], "SRC_URI")
            destination = build_state(crawler, args[1], "DST_URI")
        except ConfigError as exc:
            print(f"scrapy state-copy: {exc}", file=sys.stderr)
            self.exitcode = EXIT_CONFIG
            return
        try:
            counts = asyncio.run(self._copy(source, destination))
        except StateUnavailable as exc:
            print(f"scrapy state-copy: {exc}", file=sys.stderr)
            self.exitcode = EXIT_FAILED
            return
        print(
            f"Copied {counts['published']} published keys (of {counts['seen']}), "
            f"{counts['pending']} pending articles and {counts['records']} records "
            f"from {redacted(args[0])} to {redacted(args[1])}"
        )

    @staticmethod
    async def _copy(source: CrawlState, destination: CrawlState) -> dict[str, int]:
        try:
            await source.open()
            await destination.open()
            return await copy_state(source, destination)
        finally:
            await source.close()
            await destination.close()
