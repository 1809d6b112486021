"""Cluster mode's scaling: the generated 趣头条 site (bench/sitegen.py) served with a remote
API's latency (default 200 ms a request) by a local ReplayServer, crawled by 1, 2 and 3
`scrapy worker` processes (fixed per-worker concurrency, CLUSTER_DOMAIN_RATE off, AutoThrottle
off) through a private `redis-server`, with `scrapy crawlall` as the coordinator; one run.

Prints, for each number of workers:
* articles/s: articles over the crawl's span at the site (first request to last answer), the
  figure that scales with workers; the coordinator's own elapsed time (seeding, draining and
  collecting the final stats) is printed too;
* the ratios against one worker (targets: 2 workers >= 1.8x, 3 workers >= 2.5x);
* the CPU seconds the workers and the coordinator used, and the machine's load average: on a
  small shared machine the workers compete for the same cores, and the ratios show that;
* CPU per article of each worker (user + system from /proc/PID/stat, from the coordinator's
  start to its end: the worker's own work, start-up left out), of the coordinator, and of
  this process (the replay server and the MONITOR reader run in it; getrusage): CPU time,
  not wall time, so it holds on a busy machine where the ratios do not;
* Redis round trips per article for the coordinator and each worker: every command the
  server received, attributed by connection name (each worker's connections carry its id,
  the coordinator's "coordinator…"), from MONITOR; commands run inside a Lua script are not
  round trips and are left out (target <= 6 per article and process); `--commands` lists
  them by command. MONITOR makes Redis and this process work for every command: take the
  scaling ratios from a run with `--no-monitor` (the round trips are then not counted).

`--profile DIR` runs the workers under cProfile (CPU time) and writes their profiles in DIR;
`--workers 1,3` runs only these numbers of workers.

Workers are started and have registered before the coordinator starts, so interpreter start-up
is not in the figures; they are stopped (SIGTERM) after each run. Usage:

    python bench/bench_cluster.py [--articles 600] [--per-page 50] [--latency 0.2]
        [--concurrency 8] [--workers 1,2,3] [--no-monitor] [--commands] [--profile DIR]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from aggregator.devtools.replay import ReplayServer  # noqa: E402
from bench.sitegen import generate_site  # noqa: E402

TARGETS = {2: 1.8, 3: 2.5}
ROUND_TRIP_TARGET = 6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TimedLog(list):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: str) -> None:
        self.times.append(time.monotonic())
        super().append(item)


class Monitor(threading.Thread):
    """Counts the commands Redis receives per connection name (MONITOR)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.names: dict[str, str] = {}  # client address -> connection name
        self.counts: collections.Counter[str] = collections.Counter()
        self.unnamed: collections.Counter[str] = collections.Counter()
        # client address -> command name (EVALSHA: the script's first key's kind) -> count
        self.commands: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.stopping = False

    def run(self) -> None:
        client = redis.Redis.from_url(self.url)
        with client.monitor() as monitor:
            for command in monitor.listen():
                if self.stopping:
                    return
                if command.get("client_type") == "lua":
                    continue
                address = command.get("client_address", "?")
                port = command.get("client_port", "")
                self.unnamed[f"{address}:{port}"] += 1
                words = command.get("command", "").split()
                name = words[0].upper() if words else "?"
                if name == "EVALSHA" and len(words) > 3:
                    name = f"EVALSHA {words[3].rsplit(':', 1)[-1]}"
                self.commands[f"{address}:{port}"][name] += 1

    def refresh_names(self, client: redis.Redis) -> None:
        for entry in client.client_list():
            if entry.get("name"):
                self.names[entry["addr"]] = entry["name"]

    def commands_by_name(self) -> dict[str, collections.Counter[str]]:
        out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for address, counts in self.commands.items():
            out[self.names.get(address, "unnamed")].update(counts)
        return out

    def by_name(self) -> dict[str, int]:
        counts: collections.Counter[str] = collections.Counter()
        for address, count in self.unnamed.items():
            counts[self.names.get(address, "unnamed")] += count
        return dict(counts)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sources_file(path: Path, site) -> Path:
    path.write_text(
        f"""
[sources.bench]
spider = "qutoutiao"
args = {{ cid = "{site.cid}", pages = "{site.pages}", limit = "{site.per_page}" }}
categories = ["新媒体", "趣头条", "分类"]
author = "趣头条"
""",
        encoding="utf-8",
    )
    return path


