"""A benchmark-only Scrapy extension that measures a crawl from inside the crawl process.

Enabled by the benchmarks with `-s EXTENSIONS={"bench.cpuprobe.CpuProbe": 0, ...}` and
`-s CPUPROBE_FILE=path`; never part of the project's settings. At spider_opened it takes the
process's CPU times (getrusage RUSAGE_SELF: every thread, user and system apart) and at
spider_closed (after the pipelines' close_spider, so writes still being flushed are counted) it
takes them again and writes, as JSON, the difference, the crawl's stats, the CPU of each thread,
garbage-collector counts and the resident set size.

With `-s CPUPROBE_STAGES=1` it also wraps the functions listed in STAGES with per-thread CPU
timers (time.thread_time_ns) and times every garbage collection (gc.callbacks), so the report can
split the crawl's CPU by stage. Wrapping costs a little CPU of its own, so the figures of an
instrumented run are for the split only, not for comparing configurations.

With `-s CPUPROBE_TRACEMALLOC=N` it traces allocations (tracemalloc, N frames each) from the
crawler's creation and, at spider_closed, after a full collection, dumps a snapshot next to the
report (`<CPUPROBE_FILE>.tracemalloc`): two crawls' snapshots compared say which lines allocated
what a longer crawl still holds (bench_cpu.py --tracemalloc).
"""

from __future__ import annotations

import gc
import importlib
import inspect
import json
import os
import resource
import threading
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

from scrapy import signals
from scrapy.exceptions import NotConfigured

# (stage name, "module:qualified.name"). A name that does not exist, or is a coroutine function
# (only synchronous code can be timed per thread), is skipped: the code under measurement
# changes, and the probe must not break a benchmark because of it. Names for both the per-post
# writer (persist, _write) and the group commit (FilePostStorage.write_batch, GroupCommit._kick).
STAGES: list[tuple[str, str]] = [
    ("spider: listings", "aggregator.spiders.qutoutiao:QutoutiaoSpider.parse_listing"),
    ("spider: details", "aggregator.spiders.qutoutiao:QutoutiaoSpider.parse_detail_json"),
    ("validate", "aggregator.pipelines.validate:ValidatePipeline.process_item"),
    ("normalise", "aggregator.pipelines.normalize:NormalizeHtmlPipeline.process_item"),
    ("render post", "aggregator.pipelines.write:render_post"),
    ("store: reactor side", "aggregator.storage.files:FilePostStorage.persist"),
    ("store: reactor side", "aggregator.storage.files:FilePostStorage.persist_batch"),
    ("store: write thread", "aggregator.storage.files:FilePostStorage._write"),
    ("store: write thread", "aggregator.storage.files:FilePostStorage.write_batch"),
    ("write: batch bookkeeping", "aggregator.pipelines.write:GroupCommit._kick"),
    ("state: published lookups", "aggregator.state.sqlite:SqlitePublished.published_among_now"),
    ("state: mark published", "aggregator.state.sqlite:SqlitePublished._insert"),
    ("state: SQLite transactions", "aggregator.state.sqlite:_Db.transaction"),
    ("state: SQLite queries", "aggregator.state.sqlite:_Db.query"),
    ("store: S3 uploads (threads)", "aggregator.storage.s3.objects:S3Uploader.upload"),
    ("store: S3 reactor side", "aggregator.storage.s3.storage:S3PostStorage.persist"),
    ("store: S3 reactor side", "aggregator.storage.s3.storage:S3PostStorage._upload_done"),
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _rusage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"user": usage.ru_utime, "system": usage.ru_stime}


