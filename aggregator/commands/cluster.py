"""`scrapy cluster [--json]`: what the cluster (CLUSTER_URI) is doing: the current run, queue
length per source, requests in flight, workers alive (id, host, pid, last heartbeat, requests
done). Exit 1 when Redis is unreachable, 2 for bad settings."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from scrapy.commands import ScrapyCommand

from aggregator.cluster.connect import cluster_server
from aggregator.cluster.keys import ClusterKeys
from aggregator.cluster.worker import read_run
from aggregator.errors import ConfigError, StateUnavailable
from aggregator.ops.runstatus import EXIT_CONFIG, EXIT_FAILED


def cluster_status(server: Any, keys: ClusterKeys, lease: float) -> dict[str, Any]:
    run = read_run(server, keys)
    queues = {}
    for key in server.scan_iter(match=f"{keys.prefix}:queue:*", count=500):
        name = key.decode()[len(keys.prefix) + len(":queue:") :]
        queues[name] = int(server.zcard(key))
    if run is not None:
        for name in run["sources"]:
            queues.setdefault(name, 0)
    workers = []
    now = time.time()
    for raw in server.hvals(keys.workers):
        try:
            record = json.loads(raw)
            beat = float(record["heartbeat"])
        except (ValueError, KeyError, TypeError):
            continue
        if now - beat > lease:
            continue  # dead (or gone without a goodbye)
        workers.append(
            {
                "id": str(record.get("id")),
                "host": str(record.get("host")),
                "pid": record.get("pid"),
                "last_heartbeat": round(beat, 3),
                "seconds_ago": round(now - beat, 1),
                "requests_done": record.get("done"),
                "in_flight": record.get("in_flight"),
            }
        )
    run_info = None
    if run is not None:
        run_info = {"id": run["id"], "status": run["status"], "sources": sorted(run["sources"])}
    return {
        "run": run_info,
        "queues": dict(sorted(queues.items())),
        "in_flight": int(server.zcard(keys.inflight)),
        "workers": sorted(workers, key=lambda w: w["id"]),
    }


class Command(ScrapyCommand):
    requires_project = True

    def short_desc(self) -> str:
        return "Show the cluster: run, queues, requests in flight, workers"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        try:
            server = cluster_server(self.settings)
        except ConfigError as exc:
            print(f"scrapy cluster: {exc}", file=sys.stderr)
            self.exitcode = EXIT_CONFIG
            return
        except StateUnavailable as exc:
            print(f"scrapy cluster: {exc}", file=sys.stderr)
            self.exitcode = EXIT_FAILED
            return
        keys = ClusterKeys(self.settings.get("CLUSTER_PREFIX") or "aggregator")
        status = cluster_status(server, keys, self.settings.getfloat("CLUSTER_LEASE", 60.0))
        if opts.json:
            print(json.dumps(status, ensure_ascii=False, indent=1))
            return
        run = status["run"]
        print(f"run: {run['id']} ({run['status']})" if run else "run: none")
        print(f"in flight: {status['in_flight']}")
        print("queues:")
        for name, length in status["queues"].items():
            print(f"  {name}: {length}")
        print(f"workers alive: {len(status['workers'])}")
        for w in status["workers"]:
            print(
                f"  {w['id']}  host {w['host']}  pid {w['pid']}  heartbeat {w['seconds_ago']}s ago"
                f"  requests done {w['requests_done']}  in flight {w['in_flight']}"
            )
