"""CPU per article of the whole product against a stock Scrapy crawl that does nothing with its
items, plus where the product's CPU goes and what memory it keeps per article.

The generated 趣头条 site (bench/sitegen.py) is crawled by `scrapy crawl qutoutiao` (a subprocess,
as cron runs it) from a local ReplayServer answering at once, so each crawl is bound by its own
CPU. Two configurations, alternated within one run (`--rounds` times each, the order swapped
every round so neither always runs on a warmer or quieter machine):

* full: the product as shipped (every pipeline, the project's extensions and settings,
  OUTPUT_FSYNC on, posts to a fresh directory per round);
* stock bare: the same spider with `ITEM_PIPELINES={}`, the project's own extensions off
  (`EXTENSIONS` entries set to None, except the crawl state the spider reads and claims keys
  in) and Scrapy's default `CONCURRENT_ITEMS` (100).

Both run AutoThrottle off and with warnings-only logging (bench/crawlrun.py). The CPU is the
crawl process's user and system time (getrusage) from spider_opened to spider_closed, taken
inside the process by a benchmark-only extension (bench/cpuprobe.py), so interpreter start-up
and imports (which differ by configuration, once per run, not per article) are left out; the
whole process's CPU (getrusage of the child) is printed as well. Figures are min and median
over the rounds; the ratio is stock bare / full (>= 1.0: the product costs no more CPU per
article than Scrapy alone).

Then one instrumented full crawl splits the CPU by stage (timers around each pipeline stage and
spider callback, every garbage collection timed), and full and bare crawls of 2,000 and
`--memory-articles` (20,000) articles give the resident memory retained per article.

`--s3` adds the full product writing to a local S3 server (moto, its own process) and prints
the files/S3 ratio of CPU per article. `--variant NAME:SETTING=VALUE[;SETTING=VALUE...]` adds
the full product with those settings to the alternation (e.g.
`--variant ci100:CONCURRENT_ITEMS=100` to measure one shipped setting).
Outputs are kept until the end of the run (this machine's filesystem makes creating files after
mass deletes dearer, which would skew system time), then deleted with the temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from aggregator import settings as project_settings  # noqa: E402
from aggregator.devtools.replay import ReplayServer  # noqa: E402
from bench.crawlrun import run_crawl  # noqa: E402
from bench.sitegen import GeneratedSite, generate_site  # noqa: E402

PROBE = "bench.cpuprobe.CpuProbe"
# --futex: count futex calls (GIL and thread hand-offs) and context switches of each crawl
# process with `perf stat` (whole process, start-up included; needs perf and tracepoints)
PERF_EVENTS = ("syscalls:sys_enter_futex", "context-switches")
COUNT_SWITCHES = False
TARGET_RATIO = 1.0
# project extensions the spider itself cannot run without (its start() reads the crawl state for
# pending articles and its claims middleware claims keys there): kept in the bare configuration
SPIDER_NEEDS = {"aggregator.state.component.CrawlStateExtension"}


def full_settings() -> dict[str, str]:
    return {"EXTENSIONS": json.dumps({**project_settings.EXTENSIONS, PROBE: 0})}


def bare_settings() -> dict[str, str]:
    extensions: dict[str, int | None] = {
        name: None if name not in SPIDER_NEEDS else order
        for name, order in project_settings.EXTENSIONS.items()
    }
    extensions[PROBE] = 0
    return {
        "ITEM_PIPELINES": "{}",
        "EXTENSIONS": json.dumps(extensions),
        "CONCURRENT_ITEMS": "100",
    }


@dataclass
class Config:
    name: str
    settings: dict[str, str]
    writes: bool
    runs: list[dict] = field(default_factory=list)
    cwd: Path = ROOT
    python: str = sys.executable


@dataclass
class Crawl:
    """One crawl's figures: per-article CPU in the crawl window and for the whole process."""

    items: int
    user: float
    system: float
    process_user: float
    process_system: float
    report: dict

    @property
    def total(self) -> float:
        return self.user + self.system

    def ms(self, seconds: float) -> float:
        return seconds / self.items * 1000


