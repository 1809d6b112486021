"""Cluster mode against a real Redis: workers in subprocesses (`scrapy worker`), the coordinator
(`scrapy crawlall` with CLUSTER_URI) and a replay site; JSON queues only.

The slow part is starting Python processes on a loaded two-core machine, so runs are small and
start side by side: the one-machine reference crawl runs beside the first cluster run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from conftest import ROOT, TEST_SETTINGS
from scrapy import Request
from scrapy.settings import Settings

from aggregator import stats as keys
from aggregator.cluster import serializer
from aggregator.cluster.keys import ClusterKeys
from aggregator.cluster.queue import LeasingQueue, requeue_expired
from aggregator.devtools.replay import ReplayServer
from aggregator.state.claims import CLAIMED, RECHECK

sys.path.insert(0, str(ROOT / "bench"))
from sitegen import generate_site

ARTICLES = 24
RATE = 15


def scrapy_cmd(*args: str, **settings: str) -> list[str]:
    cmd = [sys.executable, "-m", "scrapy", *args]
    for name, value in {**TEST_SETTINGS, **settings}.items():
        cmd += ["-s", f"{name}={value}"]
    return cmd


class TimedLog(list):
    """The replay server's request log, with when each request arrived."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def append(self, item):
        self.times.append(time.monotonic())
        super().append(item)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A generated site, and the posts one machine makes of it (`scrapy crawl`, started in the
    background: `reference()` waits for it)."""
    root = tmp_path_factory.mktemp("cluster-site")
    generated = generate_site(root / "site", ARTICLES, cid="900", per_page=6)
    with ReplayServer([generated.directory], latency=0.05) as local_server:
        local = subprocess.Popen(
            scrapy_cmd(
                "crawl",
                "qutoutiao",
                "-a",
                "cid=900",
                "-a",
                f"pages={generated.pages}",
                QUTOUTIAO_API_BASE=local_server.base_url,
                STATE_DIR=str(root / "local-state"),
                OUTPUT_URI=str(root / "local-out"),
            ),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        posts: dict[str, bytes] = {}

        def reference() -> dict[str, bytes]:
            if not posts:
                _, err = local.communicate(timeout=90)
                assert local.returncode == 0, err[-2000:]
                posts.update({p.name: p.read_bytes() for p in (root / "local-out").glob("*.md")})
                assert len(posts) == ARTICLES
            return posts

        try:
            yield SimpleNamespace(generated=generated, root=root, reference=reference)
            reference()
        finally:
            if local.poll() is None:
                local.kill()
                local.wait(10)


def sources_file(tmp_path: Path, pages: int) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(
        f"""
