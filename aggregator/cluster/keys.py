"""Redis key names of cluster mode, all under CLUSTER_PREFIX (default `aggregator`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClusterKeys"]


@dataclass(frozen=True)
class ClusterKeys:
    prefix: str

    def queue(self, source: str) -> str:
        """ZSET of a source's serialised requests, score -priority."""
        return f"{self.prefix}:queue:{source}"

    def seen(self, source: str) -> str:
        """SET of a source's request fingerprints this run (the dupefilter)."""
        return f"{self.prefix}:seen:{source}"

    @property
    def inflight(self) -> str:
        """ZSET lease id -> deadline (ms): requests a worker popped and has not finished."""
        return f"{self.prefix}:inflight"

    @property
    def leases(self) -> str:
        """HASH lease id -> "queue key\\nscore\\npayload": what goes back when a lease expires."""
        return f"{self.prefix}:leases"

    @property
    def requeued(self) -> str:
        """SET of SHA-1s of payloads put back after their lease expired: whoever pops one
        next claims its article afresh (the dead worker may have published it)."""
        return f"{self.prefix}:requeued"

    @property
    def workers(self) -> str:
        """HASH worker id -> JSON {host, pid, started, heartbeat, done, run}."""
        return f"{self.prefix}:workers"

    @property
    def run(self) -> str:
        """STRING JSON of the current run: {id, status, sources: {name: {spider, arguments}}}."""
        return f"{self.prefix}:run"

    @property
    def lock(self) -> str:
        """STRING the coordinator's run lock (JSON holder), with a TTL it keeps renewing."""
        return f"{self.prefix}:lock"

    def stats(self, run: str, source: str) -> str:
        """HASH "worker id/incarnation" -> JSON {stats, final} of one source in one run."""
        return f"{self.prefix}:run:{run}:stats:{source}"

    def rate(self, domain: str) -> str:
        return f"{self.prefix}:rate:{domain}"
