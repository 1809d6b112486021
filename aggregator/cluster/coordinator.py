"""`scrapy crawlall` with CLUSTER_URI: the coordinator.

It takes the run lock in Redis, records the run (its id and each selected source's spider and
arguments) for the workers, and queues each source's seeds by crawling it exactly as a local
crawl would start (the source's spider's `start()`: pending retries, then listings, through the
claim middleware and, for what a spider yields as items at once, the pipeline) with a scheduler
that only queues (aggregator.cluster.scheduler.SeedScheduler). Then it waits until every queue
is empty and no request is leased, putting back the requests of dead workers meanwhile, marks
the run finishing, waits for the workers' final stats and sums them per source (with the
seeding crawl's) into the usual SourceResult rows.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

import redis

from aggregator.cluster.keys import ClusterKeys
from aggregator.cluster.queue import requeue_expired
from aggregator.cluster.worker import cluster_spider, stats_snapshot
from aggregator.ops.summary import INTERRUPTED, SourceResult, utcnow

if TYPE_CHECKING:
    from scrapy.crawler import CrawlerProcessBase
    from scrapy.settings import Settings

    from aggregator.ops.sources import Source

__all__ = ["RELEASE_LOCK_LUA", "ClusterLockHeld", "Coordinator"]

logger = logging.getLogger(__name__)

RELEASE_LOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
RENEW_LOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class ClusterLockHeld(RuntimeError):
    pass


def merge_stats(reports: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for stats in reports:
        for key, value in stats.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


class Coordinator:
    def __init__(
        self,
        process: CrawlerProcessBase,
        settings: Settings,
        server: redis.Redis,
        sources: list[Source],
        command: str = "scrapy crawlall",
    ):
        self.process = process
        self.settings = settings
        self.server = server
        self.sources = sources
        self.keys = ClusterKeys(settings.get("CLUSTER_PREFIX") or "aggregator")
        self.lease = settings.getfloat("CLUSTER_LEASE", 60.0)
        self.run_id = uuid.uuid4().hex[:16]
        self.holder = json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": command,
                "started": utcnow().isoformat(timespec="seconds"),
                "run": self.run_id,
            }
        )
        self.interrupted = False
        self._down = False

    # --- the lock ----------------------------------------------------------------------------
    def acquire(self) -> None:
        ttl = int(max(self.lease * 3, 30) * 1000)
        if not self.server.set(self.keys.lock, self.holder, nx=True, px=ttl):
            raw = self.server.get(self.keys.lock) or b"{}"
            try:
                holder = json.loads(raw)
            except ValueError:
                holder = {}
            holder = holder if isinstance(holder, dict) else {}
            raise ClusterLockHeld(
                f"another run holds the cluster lock {self.keys.lock}: pid {holder.get('pid', '?')}"
                f" on host {holder.get('host', '?')} ({holder.get('command', '?')}), started "
                f"{holder.get('started', '?')}"
            )

    def _renew(self) -> None:
        ttl = int(max(self.lease * 3, 30) * 1000)
        self.server.eval(RENEW_LOCK_LUA, 1, self.keys.lock, self.holder, ttl)

    def release(self) -> None:
        try:
            self.server.eval(RELEASE_LOCK_LUA, 1, self.keys.lock, self.holder)
        except redis.RedisError as exc:
            logger.error("Could not release the cluster lock: %s", exc)

    # --- the run -----------------------------------------------------------------------------
    def _patiently(self, call: Any) -> Any:
        """`call()`, waiting out a Redis outage (up to CLUSTER_RETRY_MAX_WAIT seconds)."""
        deadline = time.monotonic() + self.settings.getfloat("CLUSTER_RETRY_MAX_WAIT", 300.0)
        while True:
            try:
                result = call()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise
                self._redis_down(exc)
                continue
            self._redis_up()
            return result

    def _redis_down(self, exc: Exception) -> None:
        """Log an outage once, then wait a second before the caller tries again."""
        if not self._down:
            logger.error("Redis is unreachable (%s): waiting for it", exc)
            self._down = True
        time.sleep(1)

    def _redis_up(self) -> None:
        if self._down:
            logger.warning("Redis is back: the run carries on")
            self._down = False

    def _set_run(self, status: str) -> None:
        self._patiently(lambda: self._write_run(status))

    def _write_run(self, status: str) -> None:
        sources = {
            s.name: {"spider": s.spider, "arguments": s.spider_arguments()} for s in self.sources
        }
        record = {"id": self.run_id, "status": status, "sources": sources, "holder": self.holder}
        self.server.set(self.keys.run, json.dumps(record, ensure_ascii=False))

    def run(self) -> list[SourceResult]:
        started, clock = utcnow(), time.monotonic()
        for source in self.sources:
            self.server.delete(self.keys.seen(source.name))
        self._set_run("seeding")
        seeds = self._seed()
        self.interrupted = any(result.status == INTERRUPTED for result, _ in seeds.values())
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            if not self.interrupted:
                self._set_run("running")
                logger.info("Run %s: seeds queued; waiting for the workers", self.run_id)
                self._wait_drained()
            self._set_run("finishing")
            reports = self._final_reports()
            self._set_run("interrupted" if self.interrupted else "done")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        elapsed = time.monotonic() - clock
        results = []
        for source in self.sources:
            seed, seed_stats = seeds[source.name]
            stats = merge_stats([seed_stats, *reports.get(source.name, [])])
            finished = seed.finish_reason or "finished"
            stats["finish_reason"] = "shutdown" if self.interrupted else finished
            results.append(
                SourceResult.from_stats(
                    source.name,
                    source.spider,
                    stats,
                    started=started,
                    elapsed=elapsed,
                    error=seed.error,
                )
            )
        return results

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True

    def _seed(self) -> dict[str, tuple[SourceResult, dict[str, Any]]]:
        """Queue every source's seeds: each source crawled in turn (as crawlall does) by its
        spider with the SeedScheduler; the seeding crawls' results, with their stats."""
        from aggregator.commands.crawlall import SourcesInTurn

        spiders = {
            source.name: cluster_spider(
                self.process.spider_loader.load(source.spider),
                source.name,
                self.run_id,
                f"coordinator-{self.run_id}",
                seeding=True,
            )
            for source in self.sources
        }
        crawl = SourcesInTurn(self.process, self.sources, spidercls=spiders.get)
        return {
            result.name: (result, stats_snapshot(crawl.stats.get(result.name, {})))
            for result in crawl.run()
        }

    def _counts(self) -> tuple[int, int]:
        pipe = self.server.pipeline(transaction=True)
        for source in self.sources:
            pipe.zcard(self.keys.queue(source.name))
        pipe.zcard(self.keys.inflight)
        counts = pipe.execute()
        return sum(counts[:-1]), counts[-1]

    def _wait_drained(self) -> None:
        empty_since: float | None = None
        last_log = time.monotonic()
        while not self.interrupted:
            try:
                self._renew()
                requeue_expired(self.server, self.keys)
                queued, in_flight = self._counts()
            except redis.RedisError as exc:
                self._redis_down(exc)
                continue
            self._redis_up()
            if queued == 0 and in_flight == 0:
                if empty_since is None:
                    empty_since = time.monotonic()
                elif time.monotonic() - empty_since >= 1.0:
                    return
            else:
                empty_since = None
            if time.monotonic() - last_log >= 30:
                last_log = time.monotonic()
                logger.info("Run %s: %d queued, %d in flight", self.run_id, queued, in_flight)
            time.sleep(0.25)

    def _final_reports(self) -> dict[str, list[dict[str, Any]]]:
        """Each source's stats reports, once every worker that took part sent its final one
        (or stopped heartbeating)."""
        deadline = time.monotonic() + self.lease + 10
        while True:
            reports, waiting = self._patiently(self._read_reports)
            if not waiting or time.monotonic() > deadline:
                if waiting:
                    logger.warning("No final stats from %s: using their last", ", ".join(waiting))
                return reports
            time.sleep(0.25)

    def _read_reports(self) -> tuple[dict[str, list[dict[str, Any]]], set[str]]:
        """Each source's reports (one per worker process: a worker restarted under the same id
        reports apart from its previous life) and the processes still expected to send a
        final one (alive: heartbeating, as that same process)."""
        alive = set()
        now = time.time()
        for raw in self.server.hvals(self.keys.workers):
            try:
                record = json.loads(raw)
                if now - float(record["heartbeat"]) < self.lease:
                    alive.add(f"{record['id']}/{record['incarnation']}")
            except (ValueError, KeyError, TypeError):
                continue
        reports: dict[str, list[dict[str, Any]]] = {}
        waiting: set[str] = set()
        for source in self.sources:
            for reporter, raw in self.server.hgetall(
                self.keys.stats(self.run_id, source.name)
            ).items():
                try:
                    report = json.loads(raw)
                    stats = report["stats"]
                    if not isinstance(stats, dict):
                        continue
                except (ValueError, KeyError, TypeError):
                    continue
                name = reporter.decode("utf-8", "replace")
                if not report.get("final") and name in alive:
                    waiting.add(name)
                reports.setdefault(source.name, []).append(stats)
        return reports, waiting
