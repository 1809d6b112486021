"""`scrapy worker`: one worker of the cluster.

It watches the run record the coordinator writes (`P:run`). For each source of a running run
it starts a crawler of that source's spider (its arguments from the run record, the project's
settings, pipeline and crawl state) whose scheduler leases requests from the source's queue
and whose spider makes no seeds of its own (the coordinator queued them). One crawler per
source keeps each source's spider state and stats apart, so the coordinator can sum each
source's stats over the workers. Every crawler claims articles in the worker's name
(STATE_CLAIM_OWNER = the worker id).

Every tick (0.5 s) the worker acks the leases of requests its crawlers have finished with
(aggregator.cluster.tracking follows each request through Scrapy's signals and middlewares),
renews the others, writes its heartbeat and its crawlers' stats, and puts back the requests of
dead workers whose leases expired. When the coordinator marks the run finishing, the crawlers
close as soon as they are idle and report their final stats.

SIGTERM/Ctrl-C: the requests a crawler leased but has not started (waiting for their rate slot)
go back to their queue at once, then every crawler stops gracefully (Scrapy's own stop: the
requests it is working on are finished, their items written, what their callbacks make is
queued), the worker says goodbye. A second signal stops at once (what was in
flight goes back to the queue when its lease expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

import redis
from scrapy import signals
from scrapy.exceptions import DontCloseSpider
from scrapy.utils.ossignal import install_shutdown_handlers
from twisted.internet.defer import Deferred

from aggregator.cluster.keys import ClusterKeys
from aggregator.cluster.queue import incarnation, requeue_expired
from aggregator.cluster.tracking import lease_tracker

if TYPE_CHECKING:
    from scrapy.crawler import Crawler, CrawlerProcessBase
    from scrapy.settings import Settings

__all__ = [
    "ClusterWorker",
    "claim_lease",
    "cluster_settings",
    "cluster_spider",
    "read_run",
    "stats_snapshot",
]

logger = logging.getLogger(__name__)

TICK = 0.5
POKE = 0.1  # an idle engine looks at its (Redis) queue only every 5 s unless woken


def claim_lease(settings: Settings) -> float:
    """STATE_CLAIM_LEASE in a cluster: a little under CLUSTER_LEASE. A claim is taken while a
    leased request's callback runs, so it runs out before that request can be put back after
    its worker died: whoever does the request again can claim its articles again. (A claim
    running out while its request waits in the queue costs at most one more fetch of that
    article, never a second post: the post is the same bytes at the same name, S3 refuses an
    overwrite.)"""
    lease = settings.getfloat("CLUSTER_LEASE", 60.0)
    return min(settings.getfloat("STATE_CLAIM_LEASE"), max(lease - 2 * TICK, lease / 2))


def cluster_settings(settings: Settings, worker_id: str, *, seeding: bool = False) -> None:
    """What makes a crawler a cluster crawler: scrapy-redis's scheduler and dupefilter (the
    coordinator's seeding crawls only queue), our leasing queue and JSON serializer, never
    flushed; claims in the worker's name; the cluster-wide rate limit."""
    scheduler = "SeedScheduler" if seeding else "ClusterScheduler"
    settings.set("SCHEDULER", f"aggregator.cluster.scheduler.{scheduler}", "cmdline")
    settings.set("DUPEFILTER_CLASS", "aggregator.cluster.scheduler.ClusterDupeFilter", "cmdline")
    settings.set("SCHEDULER_QUEUE_CLASS", "aggregator.cluster.queue.LeasingQueue", "cmdline")
    settings.set("SCHEDULER_SERIALIZER", "aggregator.cluster.serializer", "cmdline")
    settings.set("SCHEDULER_PERSIST", True, "cmdline")
    settings.set("CLUSTER_WORKER_ID", worker_id, "cmdline")
    settings.set("STATE_CLAIM_OWNER", worker_id, "cmdline")
    settings.set("STATE_CLAIM_LEASE", claim_lease(settings), "cmdline")
    extensions = dict(settings.getdict("EXTENSIONS"))
    extensions["aggregator.cluster.tracking.LeaseTracker"] = 0  # the scheduler's and the rest's
    settings.set("EXTENSIONS", extensions, "cmdline")
    middlewares = dict(settings.getdict("DOWNLOADER_MIDDLEWARES"))
    middlewares["aggregator.cluster.ratelimit.ClusterRateLimit"] = 50
    if not seeding:
        # the innermost: a stopping worker drops here what it put back in the queue
        middlewares["aggregator.cluster.tracking.LeaseGate"] = 1000
        # the outermost: what the scraper gets from each leased request's callback
        spider_middlewares = dict(settings.getdict("SPIDER_MIDDLEWARES"))
        spider_middlewares["aggregator.cluster.tracking.LeaseTracking"] = 0
        settings.set("SPIDER_MIDDLEWARES", spider_middlewares, "cmdline")
    settings.set("DOWNLOADER_MIDDLEWARES", middlewares, "cmdline")