def _threads() -> dict[str, tuple[str, float, float]]:
    """tid -> (name, user seconds, system seconds) of every thread, from /proc."""
    found: dict[str, tuple[str, float, float]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if task.name == str(os.getpid()):
            name = "main (reactor)"
        fields = stat[stat.rindex(")") + 2 :].split()
        found[task.name] = (name, int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK)
    return found


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class _Timers:
    """Per-thread CPU of wrapped functions and of garbage collection, with the collections that
    happen inside a wrapped call counted once (as GC, not as the function)."""

    def __init__(self) -> None:
        self.cpu_ns: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self.gc_ns: dict[int, int] = defaultdict(int)
        self.gc_collections: dict[int, int] = defaultdict(int)
        self._local = threading.local()

    def _gc_so_far(self) -> int:
        return getattr(self._local, "gc_ns", 0)

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        now = time.thread_time_ns()
        if phase == "start":
            self._local.gc_started = now
            return
        spent = now - getattr(self._local, "gc_started", now)
        self._local.gc_ns = self._gc_so_far() + spent
        self.gc_ns[info["generation"]] += spent
        self.gc_collections[info["generation"]] += 1

    def _wrapped_so_far(self) -> int:
        return getattr(self._local, "wrapped_ns", 0)

    def wrap(self, stage: str, func: Any) -> Any:
        """Time `func` per thread; a wrapped call inside another counts for its own stage only
        (the outer one gets its self time), and so does GC."""
        timers = self

        def account(started: tuple[int, int, int]) -> None:
            begun, gc_before, wrapped_before = started
            spent = time.thread_time_ns() - begun - (timers._gc_so_far() - gc_before)
            nested = timers._wrapped_so_far() - wrapped_before
            timers.cpu_ns[stage] += spent - nested
            timers._local.wrapped_ns = wrapped_before + spent

        def start() -> tuple[int, int, int]:
            return time.thread_time_ns(), timers._gc_so_far(), timers._wrapped_so_far()

        if inspect.isgeneratorfunction(func):

            def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
                iterator = func(*args, **kwargs)
                while True:
                    started = start()
                    try:
                        value = next(iterator)
                    except StopIteration:
                        account(started)
                        timers.calls[stage] += 1
                        return
                    account(started)
                    yield value

            return generator_wrapper
        if inspect.iscoroutinefunction(func):
            raise TypeError(f"cannot time coroutine {func!r}: wrap its synchronous parts")

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = start()
            try:
                return func(*args, **kwargs)
            finally:
                account(started)
                timers.calls[stage] += 1

        return wrapper


def _install(timers: _Timers) -> list[str]:
    wrapped = []
    for stage, target in STAGES:
        module_name, _, qualname = target.partition(":")
        try:
            owner: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        *path, attr = qualname.split(".")
        try:
            for part in path:
                owner = getattr(owner, part)
            original = inspect.getattr_static(owner, attr)
        except AttributeError:
            continue
        if isinstance(original, staticmethod | classmethod) or inspect.iscoroutinefunction(
            original
        ):
            continue
        setattr(owner, attr, timers.wrap(stage, original))
        wrapped.append(target)
    return wrapped


class CpuProbe:
    def __init__(self, crawler: Any, path: Path, stages: bool):
        self.crawler = crawler
        self.path = path
        self.timers: _Timers | None = None
        self.wrapped: list[str] = []
        if stages:
            self.timers = _Timers()
            self.wrapped = _install(self.timers)
            gc.callbacks.append(self.timers.gc_callback)
        self.started: dict[str, float] = {}
        self.threads: dict[str, tuple[str, float, float]] = {}
        self.gc_before: list[dict[str, int]] = []
        self.wall = 0.0

    @classmethod
    def from_crawler(cls, crawler: Any) -> CpuProbe:
        path = crawler.settings.get("CPUPROBE_FILE")
        if not path:
            raise NotConfigured("CPUPROBE_FILE is not set")
        probe = cls(crawler, Path(path), crawler.settings.getbool("CPUPROBE_STAGES"))
        frames = crawler.settings.getint("CPUPROBE_TRACEMALLOC")
        if frames:
            tracemalloc.start(frames)
        crawler.signals.connect(probe.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(probe.spider_closed, signal=signals.spider_closed)
        return probe

    def spider_opened(self, spider: Any) -> None:
        self.gc_before = gc.get_stats()
        self.threads = _threads()
        self.wall = time.perf_counter()
        self.started = _rusage()
        if self.timers is not None:
            self.timers.cpu_ns.clear()
            self.timers.calls.clear()
            self.timers.gc_ns.clear()
            self.timers.gc_collections.clear()

    def spider_closed(self, spider: Any, reason: str) -> None:
        ended = _rusage()
        wall = time.perf_counter() - self.wall
        threads = _threads()
        per_thread = []
        for tid, (name, user, system) in threads.items():
            _, user0, system0 = self.threads.get(tid, (name, 0.0, 0.0))
            per_thread.append({"name": name, "user": user - user0, "system": system - system0})
        gc_after = gc.get_stats()
        report: dict[str, Any] = {
            "reason": reason,
            "wall": wall,
            "user": ended["user"] - self.started["user"],
            "system": ended["system"] - self.started["system"],
            "threads": sorted(per_thread, key=lambda t: -(t["user"] + t["system"])),
            "gc_collections": [
                after["collections"] - before["collections"]
                for before, after in zip(self.gc_before, gc_after, strict=True)
            ],
            "gc_frozen": gc.get_freeze_count(),
            "gc_threshold": list(gc.get_threshold()),
            "rss_kb": _status_kb("VmRSS"),
            "hwm_kb": _status_kb("VmHWM"),
            "stats": {k: v for k, v in self.crawler.stats.get_stats().items()},
        }
        if self.timers is not None:
            report["stages"] = {
                stage: {"cpu": ns / 1e9, "calls": self.timers.calls[stage]}
                for stage, ns in self.timers.cpu_ns.items()
            }
            report["gc"] = {
                str(gen): {"cpu": ns / 1e9, "collections": self.timers.gc_collections[gen]}
                for gen, ns in self.timers.gc_ns.items()
            }
            report["wrapped"] = self.wrapped
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(report, default=str, indent=1, sort_keys=True))
        if tracemalloc.is_tracing():
            gc.collect()
            tracemalloc.take_snapshot().dump(str(self.path) + ".tracemalloc")
            tracemalloc.stop()
