"""When a leased request is completely done, told by Scrapy's public API.

A worker may ack a request's lease only once Scrapy is finished with it: downloaded, every
request its callback (or errback) made handed to the scheduler (so in Redis), every item it
made through the pipeline (published, or kept pending). No signal marks that moment, so the
`LeaseTracker` of a crawler follows each leased request through the documented hooks:

- the scheduler registers it when it pops it (`leased`), and wraps its errback (see below);
- `request_reached_downloader`: it passed the downloader middlewares (it is *started*; a
  stopping worker puts back only requests that are not);
- `request_scheduled` of a request the downloader middlewares made of it (a redirect, a
  retry: same lease in its meta, no response yet): it is done, once that one is queued;
- `response_received`: its output will come through the spider middlewares, where
  `LeaseTracking` (the outermost spider middleware) counts what the callback yields: each
  request until `request_scheduled` says the engine handed it to the scheduler, each item
  until `item_scraped`, `item_dropped` or `item_error` names its response;
- a download failure goes to the errback without the spider middlewares, so the errback is
  wrapped when the request is leased and counts its output the same way; the wrapper calls the
  original errback, or re-raises the failure when there is none (what Scrapy does then);
- `spider_error`: the callback or errback raised and no middleware took the exception: no
  more output will come.

A lease is done when its output is over and nothing it made is still on its way. Signals are
sent and the engine hands requests to the scheduler synchronously, and acks happen on the
worker's tick, never inside one of these calls, so "done" is never seen half-way.

The tracker also wakes an idle engine when the queue may have work (`wake`: the engine asks
its scheduler by itself only when a request ends or every 5 s), and, when the worker stops,
puts the requests that have not started back in their queue at once (`stop`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy import Request, signals
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.utils.spider import iterate_spider_output

from aggregator import stats as keys

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from twisted.python.failure import Failure

__all__ = [
    "LEASE_META",
    "PARENT_META",
    "LeaseGate",
    "LeaseTracker",
    "LeaseTracking",
    "lease_tracker",
    "original_errback",
]

logger = logging.getLogger(__name__)

LEASE_META = "cluster_lease"  # the lease of a request this worker popped
PARENT_META = "cluster_parent"  # the lease of the request whose callback made this one


def lease_tracker(crawler: Crawler) -> LeaseTracker:
    """The crawler's tracker: an extension (cluster mode adds it to EXTENSIONS), so it exists
    before the scheduler and the middlewares that use it are built, and lives with the
    crawler."""
    tracker = crawler.get_extension(LeaseTracker)
    if tracker is None:
        raise RuntimeError(
            "the lease tracker (aggregator.cluster.tracking.LeaseTracker) is not in EXTENSIONS; "
            "cluster mode needs it"
        )
    return tracker


def original_errback(request: Request) -> Callable[[Failure], Any] | None:
    """The request's own errback, without the tracker's wrapper (what is queued)."""
    errback = request.errback
    return getattr(errback, "cluster_original", errback)


def lease_of(obj: Any) -> str | None:
    """The lease of a request, of a response or failure through its request."""
    request = obj if isinstance(obj, Request) else getattr(obj, "request", None)
    meta = getattr(request, "meta", None) if request is not None else None
    return meta.get(LEASE_META) if meta else None


@dataclass
class _Lease:
    request: Request
    started: bool = False  # reached the downloader
    answered: bool = False  # a response came: its output goes through the spider middlewares
    over: bool = False  # no more output will come
    pending: int = 0  # output streams open + requests not yet scheduled + items in the pipeline

    @property
    def done(self) -> bool:
        return self.over and self.pending == 0


class LeaseTracker:
    @classmethod
    def from_crawler(cls, crawler: Crawler) -> LeaseTracker:
        return cls(crawler)

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.leases: dict[str, _Lease] = {}
        self.local: collections.deque[Request] = collections.deque()  # popped by `wake`
        self.scheduler: Any = None  # the ClusterScheduler, once the engine has built it
        self.stopping = False  # the worker is stopping: release what has not started
        self.closing = False  # the crawl may close: pop nothing more
        self.released: set[str] = set()  # leases put back in the queue by `release`
        connect = crawler.signals.connect
        connect(self._reached, signal=signals.request_reached_downloader)
        connect(self._answered, signal=signals.response_received)
        connect(self._scheduled, signal=signals.request_scheduled)
        for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
            connect(self._item_done, signal=signal)
        connect(self._spider_error, signal=signals.spider_error)

    # --- what the scheduler tells --------------------------------------------------------------
    def leased(self, request: Request) -> None:
        lease = request.meta[LEASE_META]
        self.leases[lease] = _Lease(request)
        self._wrap_errback(request, lease)

    def finished(self) -> list[str]:
        return [lease for lease, state in self.leases.items() if state.done]

    def unstarted(self) -> list[str]:
        return [lease for lease, state in self.leases.items() if not state.started]

    def forget(self, leases: Iterable[str]) -> None:
        for lease in leases:
            self.leases.pop(lease, None)

    def busy(self) -> bool:
        """Whether the engine is working on a request of ours (then it asks the queue for
        more by itself when one ends)."""
        return any(not state.done for state in self.leases.values())

    # --- signals -------------------------------------------------------------------------------
    def _reached(self, request: Request) -> None:
        state = self.leases.get(lease_of(request) or "")
        if state is not None:
            state.started = True

    def _answered(self, request: Request) -> None:
        state = self.leases.get(lease_of(request) or "")
        if state is not None:
            state.started = state.answered = True

    def _scheduled(self, request: Request) -> None:
        parent = request.meta.pop(PARENT_META, None)
        if parent is not None:  # made by a callback or errback: on its way to the queue
            self._settle(parent)
            return
        state = self.leases.get(lease_of(request) or "")
        if state is not None and request is not state.request and not state.answered:
            state.over = True  # a redirect or retry of it, queued now: it is over

    def _item_done(self, response: Any) -> None:
        self._settle(lease_of(response))

    def _spider_error(self, response: Any) -> None:
        state = self.leases.get(lease_of(response) or "")
        if state is not None:
            state.over = True

    def _settle(self, lease: str | None) -> None:
        state = self.leases.get(lease or "")
        if state is not None:
            state.pending -= 1

    # --- output --------------------------------------------------------------------------------
    async def track(self, lease: str | None, output: AsyncIterable[Any] | Iterable[Any]) -> Any:
        """`output` as it goes to the scraper, counted against `lease`; the lease's output is
        over when this ends (or fails)."""
        state = self.leases.get(lease or "")
        if state is None:  # not ours (acked already, or the crawl is closing)
            if isinstance(output, AsyncIterable):
                async for item in output:
                    yield item
            else:
                for item in output:
                    yield item
            return
        state.pending += 1
        try:
            if isinstance(output, AsyncIterable):
                async for item in output:
                    self._produced(state, lease, item)
                    yield item
            else:
                for item in output:
                    self._produced(state, lease, item)
                    yield item
        finally:
            state.pending -= 1
            state.over = True

    @staticmethod
    def _produced(state: _Lease, lease: Any, item: Any) -> None:
        if isinstance(item, Request):
            item.meta[PARENT_META] = lease
            state.pending += 1
        elif item is not None:
            state.pending += 1

    def _wrap_errback(self, request: Request, lease: str) -> None:
        original = request.errback
        tracker = self

        def errback(failure: Failure) -> Any:
            return tracker._errback(lease, original, failure)

        errback.cluster_original = original  # type: ignore[attr-defined]
        request.errback = errback

    def _errback(self, lease: str, original: Any, failure: Failure) -> Any:
        state = self.leases.get(lease)
        if state is None and failure.check(IgnoreRequest) and lease in self.released:
            return None  # put back in the queue by a stopping worker: not ours any more
        if state is None or state.answered:
            # called by the spider middlewares (an HTTP error): tracked there
            return original(failure) if original is not None else failure.raiseException()
        try:
            output = original(failure) if original is not None else failure.raiseException()
        except Exception:
            state.over = True
            raise
        return self.track(lease, iterate_spider_output(output))

    # --- waking, stopping ----------------------------------------------------------------------
    def wake(self) -> None:
        """An idle crawl looks at its queue now: one request popped (one Lua call) and handed
        to the engine (`engine.crawl`; the scheduler keeps it, see `ClusterScheduler`), which
        then asks the scheduler for more as usual."""
        scheduler = self.scheduler
        if scheduler is None or self.closing or self.stopping or self.busy() or self.local:
            return
        request = scheduler.pop_leased()
        if request is None:
            return
        self.local.append(request)
        try:
            self.crawler.engine.crawl(request)
        except RuntimeError:  # the spider is gone: give it back
            self.local.remove(request)
            self.release([request.meta[LEASE_META]])

    def handed_back(self, request: Request) -> bool:
        """Whether `request` is one `wake` popped (the scheduler keeps it, not Redis)."""
        return bool(self.local) and any(request is r for r in self.local)

    def release(self, leases: list[str]) -> int:
        """Put these leased requests back in their queues now (not after CLUSTER_LEASE) and
        forget them; a request that is then still on its way to the downloader is dropped at
        the gate (LeaseGate) and its errback is not called. How many went back."""
        if not leases or self.scheduler is None:
            return 0
        released = self.scheduler.queue.release(leases)
        self.crawler.stats.inc_value(keys.CLUSTER_RELEASED, released)
        self.released.update(leases)
        self.forget(leases)
        self.local = collections.deque(r for r in self.local if lease_of(r) not in leases)
        return released

    def stop(self) -> int:
        """The worker is stopping: pop nothing more, put back every request not started."""
        self.stopping = True
        return self.release(self.unstarted())

    async def pause(self, seconds: float) -> None:
        """Sleep, but not past a stop (a request waiting for its rate slot is not started)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while not self.stopping and (left := end - loop.time()) > 0:
            await asyncio.sleep(min(left, 0.1))