def crawl(
    site: GeneratedSite, base_url: str, workdir: Path, name: str, config: Config, **extra: str
) -> Crawl:
    probe_file = workdir / f"probe-{name}.json"
    settings = {k: v.replace("{run}", name) for k, v in config.settings.items()}
    settings.update(CPUPROBE_FILE=str(probe_file), **extra)
    output = workdir / f"out-{name}"
    if config.writes:
        settings["OUTPUT_URI"] = str(output)
    prefix: tuple[str, ...] = ()
    counters = workdir / f"perf-{name}.csv"
    if COUNT_SWITCHES:
        prefix = ("perf", "stat", "-x,", "-e", ",".join(PERF_EVENTS), "-o", str(counters), "--")
    _, _, user, system = run_crawl(
        site,
        base_url,
        workdir,
        name,
        cwd=config.cwd,
        prefix=prefix,
        python=config.python,
        **settings,
    )
    report = json.loads(probe_file.read_text())
    if COUNT_SWITCHES:
        report["perf"] = _perf_counts(counters)
    items = int(report["stats"].get("item_scraped_count", 0))
    if items != site.articles:
        raise SystemExit(f"crawl {name} scraped {items} items, expected {site.articles}")
    if config.writes:
        written = sum(1 for _ in output.glob("*.md"))
        if written != site.articles:
            raise SystemExit(f"crawl {name} wrote {written} posts, expected {site.articles}")
    return Crawl(items, report["user"], report["system"], user, system, report)


def _perf_counts(path: Path) -> dict[str, float]:
    """`perf stat -x,` output: count,unit,event,..."""
    counts = {}
    for line in path.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in PERF_EVENTS:
            counts[fields[2]] = float(fields[0]) if fields[0].replace(".", "").isdigit() else 0.0
    return counts


def summary(values: list[float]) -> str:
    return f"{min(values):5.2f} / {statistics.median(values):5.2f}"


def compare(site: GeneratedSite, workdir: Path, configs: list[Config], rounds: int) -> None:
    with ReplayServer(site.directory) as server:
        for round_ in range(rounds):
            order = configs if round_ % 2 == 0 else configs[::-1]
            for config in order:
                result = crawl(site, server.base_url, workdir, f"{config.name}-{round_}", config)
                config.runs.append(result)
                print(
                    f"  round {round_}: {config.name:<10} {result.ms(result.total):.2f} ms/article "
                    f"(user {result.ms(result.user):.2f}, system {result.ms(result.system):.2f})",
                    flush=True,
                )
    print(f"\nCPU per article, ms, min / median of {rounds} (crawl window; whole process last):")
    print(f"  {'config':<10} {'user':>13} {'system':>13} {'total':>13} {'whole process':>15}")
    for config in configs:
        runs = config.runs
        print(
            f"  {config.name:<10} {summary([r.ms(r.user) for r in runs]):>13} "
            f"{summary([r.ms(r.system) for r in runs]):>13} "
            f"{summary([r.ms(r.total) for r in runs]):>13} "
            f"{summary([r.ms(r.process_user + r.process_system) for r in runs]):>15}"
        )
    by_name = {config.name: config for config in configs}
    if "s3" in by_name:
        s3 = by_name["s3"]
        by_min = min(r.total for r in configs[0].runs) / min(r.total for r in s3.runs)
        paired = statistics.median(
            f.total / t.total for f, t in zip(configs[0].runs, s3.runs, strict=True)
        )
        extra = statistics.median(
            (t.total - f.total) / t.items * 1000
            for f, t in zip(configs[0].runs, s3.runs, strict=True)
        )
        print(
            f"  ratio full (files) / s3: {by_min:.2f} (mins), {paired:.2f} (median of rounds); "
            f"target >= 0.8; S3 costs {extra:.2f} ms/article more than files (median)"
        )
    if COUNT_SWITCHES:
        print("  per article, whole process (perf stat), median: futex calls / context switches")
        for config in configs:
            futex = statistics.median(
                r.report["perf"].get(PERF_EVENTS[0], 0) / r.items for r in config.runs
            )
            switches = statistics.median(
                r.report["perf"].get(PERF_EVENTS[1], 0) / r.items for r in config.runs
            )
            print(f"    {config.name:<10} {futex:6.1f} / {switches:6.1f}")
    full, bare = configs[0], configs[1]
    for config in [full, *(c for c in configs[2:] if c.name != "s3")]:
        by_min = min(r.total for r in bare.runs) / min(r.total for r in config.runs)
        by_median = statistics.median(r.total for r in bare.runs) / statistics.median(
            r.total for r in config.runs
        )
        paired = statistics.median(
            b.total / f.total for b, f in zip(bare.runs, config.runs, strict=True)
        )
        print(
            f"  ratio stock bare / {config.name}: {by_min:.2f} (mins), {by_median:.2f} (medians), "
            f"{paired:.2f} (median of rounds); target >= {TARGET_RATIO}"
        )