[sources.gen]
spider = "qutoutiao"
args = {{ cid = "900", pages = "{pages}" }}
categories = ["新媒体", "趣头条", "分类"]
author = "趣头条"
""",
        encoding="utf-8",
    )
    return path


def cluster_settings(tmp_path, server, url, prefix, **more) -> dict[str, str]:
    return {
        "QUTOUTIAO_API_BASE": server.base_url,
        "CLUSTER_URI": url,
        "CLUSTER_PREFIX": prefix,
        "CLUSTER_LEASE": "2",
        "CONCURRENT_REQUESTS": "2",
        "OUTPUT_URI": str(tmp_path / "out"),
        "SOURCES_FILE": str(sources_file(tmp_path, 4)),
        **more,
    }


class Processes:
    """Subprocesses of one test, all stopped whatever happens."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def worker(self, worker_id: str, settings: dict[str, str]) -> subprocess.Popen:
        log = open(self.tmp_path / f"worker-{worker_id}-{len(self.procs)}.log", "w")  # noqa: SIM115
        cmd = scrapy_cmd(
            "worker",
            "--until-idle",
            "60",  # a safety net: the test stops them (SIGTERM) once the coordinator is done
            CLUSTER_WORKER_ID=worker_id,
            STATE_DIR=str(self.tmp_path / f"w-{worker_id}"),
            **settings,
        )
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def coordinator(self, settings: dict[str, str]) -> subprocess.Popen:
        cmd = scrapy_cmd("crawlall", STATE_DIR=str(self.tmp_path / "coordinator"), **settings)
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        return proc

    def stop_workers(self) -> list[int | None]:
        """SIGTERM to the workers still running (a graceful stop); their exit statuses."""
        workers = [p for p in self.procs if p.args[3] == "worker"]
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return [proc.wait(60) for proc in workers]

    def logs(self) -> str:
        return "\n".join(p.read_text()[-1500:] for p in self.tmp_path.glob("worker-*.log"))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_three_workers_one_killed_and_back_redis_restarted_every_article_once_at_the_rate(
    tmp_path, site
):
    """One run, everything that can go wrong: a worker SIGKILLed while it holds requests and
    started again under the same id, then Redis (private, AOF with fsync always) stopped and
    started again on the same port. Every article is published once with one machine's bytes,
    the domain rate holds at the site, and the run ends like any other."""
    from redisfixtures import PrivateRedis

    generated = site.generated
    redis_server = PrivateRedis(tmp_path / "redis").start()
    cluster_keys = ClusterKeys("agg")
    client = redis.Redis.from_url(redis_server.url)
    procs = Processes(tmp_path)
    with ReplayServer([generated.directory], latency=0.05) as server:
        server.requests = arrivals = TimedLog()
        settings = cluster_settings(
            tmp_path, server, redis_server.url, "agg", CLUSTER_DOMAIN_RATE=str(RATE)
        )
        try:
            workers = [procs.worker(f"w{n}", settings) for n in range(3)]
            coordinator = procs.coordinator(settings)
            victim, hits_at_kill = workers[0], {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and coordinator.poll() is None:
                held = {
                    lease: client.hget(cluster_keys.leases, lease)
                    for lease in (k.decode() for k in client.hkeys(cluster_keys.leases))
                    if lease.startswith("w0:")
                }
                if held and len(arrivals) >= 6:  # mid-run, holding requests
                    victim.send_signal(signal.SIGKILL)
                    urls = [json.loads(v.split(b"\n", 2)[2])["url"] for v in held.values() if v]
                    hits_at_kill = {u: server.hits(u.split(server.base_url, 1)[1]) for u in urls}
                    break
                time.sleep(0.02)
            assert hits_at_kill, "the victim never held a lease:\n" + procs.logs()
            client.close()
            redis_server.stop()
            time.sleep(1.5)
            redis_server.start()
            # back under the same id: it must not publish what its last life held
            procs.worker("w0", settings)
            status = subprocess.Popen(
                scrapy_cmd("cluster", "--json", **settings),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            out, err = coordinator.communicate(timeout=90)
            shown, status_err = status.communicate(timeout=60)
            assert procs.stop_workers() == [-signal.SIGKILL, 0, 0, 0]
        finally:
            procs.stop()
            client = redis.Redis.from_url(redis_server.url)
    try:
        assert coordinator.returncode == 0, err[-3000:] + procs.logs()
        assert "gen " in out and "total" in out
        logs = procs.logs() + err
        assert "unreachable" in logs and "is back" in logs

        # every article once, with one machine's bytes
        posts = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.md")}
        assert posts == site.reference()
        assert client.hlen("agg:published") == ARTICLES
        assert client.zcard(cluster_keys.inflight) == 0
        assert client.zcard(cluster_keys.queue("gen")) == 0
        # each request the dead worker held went back to the queue and was fetched again
        for url, hits in hits_at_kill.items():
            assert server.hits(url.split(server.base_url, 1)[1]) > hits, url
        last_run = json.loads((tmp_path / "coordinator" / "last-run.json").read_text())
        assert last_run["status"] == "ok" and last_run["exit_status"] == 0
        row = last_run["sources"][0]
        assert row["listings"]["pages"] >= generated.pages
        # the dead worker's last report counts; what it wrote but never reported is "already
        # published" for whoever did its request again
        assert row["articles"]["new"] + row["articles"]["already_published"] >= ARTICLES
    finally:
        client.close()
        redis_server.stop()

    # polite as a cluster: RATE requests a second to the site across the workers, measured at
    # the site (without the limit, 6 requests in flight at 50 ms would make ~100/s)
    times = arrivals.times
    assert len(times) >= ARTICLES + generated.pages
    span = times[-1] - times[0]
    assert span >= (len(times) - 1) / RATE * 0.9, (len(times), span)
    for start in range(len(times)):
        within = [t for t in times[start:] if t - times[start] < 1.0]
        assert len(within) <= RATE + 2, (start, len(within))

    # `scrapy cluster --json`, asked once Redis was back
    assert status.returncode == 0, status_err[-2000:]
    shown = json.loads(shown)
    # (on a loaded machine the run may be over by the time the command has started)
    assert shown["run"]["status"] in {"running", "finishing", "done"}
    assert shown["run"]["sources"] == ["gen"]
    assert "gen" in shown["queues"] and isinstance(shown["in_flight"], int)
    assert {"w1", "w2"} <= {w["id"] for w in shown["workers"]}
    assert all(
        {"host", "pid", "last_heartbeat", "requests_done"} <= set(w) for w in shown["workers"]
    )


def test_cluster_exit_statuses_before_anything_is_crawled(tmp_path, redis_url, redis_prefix):
    """crawl refuses cluster mode (2); Redis unreachable (1, password hidden); malformed URI
    (2); another coordinator holds the run lock (75). Side by side: each is a process start."""
    from redisfixtures import free_port

    client = redis.Redis.from_url(redis_url)
    client.set(f"{redis_prefix}:lock", json.dumps({"pid": 1, "host": "elsewhere"}))
    sources = str(sources_file(tmp_path, 1))
    base = {"STATE_DIR": str(tmp_path / "state"), "SOURCES_FILE": sources}
    down = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    runs = {
        "crawl": scrapy_cmd("crawl", "qutoutiao", CLUSTER_URI=redis_url, **base),
        "unreachable": scrapy_cmd("worker", CLUSTER_URI=down, **base),
        "malformed": scrapy_cmd("crawlall", CLUSTER_URI="redis://h:port/0", **base),
        "locked": scrapy_cmd(
            "crawlall", CLUSTER_URI=redis_url, CLUSTER_PREFIX=redis_prefix, **base
        ),
    }
    procs = {
        name: subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, cmd in runs.items()
    }
    results = {
        name: (proc.communicate(timeout=90), proc.returncode) for name, proc in procs.items()
    }
    client.close()
    (_, err), code = results["crawl"]
    assert code == 2 and "crawlall" in err, err
    (_, err), code = results["unreachable"]
    assert code == 1 and "cannot reach Redis" in err and "s3cret" not in err, err
    (_, err), code = results["malformed"]
    assert code == 2 and "CLUSTER_URI" in err and "the port is not a number" in err, err
    (_, err), code = results["locked"]
    assert code == 75 and "pid 1 on host elsewhere" in err, err


# --- the queue: JSON only -----------------------------------------------------------------
class _Spider:
    name = "qutoutiao"

    def __init__(self, prefix):
        values: dict[str, int] = {}
        self.crawler = SimpleNamespace(
            settings=Settings(
                {"CLUSTER_PREFIX": prefix, "CLUSTER_SOURCE": "src", "CLUSTER_WORKER_ID": "w-t"}
            ),
            stats=SimpleNamespace(
                values=values, inc_value=lambda k: values.__setitem__(k, values.get(k, 0) + 1)
            ),
        )

    def parse(self, response):
        pass


@pytest.fixture
def queue(redis_url, redis_prefix):
    server = redis.Redis.from_url(redis_url)
    yield LeasingQueue(server, _Spider(redis_prefix), "unused", serializer)
    server.close()


def test_a_request_that_cannot_be_serialised_is_an_error_naming_its_url(queue):
    spider = queue.spider
    request = Request("http://example.com/a?x=1", callback=spider.parse, meta={"obj": object()})
    with pytest.raises(serializer.UnserializableRequest, match=r"<http://example.com/a\?x=1>"):
        queue.push(request)
    assert len(queue) == 0
    fine = Request(
        "http://example.com/b", callback=spider.parse, meta={"k": [1, "二"]}, body=b"\xff"
    )
    queue.push(fine)
    popped = queue.pop()
    assert popped.url == fine.url and popped.meta["k"] == [1, "二"] and popped.body == b"\xff"
    assert popped.callback == spider.parse


def test_the_scheduler_logs_and_counts_an_unserialisable_request(redis_url, redis_prefix, caplog):
    from aggregator.cluster.scheduler import ClusterScheduler

    spider = _Spider(redis_prefix)
    server = redis.Redis.from_url(redis_url)
    scheduler = ClusterScheduler(server=server, persist=True, serializer=serializer)
    scheduler.spider, scheduler.stats = spider, spider.crawler.stats
    scheduler.queue = LeasingQueue(server, spider, "unused", serializer)
    scheduler.buffer = []
    request = Request("http://example.com/obj", callback=spider.parse, meta={"o": object()})
    assert scheduler.enqueue_request(request) is False
    assert spider.crawler.stats.values[keys.CLUSTER_UNSERIALIZABLE] == 1
    assert "Cannot queue request <http://example.com/obj>" in caplog.text
    assert keys.failures({keys.CLUSTER_UNSERIALIZABLE: 1}) == 1  # the run exits 1
    server.close()


def test_a_pickled_payload_in_the_queue_is_refused_not_run(queue, tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    queue.server.zadd(queue.key, {pickle.dumps(Evil()): 0})
    queue.server.zadd(queue.key, {json.dumps({"url": "http://x/", "_class": "os.system"}): 1})
    queue.server.zadd(queue.key, {json.dumps({"url": "http://x/", "callback": "__init__"}): 2})
    assert queue.pop() is None and queue.pop() is None and queue.pop() is None
    assert not marker.exists()
    assert queue.spider.crawler.stats.values[keys.CLUSTER_REFUSED] == 3
    assert queue.server.zcard(queue.keys.inflight) == 0  # refused payloads are not leased


def test_an_expired_lease_goes_back_and_its_article_is_checked_again(queue):
    queue.lease = 0.2
    request = Request(
        "http://example.com/c",
        callback=queue.spider.parse,
        meta={"article_key": "qutoutiao-c", CLAIMED: "w-dead"},
    )
    queue.push(request)
    first = queue.pop()
    assert first.meta[CLAIMED] == "w-dead" and RECHECK not in first.meta
    assert len(queue) == 0 and requeue_expired(queue.server, queue.keys) == 0
    time.sleep(0.3)
    assert requeue_expired(queue.server, queue.keys) == 1
    again = queue.pop()
    assert again.url == "http://example.com/c" and again.meta[CLAIMED] == "w-dead"
    assert again.meta[RECHECK] is True  # the claim middleware checks "published?" again
    assert queue.server.scard(queue.keys.requeued) == 0


def test_seen_and_queued_in_one_step(queue):
    one = queue._encode_request(Request("http://example.com/d", callback=queue.spider.parse))
    assert queue.push_encoded(one, 0, "fp-d") is True
    assert queue.push_encoded(one, 0, "fp-d") is False  # seen this run
    assert queue.push_encoded(one, 0, None) is True  # dont_filter
    assert len(queue) == 1 and queue.server.sismember(queue.seen, "fp-d")
