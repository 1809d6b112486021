"""SCHEDULER_QUEUE_CLASS of cluster mode: a per-source priority queue whose pops are leases.

A pop is one Lua script: take the best request off the source's ZSET and, in the same step,
record it under a lease (`inflight` ZSET lease id -> deadline, `leases` HASH lease id -> where
it came from and what it is). The worker acks the lease once the request is completely handled
(downloaded, its callback's output queued and its items through the pipeline) and renews its
leases while it lives; a lease whose deadline passes (its worker died) is put back in its queue
by whoever reaps next (every worker and the coordinator do, every few seconds). The request goes
straight back to the queue, past the dupefilter, so a lost request never stays "seen"; its
payload's digest goes into the `requeued` set, and whoever pops it next marks it
`article_recheck`: its article's claim still holds, but the claim middleware checks whether the
dead worker published it before its item goes on (a duplicate then, not a second post).

A push is one Lua script too: the dupefilter's SADD of the fingerprint and the ZADD of the
request together, so a worker dying between the two cannot leave a request "seen" but never
queued.

Requests are JSON (aggregator.cluster.serializer); what comes out of Redis is checked before it
becomes a request: its class, callbacks (public methods of the source's spider) and types.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from typing import Any

from scrapy import Request
from scrapy.utils.request import request_from_dict
from scrapy_redis.queue import Base

from aggregator import stats as keys_
from aggregator.cluster.keys import ClusterKeys
from aggregator.cluster.tracking import LEASE_META, PARENT_META, original_errback
from aggregator.state.claims import RECHECK

__all__ = [
    "INCARNATION",
    "LEASE_META",
    "LeasingQueue",
    "encode_request",
    "incarnation",
    "requeue_expired",
]

logger = logging.getLogger(__name__)

# Scrapy's and ours, about this process's handling of the request: never queued.
DROP_META = ("download_slot", "download_latency", "depth", LEASE_META, PARENT_META, RECHECK)

# KEYS: seen, queue; ARGV: (fingerprint ('' = not filtered), score, payload) for each request.
# For each: 1 queued, 0 seen already.
PUSH_LUA = """
local out = {}
for i = 1, #ARGV, 3 do
  if ARGV[i] ~= '' and redis.call('SADD', KEYS[1], ARGV[i]) == 0 then
    out[#out + 1] = 0
  else
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i + 2])
    out[#out + 1] = 1
  end
end
return out
"""
PUSH_BATCH = 500  # requests per script call: a long script would hold up Redis

# KEYS: queue, inflight, leases, requeued; ARGV: lease id, deadline (ms).
# Returns {payload, 1 if it was put back after an expired lease else 0}, or false.
POP_LUA = """
local r = redis.call('ZPOPMIN', KEYS[1])
if #r == 0 then return false end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], KEYS[1] .. '\\n' .. r[2] .. '\\n' .. r[1])
return {r[1], redis.call('SREM', KEYS[4], redis.sha1hex(r[1]))}
"""

# KEYS: inflight, leases, requeued; ARGV: now (ms), at most this many. Puts expired leases back.
REAP_LUA = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(expired) do
  local entry = redis.call('HGET', KEYS[2], id)
  if entry then
    local a = string.find(entry, '\\n', 1, true)
    local b = a and string.find(entry, '\\n', a + 1, true)
    if b then
      local queue = string.sub(entry, 1, a - 1)
      local score = tonumber(string.sub(entry, a + 1, b - 1)) or 0
      local payload = string.sub(entry, b + 1)
      redis.call('ZADD', queue, score, payload)
      redis.call('SADD', KEYS[3], redis.sha1hex(payload))
    end
  end
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
end
return #expired
"""

# KEYS: inflight, leases; ARGV: lease ids. Puts these leased requests back in their queues
# (a stopping worker's, not started: nothing of theirs can have been published).
RELEASE_LUA = """
local n = 0
for i = 1, #ARGV do
  local entry = redis.call('HGET', KEYS[2], ARGV[i])
  if entry then
    local a = string.find(entry, '\\n', 1, true)
    local b = a and string.find(entry, '\\n', a + 1, true)
    if b then
      redis.call('ZADD', string.sub(entry, 1, a - 1),
                 tonumber(string.sub(entry, a + 1, b - 1)) or 0, string.sub(entry, b + 1))
      n = n + 1
    end
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
  redis.call('ZREM', KEYS[1], ARGV[i])
end
return n
"""

# KEYS: inflight, leases; ARGV: lease ids. Acks.
ACK_LUA = """
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
return #ARGV
"""

_counter = itertools.count()
# Lease ids are unique per process, so a worker restarted under the same CLUSTER_WORKER_ID never
# reuses (and overwrites) a lease its previous life still holds: reusing one would replace the
# dead life's request in the `leases` hash, and acking it would lose that request for good. A
# process forked from one that imported this module (a supervisor or launcher that preloads the
# project) gets one of its own too (`_new_incarnation`), not its parent's, which every other
# child of that parent shares. Read it through `incarnation()`: a copy taken at import would
# keep the parent's value.
INCARNATION = uuid.uuid4().hex[:8]


def incarnation() -> str:
    """This process's lease-id prefix (and stats reporter name), unique per process."""
    return INCARNATION


def _new_incarnation() -> None:
    global INCARNATION
    INCARNATION = uuid.uuid4().hex[:8]


os.register_at_fork(after_in_child=_new_incarnation)


def requeue_expired(server: Any, keys: ClusterKeys, limit: int = 1000) -> int:
    """Put requests whose lease expired back in their queues; how many."""
    script = server.register_script(REAP_LUA)
    return int(
        script(
            keys=[keys.inflight, keys.leases, keys.requeued],
            args=[int(time.time() * 1000), limit],
        )
    )


def _method_name(spider: Any, method: Any) -> str | None:
    """The name of the spider's method `method` is bound to, found without searching: its
    own name, if that is what the spider has under it; None when it is not (Scrapy's
    `Request.to_dict` then searches every member of the spider, or says it is no method)."""
    name = getattr(method, "__name__", None)
    if name is None or getattr(method, "__self__", None) is not spider:
        return None
    bound = getattr(spider, name, None)
    if getattr(bound, "__func__", None) is not getattr(method, "__func__", None):
        return None
    return name


def request_dict(request: Request, spider: Any) -> dict[str, Any]:
    """`Request.to_dict(spider=spider)` (callbacks as the spider's method names), without its
    search of every member of the spider for each callback, a third of the CPU a cluster
    spends queueing a request; with the request's own errback, not a worker's tracking
    wrapper (a retry or a redirect of a leased request carries it)."""
    errback = original_errback(request)
    callback = request.callback
    names = {
        "callback": _method_name(spider, callback) if callable(callback) else callback,
        "errback": _method_name(spider, errback) if callable(errback) else errback,
    }
    if (callable(callback) and names["callback"] is None) or (
        callable(errback) and names["errback"] is None
    ):
        if errback is not request.errback:
            request = request.replace(errback=errback)
        return request.to_dict(spider=spider)
    obj: dict[str, Any] = {"url": request.url, **names, "headers": dict(request.headers)}
    for attribute in request.attributes:
        obj.setdefault(attribute, getattr(request, attribute))
    if type(request) is not Request:
        obj["_class"] = f"{type(request).__module__}.{type(request).__name__}"
    return obj


def encode_request(request: Request, spider: Any, serializer: Any) -> bytes:
    """The request as queued: `request_dict`, without what only this process's handling of
    it added."""
    obj = request_dict(request, spider)
    obj["meta"] = {k: v for k, v in obj.get("meta", {}).items() if k not in DROP_META}
    return serializer.dumps(obj)


class LeasingQueue(Base):
    """Base(server, spider, key, serializer); the source, worker id and lease come from the
    crawler's settings (CLUSTER_SOURCE, CLUSTER_WORKER_ID, CLUSTER_LEASE)."""

    def __init__(self, server: Any, spider: Any, key: str, serializer: Any = None):
        if serializer is None or serializer.__name__.endswith("picklecompat"):
            raise ValueError("cluster queues take JSON only (SCHEDULER_SERIALIZER)")
        super().__init__(server, spider, key, serializer)
        settings = spider.crawler.settings
        self.keys = ClusterKeys(settings.get("CLUSTER_PREFIX") or "aggregator")
        self.key = self.keys.queue(settings.get("CLUSTER_SOURCE") or spider.name)
        self.worker = settings.get("CLUSTER_WORKER_ID") or "anonymous"
        self.lease = settings.getfloat("CLUSTER_LEASE", 60.0)
        self.seen = self.keys.seen(settings.get("CLUSTER_SOURCE") or spider.name)
        self._push = server.register_script(PUSH_LUA)
        self._pop = server.register_script(POP_LUA)
        self._ack = server.register_script(ACK_LUA)
        self._release = server.register_script(RELEASE_LUA)

    # --- encoding ----------------------------------------------------------------------------
    def _encode_request(self, request: Request) -> bytes:
        return encode_request(request, self.spider, self.serializer)

    def _decode_request(self, encoded: bytes) -> Request:
        obj = self.serializer.loads(encoded)
        for name in ("callback", "errback"):
            method = obj.get(name)
            if method is not None and (
                method.startswith("_") or not callable(getattr(self.spider, method, None))
            ):
                raise ValueError(f"{name} {method!r} is not a method of {self.spider.name}")
        return request_from_dict(obj, spider=self.spider)

    # --- the queue ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.server.zcard(self.key))

    def push(self, request: Request) -> None:
        data = self._encode_request(request)
        self.server.zadd(self.key, {data: -request.priority})

    def push_encoded(self, data: bytes, priority: int, fingerprint: str | None = None) -> bool:
        """Queue an encoded request unless its fingerprint was seen this run (None: never
        filtered); whether it was queued."""
        return self.push_many([(data, priority, fingerprint)])[0]

    def push_many(self, entries: list[tuple[bytes, int, str | None]]) -> list[bool]:
        """`push_encoded` for several requests, in order, one round trip per PUSH_BATCH; for
        each, whether it was queued."""
        queued: list[bool] = []
        for start in range(0, len(entries), PUSH_BATCH):
            args: list[Any] = []
            for data, priority, fingerprint in entries[start : start + PUSH_BATCH]:
                args += [fingerprint or "", -priority, data]
            queued += [bool(n) for n in self._push(keys=[self.seen, self.key], args=args)]
        return queued

    def pop(self, timeout: int = 0) -> Request | None:
        lease_id = f"{self.worker}:{incarnation()}:{next(_counter)}"
        deadline = int((time.time() + self.lease) * 1000)
        popped = self._pop(
            keys=[self.key, self.keys.inflight, self.keys.leases, self.keys.requeued],
            args=[lease_id, deadline],
        )
        if not popped:
            return None
        data, requeued = popped
        try:
            request = self._decode_request(data)
        except Exception as exc:
            # not ours to run: drop it (acked) and say so
            logger.error(
                "Refusing a request in %s that is not a valid JSON request (%s): %r",
                self.key,
                exc,
                bytes(data[:80]),
            )
            self.ack([lease_id])
            self.spider.crawler.stats.inc_value(keys_.CLUSTER_REFUSED)
            return None
        request.meta[LEASE_META] = lease_id
        if requeued:
            # its worker died holding it, maybe after publishing its article: check again
            request.meta[RECHECK] = True
        return request

    def ack(self, lease_ids: list[str]) -> None:
        if lease_ids:
            self._ack(keys=[self.keys.inflight, self.keys.leases], args=lease_ids)

    def release(self, lease_ids: list[str]) -> int:
        """Put these leased requests back in their queues now; how many went back."""
        if not lease_ids:
            return 0
        return int(self._release(keys=[self.keys.inflight, self.keys.leases], args=lease_ids))

    def renew(self, lease_ids: list[str]) -> None:
        if lease_ids:
            deadline = int((time.time() + self.lease) * 1000)
            self.server.zadd(self.keys.inflight, dict.fromkeys(lease_ids, deadline), xx=True)

    def clear(self) -> None:
        # SCHEDULER_PERSIST is on, but never flush a shared queue from a worker in any case
        logger.debug("Not clearing %s: the coordinator owns the queues", self.key)