def stage_table(site: GeneratedSite, workdir: Path, full: Config) -> None:
    """One instrumented full crawl: CPU per article by stage."""
    with ReplayServer(site.directory) as server:
        result = crawl(site, server.base_url, workdir, "stages", full, CPUPROBE_STAGES="1")
    report = result.report
    per = 1000 / result.items
    total = result.total * per
    print(f"\nWhere the full product's CPU goes (one instrumented crawl, {total:.2f} ms/article):")
    rows: list[tuple[str, float, str]] = []
    for stage, figures in sorted(report.get("stages", {}).items(), key=lambda s: -s[1]["cpu"]):
        rows.append((stage, figures["cpu"] * per, f"{figures['calls']} calls"))
    for gen, figures in sorted(report.get("gc", {}).items()):
        rows.append((f"GC generation {gen}", figures["cpu"] * per, f"{figures['collections']}x"))
    measured = sum(row[1] for row in rows)
    rows.append(("Scrapy, Twisted, asyncio (the rest)", total - measured, ""))
    for name, ms, note in rows:
        print(f"  {name:<38} {ms:6.3f} ms  {ms / total * 100:5.1f} %  {note}")
    print("  by thread (ms/article, user + system):")
    for thread in report["threads"]:
        cpu = (thread["user"] + thread["system"]) * per
        if cpu >= 0.005:
            print(f"    {thread['name']:<20} {cpu:6.3f}")
    print(
        f"  gc: collections by generation {report['gc_collections']}, frozen objects "
        f"{report['gc_frozen']}, thresholds {report['gc_threshold']}"
    )


def memory(workdir: Path, configs: list[Config], small: int, large: int) -> None:
    """Resident memory at spider close, crawls of `small` and `large` articles: the growth per
    article is what a crawl keeps per article it has finished with."""
    sites = {n: generate_site(workdir / f"site-{n}", n, seed=7) for n in (small, large)}
    print(f"\nMemory retained per article (RSS at spider close, {small:,} vs {large:,} articles):")
    for config in configs:
        rss: dict[int, dict] = {}
        for n, site in sites.items():
            with ReplayServer(site.directory) as server:
                rss[n] = crawl(
                    site, server.base_url, workdir, f"mem-{config.name}-{n}", config
                ).report
        grown = (rss[large]["rss_kb"] - rss[small]["rss_kb"]) * 1024 / (large - small)
        peak = (rss[large]["hwm_kb"] - rss[small]["hwm_kb"]) * 1024 / (large - small)
        print(
            f"  {config.name:<10} RSS {rss[small]['rss_kb'] / 1024:6.1f} -> "
            f"{rss[large]['rss_kb'] / 1024:6.1f} MiB: {grown:6.0f} B/article "
            f"(peak RSS {peak:6.0f} B/article)"
        )


def traced(workdir: Path, full: Config, small: int, large: int, frames: int, top: int) -> None:
    """Full crawls of `small` and `large` articles under tracemalloc (bench/cpuprobe.py): the
    allocation sites whose live memory at spider close grows with the crawl, per extra article,
    so that retention in the project's code can be told from the allocator's own growth (RSS
    includes freed but unreturned pymalloc arenas; tracemalloc counts live blocks only)."""
    import tracemalloc

    sites = {n: generate_site(workdir / f"site-{n}", n, seed=7) for n in (small, large)}
    snapshots = {}
    for n, site in sites.items():
        name = f"trace-{n}"
        with ReplayServer(site.directory) as server:
            crawl(site, server.base_url, workdir, name, full, CPUPROBE_TRACEMALLOC=str(frames))
        snapshot = tracemalloc.Snapshot.load(str(workdir / f"probe-{name}.json.tracemalloc"))
        snapshots[n] = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    per = large - small
    diffs = snapshots[large].compare_to(snapshots[small], "traceback")
    total = sum(d.size_diff for d in diffs)
    print(
        f"\nLive memory at spider close under tracemalloc, {small:,} vs {large:,} articles "
        f"(after gc.collect()): {total / per:,.0f} B/article in all; the top {top} sites:"
    )
    for diff in diffs[:top]:
        print(
            f"  {diff.size_diff / per:8,.1f} B/article {diff.count_diff / per:6.2f} blocks/article"
        )
        for line in diff.traceback.format(most_recent_first=True)[: 2 * frames]:
            print(f"      {line}")