class LeaseTracking:
    """Spider middleware of a worker's crawls, the outermost (it sees what the scraper gets):
    counts each leased request's callback output (see LeaseTracker)."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> LeaseTracking:
        return cls(crawler)

    async def process_spider_output(
        self, response: Any, result: AsyncIterator[Any], spider: Any = None
    ) -> AsyncIterator[Any]:
        async for item in lease_tracker(self.crawler).track(lease_of(response), result):
            yield item


class LeaseGate:
    """Downloader middleware of a worker's crawls, the innermost: a request whose lease a
    stopping worker released (it was still waiting, e.g. for its rate slot) is not
    downloaded here: another worker does it."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> LeaseGate:
        if not crawler.settings.get("CLUSTER_SOURCE"):
            raise NotConfigured
        return cls(crawler)

    def process_request(self, request: Request, spider: Any = None) -> None:
        tracker = lease_tracker(self.crawler)
        if not tracker.stopping:
            return
        lease = lease_of(request)
        state = tracker.leases.get(lease or "")
        if state is not None and not state.started:
            with contextlib.suppress(Exception):
                tracker.release([lease])  # type: ignore[list-item]
        if lease is not None and lease in tracker.released:
            raise IgnoreRequest(f"{request.url}: back in the queue, the worker is stopping")
