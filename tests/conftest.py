"""Shared fixtures: one replay server for the session, and a helper that runs real crawls
(`scrapy crawl` in a subprocess, as cron and operators run it) against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import crawlproc
import pytest

from aggregator.devtools.replay import ReplayServer

ROOT = Path(__file__).resolve().parent.parent

if ROOT.name == "mutants":
    # Under the mutation run (README, Tests) the copy in mutants/ is on sys.path, but the editable
    # install maps aggregator.pipelines and aggregator.spiders to the originals, and the run
    # names their mutants after the copy's top-level packages (pipelines.write, ...). Import
    # aggregator.pipelines.X as the copy's pipelines.X, the one module under both names.
    import importlib
    import importlib.util

    class _MutantsFinder:
        prefixes = ("aggregator.pipelines", "aggregator.spiders")

        @classmethod
        def find_spec(cls, fullname, path=None, target=None):
            if not fullname.startswith(cls.prefixes):
                return None
            module = importlib.import_module(fullname.removeprefix("aggregator."))
            return importlib.util.spec_from_loader(
                fullname, cls, is_package=hasattr(module, "__path__")
            )

        @staticmethod
        def create_module(spec):
            return importlib.import_module(spec.name.removeprefix("aggregator."))

        @staticmethod
        def exec_module(module):
            pass

    sys.meta_path.insert(0, _MutantsFinder)


FIXTURES = Path(__file__).resolve().parent / "fixtures"
REFERENCE = FIXTURES / "qutoutiao"

# Fast, deterministic crawls against 127.0.0.1: no throttling, one quick retry.
TEST_SETTINGS = {
    "AUTOTHROTTLE_ENABLED": "False",
    "RETRY_TIMES": "1",
    "DOWNLOAD_TIMEOUT": "10",
    "LOG_LEVEL": "INFO",
}


def pytest_unconfigure(config):
    crawlproc.stop()


@pytest.fixture(scope="session")
def replay_server():
    roots = [FIXTURES / "site", REFERENCE, FIXTURES / "feeds", FIXTURES / "images"]
    with ReplayServer(roots) as server:
        yield server


@pytest.fixture
def replay(replay_server):
    """The session's server with a clean slate: no overrides, empty request log."""
    replay_server.reset()
    yield replay_server
    replay_server.reset()


# Runs a command under an address-space limit (0: none) and writes its peak RSS (KiB) to a
# file: a crawl that blows up its memory dies at the limit instead of taking the machine's.
_MEASURED = (
    "import resource, subprocess, sys\n"
    "limit, report, command = int(sys.argv[1]), sys.argv[2], sys.argv[3:]\n"
    "def cap():\n"
    "    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "code = subprocess.call(command, preexec_fn=cap if limit else None)\n"
    "with open(report, 'w') as f:\n"
    "    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


@dataclass
class CrawlResult:
    returncode: int
    stdout: str
    stderr: str
    stats: dict
    output: Path
    peak_rss_kib: int | None = None  # with Crawler.command(memory_limit=...)

    def posts(self) -> dict[str, bytes]:
        if not self.output.is_dir():
            return {}
        return {p.name: p.read_bytes() for p in sorted(self.output.glob("*.md"))}

    def stat(self, name: str) -> int:
        return int(self.stats.get(f"aggregator/{name}", 0))


class Crawler:
    """Runs crawls that share one state directory and one output directory, like successive
    cron runs on one machine."""

    def __init__(self, workdir: Path, base_url: str):
        self.workdir = workdir
        self.base_url = base_url
        self.state = workdir / "state"
        self.output = workdir / "output"
        self.runs = 0

    def settings(self, **overrides: str) -> dict[str, str]:
        settings = dict(TEST_SETTINGS)
        settings.update(
            QUTOUTIAO_API_BASE=self.base_url,
            STATE_DIR=str(self.state),
            OUTPUT_URI=str(self.output),
        )
        settings.update({k: str(v) for k, v in overrides.items()})
        return settings

    def command(
        self,
        *args: str,
        timeout: float = 120,
        env: dict | None = None,
        memory_limit: int | None = None,
        **settings: str,
    ):
        """Run `scrapy *args`; with `memory_limit` (bytes of address space), also measure the
        crawl's peak RSS (CrawlResult.peak_rss_kib)."""
        self.runs += 1
        stats_file = self.workdir / f"stats-{self.runs}.json"
        merged = self.settings(STATS_FILE=str(stats_file), **settings)
        cmd = [sys.executable, "-m", "scrapy", *args]
        for name, value in merged.items():
            cmd += ["-s", f"{name}={value}"]
        rss_file = self.workdir / f"rss-{self.runs}.txt"
        if memory_limit is not None:
            cmd = [sys.executable, "-c", _MEASURED, str(memory_limit), str(rss_file), *cmd]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if memory_limit is not None:  # the wrapper measures a child it starts itself
            proc = subprocess.run(
                cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env
            )
        else:
            proc = crawlproc.run(cmd, cwd=ROOT, env=full_env, timeout=timeout)
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        rss = int(rss_file.read_text()) if rss_file.exists() else None
        return CrawlResult(proc.returncode, proc.stdout, proc.stderr, stats, self.output, rss)

    def crawl(self, spider: str, *spider_args: str, **settings: str) -> CrawlResult:
        args = ["crawl", spider]
        for arg in spider_args:
            args += ["-a", arg]
        return self.command(*args, **settings)


@pytest.fixture
def crawler(tmp_path, replay) -> Crawler:
    return Crawler(tmp_path, replay.base_url)


# --- S3 over real HTTP: moto's standalone server (helpers in tests/s3fixtures.py) ----------
@pytest.fixture(scope="session")
def moto_server():
    """One moto server for the session, on a free localhost port."""
    from s3fixtures import MotoServer

    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(moto_server):
    """A fresh, empty bucket on the session's moto server."""
    from s3fixtures import S3Bucket

    return S3Bucket(moto_server.endpoint_url).create()


@pytest.fixture
def fault_proxy(moto_server):
    """A proxy in front of the moto server that injects faults and delays."""
    from s3fixtures import FaultProxy

    proxy = FaultProxy(moto_server.endpoint_url).start()
    yield proxy
    proxy.stop()


# --- Redis (tests/redisfixtures.py): the shared server with a key prefix per test ---------
@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """The session's Redis: AGGREGATOR_TEST_REDIS, else 127.0.0.1:6379 when it answers, else a
    private redis-server started for the session."""
    from redisfixtures import shared_redis_url

    url, server = shared_redis_url(tmp_path_factory.mktemp("redis"))
    yield url
    if server is not None:
        server.stop()


@pytest.fixture
def redis_prefix(redis_url):
    """A fresh key prefix; its keys (and only its keys) are deleted afterwards."""
    from redisfixtures import delete_prefix, new_prefix

    prefix = new_prefix()
    yield prefix
    delete_prefix(redis_url, prefix)
