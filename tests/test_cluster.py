"""Cluster mode against a real Redis: workers in subprocesses (`scrapy worker`), the coordinator
(`scrapy crawlall` with CLUSTER_URI) and a replay site; JSON queues only.

The slow part is starting Python processes on a loaded two-core machine, so runs are small and
start side by side: the one-machine reference crawl runs beside the first cluster run."""

from __future__ import annotations

import collections
import json
import os
import re
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

    def worker(
        self, worker_id: str, settings: dict[str, str], env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = open(self.tmp_path / f"worker-{worker_id}-{len(self.procs)}.log", "w")  # noqa: SIM115
        cmd = scrapy_cmd(
            "worker",
            "--until-idle",
            "60",  # a safety net: the test stops them (SIGTERM) once the coordinator is done
            CLUSTER_WORKER_ID=worker_id,
            STATE_DIR=str(self.tmp_path / f"w-{worker_id}"),
            **settings,
        )
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
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

    def logs(self, tail: int | None = 1500) -> str:
        """The workers' logs, each cut to its last `tail` characters (for failure messages)."""
        texts = (p.read_text() for p in self.tmp_path.glob("worker-*.log"))
        return "\n".join(text if tail is None else text[-tail:] for text in texts)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _leases_of(client: redis.Redis, cluster_keys: ClusterKeys, worker: str) -> dict[str, bytes]:
    """The leases `worker` holds now: lease id -> the leased entry."""
    return {
        lease: client.hget(cluster_keys.leases, lease)
        for lease in (k.decode() for k in client.hkeys(cluster_keys.leases))
        if lease.startswith(f"{worker}:")
    }


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
                if _leases_of(client, cluster_keys, "w0") and len(arrivals) >= 6:  # mid-run
                    # frozen, it can ack nothing more: what it holds now is what it dies with
                    victim.send_signal(signal.SIGSTOP)
                    held = _leases_of(client, cluster_keys, "w0")
                    if not held:  # it finished them between the two looks: try again
                        victim.send_signal(signal.SIGCONT)
                        continue
                    victim.send_signal(signal.SIGKILL)
                    victim.wait(10)
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
        logs = procs.logs(tail=None) + err  # whole: more may be logged after the outage
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
    scheduler.tracker = SimpleNamespace(handed_back=lambda request: False)
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


@pytest.mark.parametrize(("start", "lease"), [("fork", "2"), ("exec", "5")])
def test_a_worker_back_under_its_id_at_once_loses_none_of_its_dead_lifes_requests(
    redis_url, redis_prefix, start, lease
):
    """Worker w0 is SIGKILLed holding three leases and its next life, same id, starts before
    they can expire: forked from one process that imported the queue module (`fork`: a launcher
    or supervisor that preloads the project) or a new interpreter (`exec`). The next life must
    not take over its dead life's leases; they expire and each of the six requests is crawled
    exactly once, the dead life's three checked again (their article may be published)."""
    spider = _Spider(redis_prefix)
    server = redis.Redis.from_url(redis_url)
    queue = LeasingQueue(server, spider, "unused", serializer)
    urls = [f"http://example.com/life/{n}" for n in range(6)]
    for n, url in enumerate(urls):
        queue.push(Request(url, callback=spider.parse, priority=-n))  # popped in this order
    helper = str(ROOT / "tests" / "leaselife.py")
    result = subprocess.run(
        [sys.executable, helper, start, redis_url, redis_prefix, lease],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["dead_in_flight"] == 3  # the next life started while they were still leased
    lives = report["incarnations"]  # each life leases and reports stats in a name of its own
    assert lives["dead"] != lives["next"]
    crawled = collections.Counter(url for url, _ in report["crawled"])
    assert crawled == collections.Counter(urls)  # every request once, none lost
    assert {url for url, recheck in report["crawled"] if recheck} == set(urls[:3])
    assert server.zcard(queue.keys.inflight) == server.hlen(queue.keys.leases) == len(queue) == 0
    server.close()


def test_seen_and_queued_in_one_step(queue):
    one = queue._encode_request(Request("http://example.com/d", callback=queue.spider.parse))
    assert queue.push_encoded(one, 0, "fp-d") is True
    assert queue.push_encoded(one, 0, "fp-d") is False  # seen this run
    assert queue.push_encoded(one, 0, None) is True  # dont_filter
    assert len(queue) == 1 and queue.server.sismember(queue.seen, "fp-d")


def summary_rows(table: str) -> list[list[str]]:
    """The summary table's rows without the time column (separators left out)."""
    rows = []
    for line in table.strip().splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if not set(line.strip()) <= {"-", " "}:
            rows.append(cells[:-1])
    return rows


def fetched(server: ReplayServer) -> collections.Counter[str]:
    """How many times the site answered each article URL (listings left out)."""
    return collections.Counter(r for r in list(server.requests) if "outList" not in r)


def test_crawlall_work_crawls_the_whole_run_itself_like_one_machine(
    tmp_path, site, redis_url, redis_prefix
):
    """`crawlall --work` with no other worker: its own worker crawls everything, each article
    is published once with one machine's bytes, and the run ends with the summary, status and
    last-run.json of a one-machine `crawlall` of the same sources (run beside it)."""
    generated = site.generated
    pages = generated.pages
    with (
        ReplayServer([generated.directory], latency=0.02) as server,
        ReplayServer([generated.directory], latency=0.02) as local_server,
    ):
        settings = cluster_settings(tmp_path, server, redis_url, redis_prefix)
        settings["SOURCES_FILE"] = str(sources_file(tmp_path, pages))
        cluster = subprocess.Popen(
            scrapy_cmd("crawlall", "--work", STATE_DIR=str(tmp_path / "coordinator"), **settings),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        alone = {k: v for k, v in settings.items() if not k.startswith("CLUSTER_")}
        local = subprocess.Popen(
            scrapy_cmd(
                "crawlall",
                **{
                    **alone,
                    "QUTOUTIAO_API_BASE": local_server.base_url,
                    "STATE_DIR": str(tmp_path / "alone"),
                    "OUTPUT_URI": str(tmp_path / "alone-out"),
                },
            ),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = cluster.communicate(timeout=120)
            local_out, local_err = local.communicate(timeout=120)
        finally:
            for proc in (cluster, local):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        hits = fetched(server)
    assert cluster.returncode == 0, err[-3000:]
    assert local.returncode == 0, local_err[-3000:]
    assert "Cluster worker" in err  # the helper worker crawled (its log goes to the same stderr)

    # every article once, with one machine's bytes; each fetched once
    posts = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.md")}
    assert posts == site.reference()
    assert posts == {p.name: p.read_bytes() for p in (tmp_path / "alone-out").glob("*.md")}
    assert len(hits) == ARTICLES and set(hits.values()) == {1}
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.hlen(f"{redis_prefix}:published") == ARTICLES
        assert client.zcard(f"{redis_prefix}:inflight") == 0
        assert client.hlen(f"{redis_prefix}:workers") == 0  # the helper stopped and said goodbye
    finally:
        client.close()

    # the same summary (times aside), status and last-run.json as one machine
    assert summary_rows(out) == summary_rows(local_out)
    assert ["gen", "ok", str(pages), "0", str(ARTICLES), "0", "0", "0"] in summary_rows(out)
    runs = [
        json.loads((tmp_path / name / "last-run.json").read_text())
        for name in ("coordinator", "alone")
    ]
    for run in runs:
        for row in run["sources"]:
            for key in ("started", "finished", "elapsed_seconds"):
                row.pop(key)
    assert runs[0]["status"] == runs[1]["status"] == "ok"
    assert runs[0]["exit_status"] == runs[1]["exit_status"] == 0
    assert runs[0]["sources"] == runs[1]["sources"]


def test_a_worker_stopped_mid_crawl_finishes_what_it_started_and_gives_back_the_rest(
    tmp_path, site, redis_url, redis_prefix
):
    """SIGTERM while requests are in flight: the worker finishes the ones it started (each
    fetched once, its article published by it), puts the ones it leased but had not started
    (waiting for their rate slot) back in the queue at once, not after CLUSTER_LEASE (two
    minutes here), and exits 0; a second worker then completes the run, each article
    published once."""
    generated = site.generated
    keys_ = ClusterKeys(redis_prefix)
    client = redis.Redis.from_url(redis_url)
    procs = Processes(tmp_path)
    with ReplayServer([generated.directory], latency=0.3) as server:
        settings = cluster_settings(
            tmp_path,
            server,
            redis_url,
            redis_prefix,
            CLUSTER_LEASE="120",
            CLUSTER_DOMAIN_RATE="5",
            CONCURRENT_REQUESTS="6",
        )
        try:
            first = procs.worker("w0", settings)
            coordinator = procs.coordinator(settings)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and coordinator.poll() is None:
                held = [k for k in client.hkeys(keys_.leases) if k.startswith(b"w0:")]
                started = fetched(server)
                if len(held) >= 4 and started:  # articles at the site, others waiting
                    break
                time.sleep(0.02)
            else:
                pytest.fail("the worker never held enough requests:\n" + procs.logs())
            first.send_signal(signal.SIGTERM)
            started = fetched(server)  # what it had started by then, at the latest
            assert first.wait(60) == 0, procs.logs()

            # nothing of w0's is leased any more, and what it had not started is queued again
            assert not [k for k in client.hkeys(keys_.leases) if k.startswith(b"w0:")]
            assert not [k for k in client.zrange(keys_.inflight, 0, -1) if k.startswith(b"w0:")]
            log = (tmp_path / "worker-w0-0.log").read_text()
            back = re.search(r"Source gen: (\d+) request\(s\) back in the queue", log)
            assert back is not None, log[-3000:]
            assert client.zcard(keys_.queue("gen")) >= int(back.group(1)) >= 1
            # what it had started, it finished: published by it, before any other worker ran
            by_w0 = fetched(server)
            assert client.hlen(f"{redis_prefix}:published") >= len(started)

            procs.worker("w1", settings)
            _, err = coordinator.communicate(timeout=90)
            assert procs.stop_workers() == [0, 0], procs.logs()
        finally:
            procs.stop()
        hits = fetched(server)
    try:
        assert coordinator.returncode == 0, err[-3000:] + procs.logs()
        posts = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.md")}
        assert posts == site.reference()
        assert client.hlen(f"{redis_prefix}:published") == ARTICLES
        assert client.zcard(keys_.inflight) == 0
        # each article fetched once: none of w0's redone, the rest by w1
        assert len(hits) == ARTICLES and set(hits.values()) == {1}, hits
        assert set(by_w0) < set(hits)
    finally:
        client.close()


def test_a_lease_is_held_until_its_item_is_through_the_pipeline(
    tmp_path, site, redis_url, redis_prefix
):
    """The worker acks a request's lease only once Scrapy is done with it: with a pipeline
    stage that takes a second, an article the site has answered is, at every look, either
    still leased or published, never neither (acked too early, a worker dying then would lose
    it)."""
    from aggregator import settings as project

    generated = site.generated
    keys_ = ClusterKeys(redis_prefix)
    client = redis.Redis.from_url(redis_url)
    procs = Processes(tmp_path)
    pipelines = {**project.ITEM_PIPELINES, "slowstage.SlowStage": 390}
    seen_in_pipeline: set[str] = set()
    with ReplayServer([generated.directory], latency=0.05) as server:
        settings = cluster_settings(
            tmp_path,
            server,
            redis_url,
            redis_prefix,
            CONCURRENT_REQUESTS="4",
            CLUSTER_LEASE="60",
        )
        try:
            procs.worker(
                "w0",
                {**settings, "ITEM_PIPELINES": json.dumps(pipelines)},
                env={"PYTHONPATH": str(ROOT / "tests")},
            )
            coordinator = procs.coordinator(settings)
            while coordinator.poll() is None:
                answered = set(fetched(server))  # first: answered by now
                leased = {
                    json.loads(v.split(b"\n", 2)[2])["url"].split(server.base_url, 1)[1]
                    for v in client.hvals(keys_.leases)
                }
                published = {
                    k.decode().rsplit("-", 1)[1] for k in client.hkeys(f"{redis_prefix}:published")
                }
                for url in answered:
                    article_id = re.search(r"(\d+)\.json", url).group(1)
                    if article_id in published:
                        continue
                    assert url in leased, f"{url} acked before its item was through the pipeline"
                    seen_in_pipeline.add(url)
                time.sleep(0.05)
            _, err = coordinator.communicate(timeout=90)
            assert procs.stop_workers() == [0], procs.logs()
        finally:
            procs.stop()
    try:
        assert coordinator.returncode == 0, err[-3000:] + procs.logs()
        assert client.hlen(f"{redis_prefix}:published") == ARTICLES
        # the look did catch articles between their answer and their post
        assert len(seen_in_pipeline) >= ARTICLES // 2, seen_in_pipeline
    finally:
        client.close()


def test_a_request_is_queued_as_scrapy_would_serialise_it():
    """The queue's own `request_dict` (no search of the spider's members) gives what
    `Request.to_dict(spider=…)` gives; a callback that is no method of the spider is still an
    error, and a worker's errback wrapper is never what is queued."""
    from scrapy import FormRequest, Spider

    from aggregator.cluster.queue import request_dict
    from aggregator.cluster.tracking import original_errback

    class Source(Spider):
        name = "source"

        def parse_page(self, response):
            pass

        def page_failed(self, failure):
            pass

    spider = Source()
    requests = [
        Request(
            "http://example.com/a",
            callback=spider.parse_page,
            errback=spider.page_failed,
            meta={"k": [1]},
            cb_kwargs={"page": 2},
            priority=3,
            dont_filter=True,
        ),
        Request("http://example.com/b"),
        FormRequest("http://example.com/c", formdata={"q": "二"}, callback=spider.parse_page),
    ]
    for request in requests:
        assert request_dict(request, spider) == request.to_dict(spider=spider)
    with pytest.raises(ValueError, match="not an instance method"):
        request_dict(Request("http://example.com/d", callback=lambda response: None), spider)

    leased = requests[0].copy()

    def wrapper(failure):
        return None

    wrapper.cluster_original = spider.page_failed
    leased.errback = wrapper
    assert original_errback(leased) == spider.page_failed
    assert request_dict(leased, spider)["errback"] == "page_failed"


def test_failed_articles_are_done_with_and_kept_pending(tmp_path, site, redis_url, redis_prefix):
    """An article whose page answers 500 (the spider middlewares hand it to the errback) and
    one whose download times out (the errback gets the failure directly, past the spider
    middlewares): each is retried once through the queue, then kept pending, and its lease
    is acked (the run ends, exit 1 for the failures) while every other article is published."""
    from aggregator.devtools.replay import Reply

    generated = site.generated
    client = redis.Redis.from_url(redis_url)
    procs = Processes(tmp_path)
    broken, slow = "/detail_json/70000003.json", "/detail_json/70000011.json"
    with ReplayServer([generated.directory], latency=0.02) as server:
        server.fail(broken, 500)
        server.set_reply(slow, Reply(status=200, body=b"{}", delay=3.0))
        settings = cluster_settings(
            tmp_path, server, redis_url, redis_prefix, DOWNLOAD_TIMEOUT="1", CLUSTER_LEASE="60"
        )
        try:
            procs.worker("w0", settings)
            coordinator = procs.coordinator(settings)
            out, err = coordinator.communicate(timeout=90)
            assert procs.stop_workers() == [0], procs.logs()
        finally:
            procs.stop()
        hits = fetched(server)
    try:
        assert coordinator.returncode == 1, err[-3000:] + procs.logs()
        assert ["gen", "failed", "4", "0", str(ARTICLES - 2), "0", "0", "2"] in summary_rows(out)
        assert hits[broken] == hits[slow] == 2  # RETRY_TIMES=1
        pending = {k.decode() for k in client.hkeys(f"{redis_prefix}:pending")}
        assert pending == {"qutoutiao-70000003", "qutoutiao-70000011"}
        assert client.hlen(f"{redis_prefix}:published") == ARTICLES - 2
        assert client.zcard(f"{redis_prefix}:inflight") == 0
    finally:
        client.close()
