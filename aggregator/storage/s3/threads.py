"""The thread pool an S3 component runs boto3 in. boto3 blocks, so each S3 component (the post
storage, the image store) runs its calls in a pool of its own, sized by S3_MAX_UPLOADS, never
in the reactor's, which Scrapy's DNS resolution shares: the crawl never waits on S3."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import threads
from twisted.python.threadpool import ThreadPool

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.defer import Deferred

__all__ = ["S3Threads"]


class S3Threads:
    """A named ThreadPool that starts with its component and stops with it, or at reactor
    shutdown should the component never be closed (a crawl stopped by an exception), so no
    thread outlives the process's reactor."""

    def __init__(self, size: int, name: str):
        self._pool = ThreadPool(minthreads=0, maxthreads=size, name=name)
        self._trigger: Any = None

    def start(self) -> None:
        from twisted.internet import reactor  # the one Scrapy installed; not at import time

        self._pool.start()
        self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)

    def run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        from twisted.internet import reactor

        return threads.deferToThreadPool(reactor, self._pool, func, *args, **kwargs)

    def stop(self) -> None:
        from twisted.internet import reactor

        trigger, self._trigger = self._trigger, None
        if trigger is None:
            return
        try:
            reactor.removeSystemEventTrigger(trigger)
        except ValueError:
            return  # the shutdown trigger ran: the pool is stopped already
        self._pool.stop()