PROFILE_RUNNER = """
import cProfile, runpy, sys, time
out = sys.argv.pop(1)
sys.argv[0] = "scrapy"
profile = cProfile.Profile(time.process_time)
try:
    profile.runcall(runpy.run_module, "scrapy", run_name="__main__", alter_sys=True)
finally:
    profile.dump_stats(out)
"""


def profiled(directory: Path | None, name: str, cmd: list[str]) -> list[str]:
    """The command, under cProfile timing CPU (not wall) time with `--profile DIR` (the
    worker exits normally on SIGTERM, so its profile is written)."""
    if directory is None:
        return cmd
    return [sys.executable, "-c", PROFILE_RUNNER, str(directory / f"{name}.prof"), *cmd[3:]]


def scrapy(*args: str, **settings: str) -> list[str]:
    cmd = [sys.executable, "-m", "scrapy", *args]
    for name, value in settings.items():
        cmd += ["-s", f"{name}={value}"]
    return cmd


def run_once(
    workdir: Path,
    site,
    server,
    url: str,
    workers: int,
    concurrency: int,
    profile: Path | None = None,
    count_round_trips: bool = True,
) -> dict:
    prefix = f"bench{workers}"
    common = {
        "QUTOUTIAO_API_BASE": server.base_url,
        "CLUSTER_URI": url,
        "CLUSTER_PREFIX": prefix,
        "CLUSTER_DOMAIN_RATE": "0",
        "AUTOTHROTTLE_ENABLED": "False",
        "CONCURRENT_REQUESTS": str(concurrency),
        "CONCURRENT_REQUESTS_PER_DOMAIN": str(concurrency),
        "LOG_LEVEL": "WARNING",
        "OUTPUT_URI": str(workdir / f"out-{workers}"),
        "OUTPUT_FSYNC": "False",
        "SOURCES_FILE": str(sources_file(workdir / "sources.toml", site)),
    }
    client = redis.Redis.from_url(url)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    procs = [
        subprocess.Popen(
            profiled(
                profile,
                f"worker-{workers}-{n}",
                scrapy(
                    "worker",
                    CLUSTER_WORKER_ID=f"worker-{n}",
                    STATE_DIR=str(workdir / f"w{workers}-{n}"),
                    **common,
                ),
            ),
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        for n in range(workers)
    ]
    try:
        while client.hlen(f"{prefix}:workers") < workers:  # every worker is up and waiting
            time.sleep(0.1)
        monitor = Monitor(url)
        if count_round_trips:
            monitor.start()
        server.requests = arrivals = TimedLog()
        started = time.monotonic()
        workers_before = [process_cpu(proc.pid) for proc in procs]
        self_before = self_cpu()
        coordinator = subprocess.Popen(
            scrapy("crawlall", STATE_DIR=str(workdir / f"c{workers}"), **common),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        coordinator_cpu = 0.0
        while coordinator.poll() is None:
            monitor.refresh_names(client)
            with contextlib.suppress(OSError, IndexError, ValueError):
                coordinator_cpu = process_cpu(coordinator.pid)
            time.sleep(0.2)
        wall = time.monotonic() - started
        workers_cpu = [process_cpu(p.pid) - b for p, b in zip(procs, workers_before, strict=True)]
        bench_cpu = self_cpu() - self_before
        monitor.refresh_names(client)
        monitor.stopping = True
        if coordinator.returncode != 0:
            raise SystemExit(f"the coordinator failed:\n{coordinator.stderr.read()[-3000:]}")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    last_run = json.loads((workdir / f"c{workers}" / "last-run.json").read_text())
    row = last_run["sources"][0]
    published = client.hlen(f"{prefix}:published")
    client.close()
    span = arrivals.times[-1] - arrivals.times[0] + server.latency
    processes: dict[str, int] = collections.Counter()
    for name, count in monitor.by_name().items():
        processes["coordinator" if name.startswith("coordinator") else name] += count
    return {
        "workers": workers,
        "articles": row["articles"]["new"],
        "published": published,
        "requests": len(arrivals),
        "span": span,
        "rate": site.articles / span,
        "coordinator_elapsed": last_run["elapsed_seconds"],
        "wall": wall,
        "cpu": cpu,
        "workers_cpu": workers_cpu,
        "coordinator_cpu": coordinator_cpu,
        "bench_cpu": bench_cpu,
        "load": load,
        "round_trips": dict(processes),
        "commands": monitor.commands_by_name(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=600)
    parser.add_argument("--per-page", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=8, help="per worker")
    parser.add_argument(
        "--profile", type=Path, help="write each worker's cProfile profile in this directory"
    )
    parser.add_argument("--workers", default="1,2,3", help="the numbers of workers to run")
    parser.add_argument(
        "--commands", action="store_true", help="Redis commands per article and connection"
    )
    parser.add_argument(
        "--no-monitor",
        action="store_true",
        help="do not count round trips (MONITOR costs Redis and this process CPU per command)",
    )
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        workdir = Path(tmp)
        site = generate_site(workdir / "site", args.articles, per_page=args.per_page)
        port = free_port()
        redis_proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        try:
            time.sleep(0.5)
            results = []
            with ReplayServer([site.directory], latency=args.latency) as server:
                for workers in (int(n) for n in args.workers.split(",")):
                    results.append(
                        run_once(
                            workdir,
                            site,
                            server,
                            url,
                            workers,
                            args.concurrency,
                            args.profile,
                            not args.no_monitor,
                        )
                    )
        finally:
            redis_proc.terminate()
            redis_proc.wait(10)
    print(
        f"{args.articles} articles, {site.pages} listing pages, {args.latency * 1000:.0f} ms a "
        f"request, {args.concurrency} requests in flight per worker, rate limit off"
    )
    base = results[0]["rate"]
    for result in results:
        workers = result["workers"]
        ratio = result["rate"] / base
        target = f" (target >= {TARGETS[workers]}x)" if workers in TARGETS else ""
        print(
            f"{workers} worker(s): {result['rate']:.1f} articles/s over {result['span']:.1f}s "
            f"at the site ({result['requests']} requests; {result['published']} published); "
            f"coordinator {result['coordinator_elapsed']:.1f}s; ratio {ratio:.2f}x{target}"
        )
        print(
            f"    CPU of the workers and coordinator: {result['cpu']:.1f}s "
            f"({result['cpu'] / max(result['published'], 1) * 1000:.1f} ms "
            f"an article), machine load average {result['load']:.1f} on {os.cpu_count()} cores"
        )
        per_worker = ", ".join(
            f"{cpu / max(result['published'], 1) * 1000 * workers:.2f}"
            for cpu in result["workers_cpu"]
        )
        print(
            f"    CPU ms per article a worker did (its CPU / (articles / workers)): {per_worker}; "
            f"all workers {sum(result['workers_cpu']) / max(result['published'], 1) * 1000:.2f}"
            f" ms an article; coordinator (to its last sample) "
            f"{result['coordinator_cpu'] / max(result['published'], 1) * 1000:.2f}; this "
            f"process (replay server{'' if args.no_monitor else ', MONITOR'}) "
            f"{result['bench_cpu'] / max(result['published'], 1) * 1000:.2f}"
        )
        trips = ", ".join(
            f"{name} {count / args.articles:.2f}"
            for name, count in sorted(result["round_trips"].items())
        )
        if not args.no_monitor:
            print(f"    Redis round trips per article (target <= {ROUND_TRIP_TARGET}): {trips}")
        if args.commands:
            for name, counts in sorted(result["commands"].items()):
                top = ", ".join(
                    f"{command} {count / args.articles:.2f}"
                    for command, count in counts.most_common(8)
                )
                print(f"      {name}: {top}")


if __name__ == "__main__":
    main()
