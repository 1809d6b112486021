"""`scrapy crawlall`: every enabled source of the sources file, in one process, for cron.

Each source is its own crawler (its spider, its arguments, its stats) with the project's
pipelines and dedupe store. Sources run one after another, not side by side: each crawler has its
own downloader, so two sources on one site (two 趣头条 channels) crawled together would double the
load on that host past CONCURRENT_REQUESTS_PER_DOMAIN and AutoThrottle; one at a time, the
politeness settings hold for the whole run, LogStats lines and errors read source by source, and
each source's time is its own.

Exit statuses: 0 every source succeeded; 1 a listing or an article failed, or a source could not
run (the other sources still ran); 2 the sources file or the options are wrong (nothing crawled);
75 another run holds the state directory's lock (see aggregator.ops.lock).

With CLUSTER_URI set it is the cluster's coordinator instead (aggregator.cluster.coordinator):
the same checks, summary, last-run.json and exit statuses, the run lock in Redis, the crawling
done by `scrapy worker`s (`--work` starts one beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from aggregator.errors import ConfigError, StateUnavailable
from aggregator.ops.lock import LockHeld, RunLock
from aggregator.ops.runstatus import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_LOCKED,
    check_run_settings,
    check_spider_settings,
)
from aggregator.ops.sources import Source, load_sources, parse_names, select_sources, sources_file
from aggregator.ops.summary import INTERRUPTED, RunSummary, SourceResult, utcnow, write_last_run
from aggregator.state import state_dir

if TYPE_CHECKING:
    from scrapy.crawler import Crawler, CrawlerProcessBase

logger = logging.getLogger(__name__)


class Command(ScrapyCommand):
    requires_project = True

    def syntax(self) -> str:
        return "[--only NAME,...] [--skip NAME,...] [options]"

    def short_desc(self) -> str:
        return "Crawl every enabled source of the sources file, one run at a time"

    def long_desc(self) -> str:
        return (
            "Crawl every enabled source of the sources file (SOURCES_FILE, else "
            "$AGGREGATOR_SOURCES, else the packaged aggregator/data/sources.toml) one after "
            "another in one process, print a summary table and write it to "
            "STATE_DIR/last-run.json. Exit status: 0 every source succeeded, 1 a listing or an "
            "article failed (the other sources still ran), 2 bad sources file or options "
            "(nothing crawled), 75 another run holds the lock in STATE_DIR."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--only", metavar="NAMES", help="crawl only these sources (comma-separated names)"
        )
        parser.add_argument(
            "--skip", metavar="NAMES", help="do not crawl these sources (comma-separated names)"
        )
        parser.add_argument(
            "--work",
            action="store_true",
            help="with CLUSTER_URI: also crawl (run a worker beside the coordinator)",
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if args:
            raise UsageError("crawlall takes no arguments: choose sources with --only and --skip")
        assert self.settings is not None and self.crawler_process is not None
        path = sources_file(self.settings)
        summary = RunSummary(started=utcnow(), sources_file=str(path))
        try:
            sources = load_sources(path, self.crawler_process.spider_loader)
            selected = self._select(sources, path, opts)
            self._check_settings(selected)
        except ConfigError as exc:
            self._config_error(summary, exc)
            return
        if self.settings.get("CLUSTER_URI"):
            self._run_cluster(summary, selected, path, opts)
            return
        if opts.work:
            raise UsageError("--work is for cluster mode (CLUSTER_URI)")
        lock = RunLock.from_settings(self.settings, "scrapy crawlall")
        try:
            lock.acquire()
        except LockHeld as exc:
            self._report(f"scrapy crawlall: {exc}; exiting with status {EXIT_LOCKED}")
            self.exitcode = EXIT_LOCKED
            return
        except ConfigError as exc:
            self._report(f"scrapy crawlall: {exc}")
            self.exitcode = EXIT_CONFIG
            return
        try:
            if not selected:
                logger.warning("No enabled source selected in %s: nothing to crawl", path)
            summary.sources = SourcesInTurn(self.crawler_process, selected).run()
            summary.finished = utcnow()
            self._finish(summary)
        finally:
            lock.release()

    def _run_cluster(
        self, summary: RunSummary, selected: list[Source], path: Path, opts: argparse.Namespace
    ) -> None:
        """The coordinator of a cluster run (aggregator.cluster.coordinator): the same checks,
        summary, last-run.json and exit statuses, from the workers' stats."""
        from aggregator.cluster.connect import cluster_server
        from aggregator.cluster.coordinator import ClusterLockHeld, Coordinator

        assert self.settings is not None and self.crawler_process is not None
        try:
            server = cluster_server(self.settings, "coordinator")
        except ConfigError as exc:
            self._config_error(summary, exc)
            return
        except StateUnavailable as exc:
            self._report(f"scrapy crawlall: {exc}")
            self.exitcode = EXIT_FAILED
            return
        coordinator = Coordinator(self.crawler_process, self.settings, server, selected)
        try:
            coordinator.acquire()
        except ClusterLockHeld as exc:
            self._report(f"scrapy crawlall: {exc}; exiting with status {EXIT_LOCKED}")
            self.exitcode = EXIT_LOCKED
            return
        helper = None
        try:
            if not selected:
                logger.warning("No enabled source selected in %s: nothing to crawl", path)
            if opts.work:
                helper = _start_helper_worker()
            summary.sources = coordinator.run()
            summary.finished = utcnow()
            self._finish(summary)
        finally:
            coordinator.release()
            if helper is not None:
                helper.terminate()
                helper.wait(60)

    def _check_settings(self, selected: list[Source]) -> None:
        assert self.settings is not None and self.crawler_process is not None
        if self.settings.get("CLUSTER_URI"):
            from aggregator.cluster.connect import check_cluster_settings

            check_cluster_settings(self.settings)
        check_run_settings(self.settings)
        for source in selected:
            spidercls = self.crawler_process.spider_loader.load(source.spider)
            try:
                check_spider_settings(self.settings, spidercls, source.spider_arguments())
            except ConfigError as exc:
                raise ConfigError(f"source {source.name!r}: {exc}") from exc

    @staticmethod
    def _select(sources: dict[str, Source], path: Path, opts: argparse.Namespace) -> list[Source]:
        try:
            only = parse_names("--only", opts.only)
            skip = parse_names("--skip", opts.skip)
            return select_sources(sources, only, skip)
        except ConfigError as exc:
            raise ConfigError(f"sources file {path}: {exc}") from exc

    def _finish(self, summary: RunSummary) -> None:
        assert self.settings is not None
        print(summary.table(), flush=True)
        try:
            written = write_last_run(state_dir(self.settings), summary)
        except OSError as exc:
            logger.error("Could not write last-run.json in %s: %s", state_dir(self.settings), exc)
        else:
            logger.info("Run summary written to %s", written)
        logger.info("crawlall finished: %s (exit status %s)", summary.status, summary.exit_status)
        self.exitcode = summary.exit_status

    def _config_error(self, summary: RunSummary, exc: ConfigError) -> None:
        """Say what is wrong; record it in last-run.json too, for monitoring, unless another
        run holds the lock (that run's summary is the one to keep)."""
        assert self.settings is not None
        self._report(f"scrapy crawlall: {exc}")
        self.exitcode = EXIT_CONFIG
        summary.error = str(exc)
        summary.finished = utcnow()
        try:
            with RunLock.from_settings(self.settings, "scrapy crawlall"):
                write_last_run(state_dir(self.settings), summary)
        except (LockHeld, ConfigError, OSError) as problem:
            logger.debug("last-run.json not updated: %s", problem)

    def _report(self, message: str) -> None:
        """An error for the operator: in the log, and on stderr when the log goes elsewhere
        (cron mails stderr)."""
        assert self.settings is not None
        logger.error("%s", message)
        if self.settings.get("LOG_FILE") or not self.settings.getbool("LOG_ENABLED"):
            print(message, file=sys.stderr, flush=True)


