"""Two lives of one cluster worker id against a real Redis, for test_cluster's restart test:
`python leaselife.py fork|exec REDIS_URL PREFIX LEASE`.

The previous life of worker `w0` leases PREVIOUS_HOLDS requests from the source's queue and is
SIGKILLed holding them; the next life, under the same id, starts at once (before its previous
life's leases can expire) and serves the queue as a worker does: it reaps expired leases, pops,
"crawls" (acks) and renews what it holds, until the queue and the in-flight set are empty or
DEADLINE passes. It prints one JSON line: what it crawled (URL, whether it was marked for a
recheck), how many of the dead life's leases were still in flight when it started, and the
incarnation each life wrote in its worker record.

`fork`: both lives are forked from this process after it imported aggregator.cluster.queue, as
a supervisor or launcher that preloads the project starts its workers; `exec`: each life is a
new interpreter, as `scrapy worker` from systemd is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import redis
from scrapy.settings import Settings

from aggregator.cluster import serializer
from aggregator.cluster.queue import LeasingQueue, requeue_expired
from aggregator.cluster.worker import ClusterWorker
from aggregator.state.claims import RECHECK

WORKER = "w0"
PREVIOUS_HOLDS = 3
DEADLINE = 30.0


class Spider:
    name = "src"

    def __init__(self, prefix: str, lease: float):
        self.crawler = SimpleNamespace(
            settings=Settings(
                {
                    "CLUSTER_PREFIX": prefix,
                    "CLUSTER_SOURCE": "src",
                    "CLUSTER_WORKER_ID": WORKER,
                    "CLUSTER_LEASE": lease,
                }
            ),
            stats=SimpleNamespace(inc_value=lambda *a, **k: None),
        )

    def parse(self, response):
        pass


def leasing_queue(url: str, prefix: str, lease: float) -> LeasingQueue:
    return LeasingQueue(redis.Redis.from_url(url), Spider(prefix, lease), "unused", serializer)


def heartbeat(queue: LeasingQueue) -> str:
    """Write this life's worker record (as `scrapy worker` does every tick); its incarnation."""
    worker = ClusterWorker(None, queue.spider.crawler.settings, queue.server, worker_id=WORKER)
    worker._heartbeat()
    return json.loads(queue.server.hget(queue.keys.workers, WORKER))["incarnation"]


def previous_life(url: str, prefix: str, lease: float) -> None:
    """Lease PREVIOUS_HOLDS requests, then die holding them."""
    queue = leasing_queue(url, prefix, lease)
    heartbeat(queue)
    for _ in range(PREVIOUS_HOLDS):
        assert queue.pop() is not None
    os.kill(os.getpid(), signal.SIGKILL)


def next_life(url: str, prefix: str, lease: float) -> None:
    """Serve the queue until nothing is queued or in flight; print what was crawled."""
    queue = leasing_queue(url, prefix, lease)
    server = queue.server
    dead_in_flight = server.zcard(queue.keys.inflight)
    dead = json.loads(server.hget(queue.keys.workers, WORKER))["incarnation"]
    lives = {"dead": dead, "next": heartbeat(queue)}
    crawled: list[tuple[str, bool]] = []
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        requeue_expired(server, queue.keys)
        request = queue.pop()
        if request is not None:
            crawled.append((request.url, bool(request.meta.get(RECHECK))))
            queue.ack([request.meta["cluster_lease"]])
        elif server.zcard(queue.key) == 0 and server.zcard(queue.keys.inflight) == 0:
            break
        else:
            time.sleep(0.05)
    report = {"crawled": crawled, "dead_in_flight": dead_in_flight, "incarnations": lives}
    print(json.dumps(report), flush=True)


def run_life(mode: str, life: str, args: list[str]) -> int:
    """Run one life in a forked child or a new interpreter; its exit status."""
    if mode == "exec":
        command = [sys.executable, __file__, life, *args]
        return subprocess.run(command, check=False).returncode
    pid = os.fork()
    if pid == 0:
        try:
            LIVES[life](args[0], args[1], float(args[2]))
        finally:
            os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


LIVES = {"previous": previous_life, "next": next_life}


def main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode in LIVES:  # a life in a new interpreter (exec)
        LIVES[mode](args[0], args[1], float(args[2]))
        return
    assert run_life(mode, "previous", args) == -signal.SIGKILL
    assert run_life(mode, "next", args) == 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1:])