def cluster_spider(
    spidercls: type,
    source: str,
    run_id: str,
    worker_id: str,
    *,
    seeding: bool = False,
    mixin: type | None = None,
) -> type:
    """The source's spider for a cluster crawl. Its crawler gets the cluster settings
    (`cluster_settings`, through the spider's `update_settings` hook: every crawler's own copy
    of the settings) and knows its source (CLUSTER_SOURCE: which queue, which fingerprint set)
    and run; `mixin` changes what the spider does (a worker's serves the queue)."""

    def update_settings(cls: type, settings: Settings) -> None:
        spidercls.update_settings.__func__(cls, settings)  # type: ignore[attr-defined]
        cluster_settings(settings, worker_id, seeding=seeding)
        settings.set("CLUSTER_SOURCE", source, "cmdline")
        settings.set("CLUSTER_RUN", run_id, "cmdline")

    bases = (mixin, spidercls) if mixin is not None else (spidercls,)
    attributes = {"update_settings": classmethod(update_settings)}
    return type(f"Cluster{spidercls.__name__}", bases, attributes)


def read_run(server: redis.Redis, keys: ClusterKeys) -> dict[str, Any] | None:
    """The run record, checked (it comes from Redis: untrusted)."""
    raw = server.get(keys.run)
    if raw is None:
        return None
    try:
        run = json.loads(raw)
    except ValueError:
        return None
    if not (
        isinstance(run, dict)
        and isinstance(run.get("id"), str)
        and isinstance(run.get("status"), str)
        and isinstance(run.get("sources"), dict)
    ):
        return None
    sources = {}
    for name, source in run["sources"].items():
        if (
            isinstance(source, dict)
            and isinstance(source.get("spider"), str)
            and isinstance(source.get("arguments"), dict)
            and all(isinstance(v, str) for v in source["arguments"].values())
        ):
            sources[name] = source
    run["sources"] = sources
    return run