class SourcesInTurn:
    """Run sources one after another in the crawler process's reactor: each source's crawler is
    started when the previous one has finished, so the process's `start()` (which waits while
    any crawl is active) returns after the last. A source stopped by a shutdown signal (Ctrl-C,
    SIGTERM) ends the run: the sources after it are left for the next run."""

    def __init__(
        self,
        process: CrawlerProcessBase,
        sources: list[Source],
        spidercls: Callable[[str], type | None] | None = None,
    ):
        self.process = process
        self.sources = sources
        self.waiting = list(sources)
        self.results: dict[str, SourceResult] = {}
        self.stats: dict[str, dict[str, Any]] = {}  # each source's final stats
        # the spider class a source runs (by source name); default: its spider by name
        self.spidercls = spidercls or (lambda name: None)
        self.stopping = False

    def run(self) -> list[SourceResult]:
        if self.waiting:
            self._start_next()
            self.process.start()
        return [
            self.results.get(source.name) or SourceResult(source.name, source.spider)
            for source in self.sources
        ]

    def _start_next(self) -> None:
        if self.stopping or not self.waiting:
            return
        source = self.waiting.pop(0)
        arguments = source.spider_arguments()
        logger.info(
            "Source %s: crawling with spider %s, arguments %s",
            source.name,
            source.spider,
            arguments,
        )
        started, clock = utcnow(), time.monotonic()
        finished = partial(self._finished, source, started, clock)
        try:
            crawler = self.process.create_crawler(self.spidercls(source.name) or source.spider)
            outcome = self.process.crawl(crawler, **arguments)
        except Exception as exc:
            finished(None, exc)
            return
        _when_done(outcome, partial(finished, crawler))

    def _finished(
        self,
        source: Source,
        started: datetime,
        clock: float,
        crawler: Crawler | None,
        error: BaseException | None,
    ) -> None:
        if error is not None:
            logger.error(
                "Source %s: the crawl failed: %s",
                source.name,
                error,
                exc_info=(type(error), error, error.__traceback__),
            )
        try:
            self._record(source, started, clock, crawler, error)
        finally:
            self._start_next()

    def _record(
        self,
        source: Source,
        started: datetime,
        clock: float,
        crawler: Crawler | None,
        error: BaseException | None,
    ) -> None:
        stats = self.stats[source.name] = _final_stats(crawler)
        result = SourceResult.from_stats(
            source.name,
            source.spider,
            stats,
            started=started,
            elapsed=time.monotonic() - clock,
            error=None if error is None else f"{type(error).__name__}: {error}",
        )
        self.results[source.name] = result
        logger.info(
            "Source %s: %s; %s listing pages (%s failed), articles: %s new, %s already "
            "published, %s dropped, %s failed; %.1fs",
            source.name,
            result.status,
            result.listing_pages,
            result.listing_failed,
            result.new,
            result.already_published,
            result.dropped,
            result.failed,
            result.elapsed,
        )
        if result.status == INTERRUPTED:
            self.stopping = True
            if self.waiting:
                logger.warning(
                    "Shutting down: not crawling %s", ", ".join(s.name for s in self.waiting)
                )


