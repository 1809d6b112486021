"""SCHEDULER and DUPEFILTER_CLASS of cluster mode: scrapy-redis's, configured and subclassed
so that nothing is pickled, nothing is flushed, a lost request is not kept "seen", a request
that cannot be serialised is an error naming its URL, and a Redis outage is waited out (pops
return nothing, pushes are kept in memory and sent when Redis is back) instead of crashing.

`SeedScheduler` is the coordinator's: it only queues (a source's seeds), never hands a request
to its own engine."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from scrapy import Request
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.scheduler import Scheduler

from aggregator import stats as keys
from aggregator.cluster.connect import redis_client
from aggregator.cluster.keys import ClusterKeys
from aggregator.cluster.queue import LeasingQueue
from aggregator.cluster.serializer import UnserializableRequest
from aggregator.cluster.tracking import LeaseTracker, lease_tracker

__all__ = ["ClusterDupeFilter", "ClusterScheduler", "SeedScheduler"]

logger = logging.getLogger(__name__)


def _source(settings: Any, spider: Any) -> str:
    return settings.get("CLUSTER_SOURCE") or spider.name


FLUSH_DELAY = 0.05  # seconds: requests made meanwhile go to Redis together


class _Outage:
    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, exc: Exception) -> None:
        if self.since is None:
            self.since = time.monotonic()
            logger.error("Redis is unreachable (%s): waiting for it, requests kept", exc)

    def ok(self) -> None:
        if self.since is not None:
            logger.warning("Redis is back after %.1fs", time.monotonic() - self.since)
            self.since = None


class ClusterDupeFilter(RFPDupeFilter):
    """One fingerprint set per source and run (the coordinator deletes them at the start of a
    run); never cleared by a worker."""

    @classmethod
    def from_spider(cls, spider: Any) -> ClusterDupeFilter:
        settings = spider.crawler.settings
        key = ClusterKeys(settings.get("CLUSTER_PREFIX") or "aggregator").seen(
            _source(settings, spider)
        )
        return cls(redis_client(settings), key=key, debug=settings.getbool("DUPEFILTER_DEBUG"))

    def request_seen(self, request: Request) -> bool:
        try:
            return super().request_seen(request)
        except (redis.ConnectionError, redis.TimeoutError):
            return False  # queued again at worst; the claims keep posts single

    def close(self, reason: str = "") -> None:
        pass

    def clear(self) -> None:
        pass


class ClusterScheduler(Scheduler):
    @classmethod
    def from_crawler(cls, crawler: Any) -> ClusterScheduler:
        settings = crawler.settings
        serializer = settings.get("SCHEDULER_SERIALIZER")
        instance = cls(
            server=redis_client(settings),
            persist=True,
            flush_on_start=False,
            queue_cls=settings.get("SCHEDULER_QUEUE_CLASS"),
            dupefilter_cls=settings.get("DUPEFILTER_CLASS"),
            idle_before_close=0,
            serializer=__import__(serializer, fromlist=["loads"]),
        )
        instance.stats = crawler.stats
        instance.tracker = lease_tracker(crawler)  # which leased requests are done
        instance.tracker.scheduler = instance
        # (payload, priority, fingerprint, request) not yet in Redis: sent together, soon
        # (FLUSH_DELAY), or kept in order while Redis is away
        instance.buffer = []
        instance._flush_call = None
        instance.outage = _Outage()
        return instance

    tracker: LeaseTracker
    buffer: list[tuple[bytes, int, str | None, Request]]
    _flush_call: Any
    outage: _Outage

    def open(self, spider: Any) -> None:
        super().open(spider)
        assert isinstance(self.queue, LeasingQueue)

    def close(self, reason: str) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        if not self.flush_buffer():
            logger.error(
                "Redis is unreachable at close: %d request(s) could not be queued",
                len(self.buffer),
            )

    def enqueue_request(self, request: Request) -> bool:
        """Encode the request now (an error naming its URL if it cannot be queued) and send it
        with the others made meanwhile: a listing's requests go in one round trip. Whether it
        was seen this run is known when it is sent (then it is logged and counted as
        filtered)."""
        if self.tracker.handed_back(request):
            return True  # popped already (LeaseTracker.wake): next_request gives it
        try:
            data = self.queue._encode_request(request)
        except (UnserializableRequest, ValueError) as exc:
            # ValueError: Request.to_dict for a callback that is not a method of the spider
            logger.error("Cannot queue request <%s>: %s", request.url, exc)
            self.stats.inc_value(keys.CLUSTER_UNSERIALIZABLE)
            return False
        fingerprint = None if request.dont_filter else self.df.request_fingerprint(request)
        self.buffer.append((data, request.priority, fingerprint, request))
        self._flush_later()
        return True

    def _flush_later(self) -> None:
        if self._flush_call is None or not self._flush_call.active():
            from twisted.internet import reactor

            self._flush_call = reactor.callLater(FLUSH_DELAY, self.flush_buffer)

    def flush_buffer(self) -> bool:
        """Send the requests not yet in Redis, in order, in one round trip; whether none is
        left (False: Redis is away; they are kept and sent when it is back)."""
        if not self.buffer:
            return True
        entries = list(self.buffer)
        try:
            queued = self.queue.push_many([entry[:3] for entry in entries])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.outage.failed(exc)
            return False
        self.outage.ok()
        del self.buffer[: len(entries)]
        for (_, _, _, request), fresh in zip(entries, queued, strict=True):
            if fresh:
                self.stats.inc_value("scheduler/enqueued/redis")
            else:
                self.df.log(request, self.spider)
        return True

    def next_request(self) -> Request | None:
        if self.tracker.local:
            return self.tracker.local.popleft()
        if self.tracker.stopping or self.tracker.closing:
            return None
        return self.pop_leased()

    def pop_leased(self) -> Request | None:
        """A request leased from the source's queue (one Lua call), registered with the
        tracker; None when the queue is empty or Redis is away."""
        if not self.flush_buffer():
            return None
        try:
            request = self.queue.pop()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.outage.failed(exc)
            return None
        self.outage.ok()
        if request is None:
            return None
        self.stats.inc_value("scheduler/dequeued/redis")
        self.tracker.leased(request)
        return request

    def has_pending_requests(self) -> bool:
        if self.buffer or self.tracker.local:
            return True
        try:
            return len(self.queue) > 0
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.outage.failed(exc)
            return True

    def reconcile(self, final: bool = False) -> int:
        """Ack the leases of requests Scrapy has finished with (LeaseTracker), renew the others;
        the requests kept during an outage go first (a lease is never acked before what its
        callback scheduled is in Redis). `final`: the crawl is over, so every request that
        started is finished; one that never started goes back to its queue. How many were
        acked."""
        if not self.flush_buffer():
            return 0
        tracker = self.tracker
        try:
            if final:
                tracker.release(tracker.unstarted())
                done = list(tracker.leases)
            else:
                done = tracker.finished()
            self.queue.ack(done)
            tracker.forget(done)
            self.queue.renew(list(tracker.leases))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.outage.failed(exc)
            return 0
        return len(done)

    def in_flight(self) -> int:
        return len(self.tracker.leases)


class SeedScheduler(ClusterScheduler):
    """The coordinator's: what the source's spider starts with (its `start()`: pending
    retries, listings) goes to the source's queue; its own engine gets nothing, so the crawl
    ends once the seeds are queued."""

    def next_request(self) -> Request | None:
        self.flush_buffer()
        return None

    def has_pending_requests(self) -> bool:
        return bool(self.buffer) and not self.flush_buffer()