def stats_snapshot(stats: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a crawl's stats (and its finish reason), JSON-safe."""
    out: dict[str, Any] = {}
    for key, value in stats.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[key] = value
    if isinstance(stats.get("finish_reason"), str):
        out["finish_reason"] = stats["finish_reason"]
    return out


def _scheduler(crawler: Crawler) -> Any:
    """The crawl's ClusterScheduler, once its engine has built it (it registers with the
    crawl's LeaseTracker)."""
    return lease_tracker(crawler).scheduler


COMPONENT_SETTINGS = (
    "ITEM_PIPELINES",
    "SPIDER_MIDDLEWARES",
    "DOWNLOADER_MIDDLEWARES",
    "EXTENSIONS",
    "DOWNLOAD_HANDLERS",
)


def warm_up(settings: Settings) -> int:
    """Import the components a crawl builds (pipelines, middlewares, extensions, download
    handlers), as the worker starts rather than in its first run: about half a second of CPU
    per process that a long-lived worker pays once either way, but inside a run it competes
    with the crawling on the machine. How many were imported."""
    from scrapy.utils.misc import load_object

    imported = 0
    for name in COMPONENT_SETTINGS:
        paths = {**settings.getdict(f"{name}_BASE"), **settings.getdict(name)}
        for path, value in paths.items():
            if name == "DOWNLOAD_HANDLERS" and path not in ("http", "https"):
                continue
            target = value if name == "DOWNLOAD_HANDLERS" else path
            if not isinstance(target, str) or value is None:
                continue
            try:
                load_object(target)
            except Exception as exc:  # the crawl that builds it reports it properly
                logger.debug("Not imported ahead: %s (%s)", target, exc)
                continue
            imported += 1
    return imported


class _SourceCrawl:
    def __init__(self, name: str, crawler: Crawler):
        self.name = name
        self.crawler = crawler
        self.done = False


class ClusterWorker:
    def __init__(
        self,
        process: CrawlerProcessBase,
        settings: Settings,
        server: redis.Redis,
        *,
        until_idle: float | None = None,
        worker_id: str | None = None,
    ):
        self.process = process
        self.settings = settings
        self.server = server
        self.keys = ClusterKeys(settings.get("CLUSTER_PREFIX") or "aggregator")
        self.lease = settings.getfloat("CLUSTER_LEASE", 60.0)
        self.until_idle = until_idle
        self.id = (
            worker_id
            or settings.get("CLUSTER_WORKER_ID")
            or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self.started = time.time()
        self.run_id: str | None = None
        self.crawls: dict[str, _SourceCrawl] = {}
        self.closing_runs: set[str] = set()
        self.stopping = False
        self.idle_since = time.monotonic()
        self.done_requests = 0
        self._last_reap = 0.0
        self._down = False
        self._loop: Any = None
        self._poke: Any = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Run until stopped (SIGTERM/Ctrl-C) or idle for `until_idle` seconds."""
        from twisted.internet import reactor, task

        warm_up(self.settings)
        self._loop = task.LoopingCall(self.tick)
        reactor.callWhenRunning(self._loop.start, TICK, now=True)
        self._poke = task.LoopingCall(self.poke)
        reactor.callWhenRunning(self._poke.start, POKE, now=False)
        install_shutdown_handlers(self._on_signal)
        logger.info("Cluster worker %s started", self.id)
        # our handlers, not Scrapy's: a stop must also stop the worker's own loops and then
        # the reactor, which stays up between runs (stop_after_crawl=False)
        self.process.start(stop_after_crawl=False, install_signal_handlers=False)
        self._goodbye()

    def _on_signal(self, signum: int, _: Any) -> None:
        from twisted.internet import reactor

        if self.stopping:
            install_shutdown_handlers(signal.SIG_IGN)
            reactor.callFromThread(self._stop_now, signum)
        else:
            self.stopping = True
            reactor.callFromThread(self._stop, f"received {signal.Signals(signum).name}")

    def _stop_now(self, signum: int) -> None:
        from twisted.internet import reactor

        logger.warning(
            "Received %s again: stopping now; what was in flight goes back to the queue when "
            "its lease expires",
            signal.Signals(signum).name,
        )
        reactor.stop()

    def _stop(self, why: str) -> None:
        """Stop every crawl gracefully (in-flight requests finished), then the reactor."""
        from twisted.internet import reactor

        logger.info("Cluster worker %s stopping (%s)", self.id, why)
        self.stopping = True
        for loop in (self._loop, self._poke):
            if loop is not None and loop.running:
                loop.stop()

        def stop_reactor(_: Any = None) -> None:
            for crawl in self.crawls.values():
                with contextlib.suppress(redis.RedisError):
                    self._reconcile_final(crawl)
            if reactor.running:
                reactor.stop()

        for crawl in self.crawls.values():
            # requests not started go back to their queues now, not after CLUSTER_LEASE
            try:
                released = lease_tracker(crawl.crawler).stop()
            except redis.RedisError as exc:
                logger.error("Could not put back the requests not started: %s", exc)
            else:
                if released:
                    logger.info("Source %s: %d request(s) back in the queue", crawl.name, released)
        stopped = self.process.stop()  # a Deferred, or a coroutine (Scrapy >= 2.14 async)
        if isinstance(stopped, Deferred):
            stopped.addBoth(stop_reactor)
        elif asyncio.iscoroutine(stopped):
            asyncio.ensure_future(stopped).add_done_callback(stop_reactor)
        else:
            stop_reactor()

    def _goodbye(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.server.hdel(self.keys.workers, self.id)
        logger.info("Cluster worker %s stopped (%d requests done)", self.id, self.done_requests)

    # --- the tick ----------------------------------------------------------------------------
    def tick(self) -> None:
        try:
            self._tick()
        except redis.RedisError as exc:
            if not self._down:
                logger.error("Redis is unreachable (%s): the worker waits for it", exc)
                self._down = True
            return
        except Exception:
            logger.exception("Cluster worker tick failed")
            return
        if self._down:
            logger.warning("Redis is back: the worker carries on")
            self._down = False

    def _tick(self) -> None:
        for crawl in list(self.crawls.values()):
            self._reconcile(crawl)
        run = None if self.stopping else read_run(self.server, self.keys)
        if run is not None and run["status"] == "running" and run["id"] != self.run_id:
            self._start_run(run)
        if run is not None and run["id"] == self.run_id and run["status"] != "running":
            self.closing_runs.add(run["id"])
        self._heartbeat()
        if time.monotonic() - self._last_reap > 2:
            self._last_reap = time.monotonic()
            requeue_expired(self.server, self.keys)
        if any(not c.done for c in self.crawls.values()):
            self.idle_since = time.monotonic()
        elif (
            self.until_idle is not None
            and time.monotonic() - self.idle_since >= self.until_idle
            and not self.stopping
        ):
            self._stop(f"idle for {self.until_idle}s")

    def poke(self) -> None:
        """Have idle crawls look at their queues (one pop each: a Lua script)."""
        for crawl in self.crawls.values():
            if crawl.done:
                continue
            try:
                lease_tracker(crawl.crawler).wake()
            except redis.RedisError:
                return  # the tick says so

    def _reconcile(self, crawl: _SourceCrawl) -> None:
        scheduler = _scheduler(crawl.crawler)
        if scheduler is None:
            return
        self.done_requests += scheduler.reconcile()
        if not crawl.done:
            self._report(crawl, final=False)

    def _heartbeat(self) -> None:
        record = {
            "id": self.id,
            "incarnation": incarnation(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "heartbeat": time.time(),
            "done": self.done_requests,
            "run": self.run_id,
            "in_flight": sum(
                len(lease_tracker(c.crawler).leases) for c in self.crawls.values() if not c.done
            ),
            "sources": sorted(n for n, c in self.crawls.items() if not c.done),
        }
        self.server.hset(self.keys.workers, self.id, json.dumps(record))

    # --- crawls ------------------------------------------------------------------------------
    def _start_run(self, run: dict[str, Any]) -> None:
        self.run_id = run["id"]
        self.crawls = {}
        logger.info("Run %s: serving sources %s", run["id"], ", ".join(run["sources"]))
        for name, source in run["sources"].items():
            try:
                self._start_crawl(run["id"], name, source)
            except Exception:
                logger.exception("Run %s: cannot crawl source %s", run["id"], name)

    def _start_crawl(self, run_id: str, name: str, source: dict[str, Any]) -> None:
        from aggregator.commands.crawlall import _when_done

        spidercls = self.process.spider_loader.load(source["spider"])
        worker = self
        mixin = type(
            "ServingSpider",
            (ClusterSpiderMixin,),
            {"cluster_may_close": staticmethod(lambda: worker.may_close(run_id))},
        )
        crawler = self.process.create_crawler(
            cluster_spider(spidercls, name, run_id, self.id, mixin=mixin)
        )
        crawl = _SourceCrawl(name, crawler)
        self.crawls[name] = crawl

        def finished(error: BaseException | None) -> None:
            crawl.done = True
            if error is not None:
                logger.error("Source %s: the crawl failed: %s", name, error)
            try:
                self._reconcile_final(crawl)
            except redis.RedisError as exc:
                logger.error("Could not report the final stats of %s: %s", name, exc)

        _when_done(self.process.crawl(crawler, **source["arguments"]), finished)

    def _reconcile_final(self, crawl: _SourceCrawl) -> None:
        scheduler = _scheduler(crawl.crawler)
        if scheduler is not None:
            self.done_requests += scheduler.reconcile(final=True)
        self._report(crawl, final=True)

    def _report(self, crawl: _SourceCrawl, final: bool) -> None:
        try:
            stats = crawl.crawler.stats.get_stats()
        except (RuntimeError, AttributeError):
            stats = {}
        value = json.dumps({"stats": stats_snapshot(stats), "final": final, "at": time.time()})
        assert self.run_id is not None
        reporter = f"{self.id}/{incarnation()}"  # one report per process, not per worker id
        self.server.hset(self.keys.stats(self.run_id, crawl.name), reporter, value)

    def may_close(self, run_id: str) -> bool:
        return self.stopping or run_id in self.closing_runs or run_id != self.run_id


class ClusterSpiderMixin:
    """Mixed into a source's spider in a worker: no seeds of its own (the coordinator queued
    them), and no closing while the run goes on (the queue may be empty only for now)."""

    cluster_may_close: Any

    async def start(self) -> Any:
        return
        yield

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Any:
        spider = super().from_crawler(crawler, *args, **kwargs)  # type: ignore[misc]
        crawler.signals.connect(spider._cluster_idle, signal=signals.spider_idle)
        return spider

    def _cluster_idle(self) -> None:
        if not self.cluster_may_close():
            raise DontCloseSpider
        lease_tracker(self.crawler).closing = True  # it closes now: pop nothing more