def parse_variant(text: str) -> Config:
    name, _, assignments = text.partition(":")
    settings = full_settings()
    for assignment in filter(None, assignments.split(";")):
        key, _, value = assignment.partition("=")
        settings[key.strip()] = value.strip()
    return Config(name, settings, writes=settings.get("ITEM_PIPELINES") != "{}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5, help="crawls of each configuration")
    parser.add_argument("--variant", action="append", default=[], help="NAME:SETTING=VALUE;...")
    parser.add_argument("--memory-articles", type=int, default=20_000, help="0: skip")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="also trace full crawls of --articles and --memory-articles articles and print the "
        "allocation sites (FRAMES deep) whose live memory grows per article",
    )
    parser.add_argument("--top", type=int, default=15, help="sites printed by --tracemalloc")
    parser.add_argument("--no-stages", action="store_true", help="skip the instrumented crawl")
    parser.add_argument(
        "--s3",
        action="store_true",
        help="add the full product writing to moto's S3 server (its own process) as 's3'",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of the project (with this bench/cpuprobe.py copied in), crawled "
        "as 'before' with its own shipped settings, by its own .venv/bin/python when it has one "
        "(this interpreter's editable install would load this checkout's pipelines and spiders)",
    )
    parser.add_argument(
        "--futex", action="store_true", help="count futex calls and context switches (perf)"
    )
    args = parser.parse_args()
    global COUNT_SWITCHES
    COUNT_SWITCHES = args.futex
    full = Config("full", full_settings(), writes=True)
    bare = Config("bare", bare_settings(), writes=False)
    configs = [full, bare, *(parse_variant(v) for v in args.variant)]
    if args.baseline:
        configs.append(baseline_config(args.baseline.resolve()))
    with contextlib.ExitStack() as stack:
        if args.s3:
            configs.append(s3_config(stack))
        run(args, configs, full)


def baseline_config(checkout: Path) -> Config:
    """The full product as another checkout ships it (its own EXTENSIONS, plus the probe)."""
    namespace: dict = {}
    source = (checkout / "aggregator" / "settings.py").read_text()
    exec(compile(source, "baseline settings", "exec"), namespace)
    extensions = {**namespace.get("EXTENSIONS", {}), PROBE: 0}
    python = checkout / ".venv" / "bin" / "python"
    return Config(
        "before",
        {"EXTENSIONS": json.dumps(extensions)},
        writes=True,
        cwd=checkout,
        python=str(python) if python.exists() else sys.executable,
    )


def s3_config(stack: contextlib.ExitStack) -> Config:
    """The full product writing to a bucket of a moto server started for the run; each crawl
    writes under a prefix of its own."""
    from bench.bench_s3 import BUCKET, CREDENTIALS, start_moto

    moto, endpoint = start_moto()
    stack.callback(moto.wait, 10)
    stack.callback(moto.terminate)
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION_NAME"],
    ).create_bucket(Bucket=BUCKET)
    settings = {
        **full_settings(),
        **CREDENTIALS,
        "OUTPUT_URI": f"s3://{BUCKET}/{{run}}",
        "AWS_ENDPOINT_URL": endpoint,
    }
    return Config("s3", settings, writes=False)


def run(args: argparse.Namespace, configs: list[Config], full: Config) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        workdir = Path(tmp)
        site = generate_site(workdir / "site", args.articles)
        print(
            f"site: {site.articles} articles on {site.pages} listing pages, local replay server, "
            f"flat out; {args.rounds} rounds alternating {', '.join(c.name for c in configs)}"
        )
        compare(site, workdir, configs, args.rounds)
        if not args.no_stages:
            stage_table(site, workdir, full)
        if args.memory_articles:
            memory(workdir, configs[:2], args.articles, args.memory_articles)
        if args.tracemalloc and args.memory_articles:
            traced(workdir, full, args.articles, args.memory_articles, args.tracemalloc, args.top)


if __name__ == "__main__":
    main()
