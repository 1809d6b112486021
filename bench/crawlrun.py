"""Run `scrapy crawl qutoutiao` over a generated site (bench/sitegen.py) the way cron does, as
a subprocess, and return the crawl's stats (from STATS_FILE) with the wall time and the CPU the
crawl process used.

Benchmarks share this so that every figure they compare comes from the same kind of run: a
fresh state directory per crawl, AutoThrottle off (it would measure its own delays, not the
pipeline) and warnings-only logging.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.sitegen import GeneratedSite

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "AUTOTHROTTLE_ENABLED": "False",
    "LOG_LEVEL": "WARNING",
}

__all__ = ["ROOT", "crawl_site", "run_crawl"]


def run_crawl(
    site: GeneratedSite,
    base_url: str,
    workdir: Path,
    name: str,
    *,
    cwd: Path = ROOT,
    prefix: tuple[str, ...] = (),
    python: str = sys.executable,
    **settings: str,
) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """Run `scrapy crawl qutoutiao` over every listing page of `site` from `base_url`, with a
    state directory of its own under `workdir`; return the finished process, its wall time and
    the user and system CPU seconds it used (getrusage of the child, start-up included); `cwd`
    is the project checkout to run (another commit's, to compare) and `python` the interpreter
    whose installation it is (an editable install maps aggregator.pipelines and
    aggregator.spiders to its own checkout, whatever `cwd` is), `prefix` a command to run it
    under (e.g. `perf stat ... --`). Exits
    the benchmark when the crawl fails, since a failed crawl's figures mean nothing."""
    merged = {
        **SETTINGS,
        "QUTOUTIAO_API_BASE": base_url,
        "STATE_DIR": str(workdir / f"state-{name}"),
        **settings,
    }
    cmd = [*prefix, python, "-m", "scrapy", "crawl", "qutoutiao"]
    cmd += ["-a", f"cid={site.cid}", "-a", f"pages={site.pages}", "-a", f"limit={site.per_page}"]
    for key, value in merged.items():
        cmd += ["-s", f"{key}={value}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"crawl {name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc, wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def crawl_site(
    site: GeneratedSite, base_url: str, workdir: Path, name: str, **settings: str
) -> dict:
    """Crawl every listing page of `site` from `base_url`; `name` keeps the run's state and
    stats apart from the others in `workdir`. Returns the crawl's stats (STATS_FILE) with
    `wall_seconds` and `cpu_seconds` (the crawl process's user + system CPU) added."""
    stats_file = workdir / f"stats-{name}.json"
    _, wall, user, system = run_crawl(
        site, base_url, workdir, name, STATS_FILE=str(stats_file), **settings
    )
    stats = json.loads(stats_file.read_text())
    stats["wall_seconds"] = wall
    stats["cpu_seconds"] = user + system
    return stats