def _start_helper_worker() -> subprocess.Popen:
    """`crawlall --work`: a `scrapy worker` beside the coordinator, with the same command-line
    options (settings, log); it stops when the coordinator is done."""
    passed = []
    argv = sys.argv[1:]
    for index, arg in enumerate(argv):
        if arg in ("-s", "--set", "--logfile", "-L", "--loglevel") and index + 1 < len(argv):
            passed += [arg, argv[index + 1]]
        elif arg.startswith(("--set=", "--logfile=", "--loglevel=")) or arg == "--nolog":
            passed.append(arg)
    return subprocess.Popen([sys.executable, "-m", "scrapy", "worker", *passed])


def _final_stats(crawler: Crawler | None) -> dict[str, Any]:
    """The crawl's stats; none when it failed before its stats collector existed."""
    try:
        stats = crawler.stats if crawler is not None else None
    except RuntimeError:  # Scrapy >= 2.18 raises until the crawl has started
        return {}
    return stats.get_stats() if stats is not None else {}  # earlier versions have None


def _when_done(outcome: Any, callback: Callable[[BaseException | None], None]) -> None:
    """Call `callback(error or None)` when a crawl ends: CrawlerProcess.crawl returns a
    Deferred, AsyncCrawlerProcess.crawl an asyncio Task (the default, asyncio reactor)."""
    if isinstance(outcome, Deferred):

        def fired(result: Any) -> None:
            callback(result.value if isinstance(result, Failure) else None)

        outcome.addBoth(fired)
        return

    def task_done(task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            callback(asyncio.CancelledError())
        else:
            callback(task.exception())

    outcome.add_done_callback(task_done)
