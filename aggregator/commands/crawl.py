"""`scrapy crawl` that exits non-zero when a listing or an article failed, and that never runs
alongside another crawl or crawlall on the same state directory.

Scrapy's own `crawl` exits 0 after callback and pipeline errors by design; cron needs to know.
Exit statuses: 0 all good, 1 something failed (the rest ran), 2 bad arguments or settings,
75 another run holds the state directory's lock (aggregator.ops.lock).
"""

from __future__ import annotations

import argparse
import sys

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.exceptions import UsageError

from aggregator.errors import ConfigError
from aggregator.ops.lock import LockHeld, RunLock
from aggregator.ops.runstatus import (
    EXIT_CONFIG,
    EXIT_LOCKED,
    check_arguments,
    check_settings,
    exit_status,
)


class Command(ScrapyCrawlCommand):
    def long_desc(self) -> str:
        return (
            "Run a spider. Exit status: 0 when every listing and article succeeded, 1 when any "
            "failed (the others still ran), 2 on bad arguments or settings, 75 when another "
            "crawl or crawlall holds the lock in STATE_DIR."
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give exactly one spider name", print_help=True)
        assert self.crawler_process is not None and self.settings is not None
        if self.settings.get("CLUSTER_URI"):
            print(
                f"scrapy crawl {args[0]}: CLUSTER_URI is set: cluster runs go through the "
                "coordinator, `scrapy crawlall --only SOURCE` (and `scrapy worker` to crawl)",
                file=sys.stderr,
            )
            self.exitcode = EXIT_CONFIG
            return
        try:
            spidercls = self.crawler_process.spider_loader.load(args[0])
            check_arguments(spidercls, opts.spargs)
            check_settings(self.settings, spidercls, opts.spargs)
        except (KeyError, ConfigError) as exc:
            # str() of a KeyError is its repr, quotes included: print the message itself.
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"scrapy crawl {args[0]}: {message}", file=sys.stderr)
            self.exitcode = EXIT_CONFIG
            return
        lock = RunLock.from_settings(self.settings, f"scrapy crawl {args[0]}")
        try:
            lock.acquire()
        except LockHeld as exc:
            print(f"scrapy crawl {args[0]}: {exc}; exiting with status 75", file=sys.stderr)
            self.exitcode = EXIT_LOCKED
            return
        except ConfigError as exc:
            print(f"scrapy crawl {args[0]}: {exc}", file=sys.stderr)
            self.exitcode = EXIT_CONFIG
            return
        try:
            crawler = self.crawler_process.create_crawler(spidercls)
            self.crawler_process.crawl(crawler, **opts.spargs)
            self.crawler_process.start()
            self.exitcode = exit_status([crawler], self.crawler_process.bootstrap_failed)
        finally:
            lock.release()
