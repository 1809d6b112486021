"""Near-duplicate detection: quality on the labelled set, speed with a full index, space.

    python bench/bench_neardup.py [--corpus PATH | --synthetic] [--index-size 1000000]
                                  [--measure 3000] [--rounds 3] [--sweep] [--shingles]
                                  [--redis-size 20000] [--keep FILE]

The corpus (real Chinese articles) is not in this repository; see bench/data/neardup/SOURCES.md
for where it is expected and how to build it. Without it this prints how and exits with 2,
unless `--synthetic`: then only speed and space are measured (parts 3 and 4), on synthetic
text (see `synthetic_articles`), which costs the fingerprint and the index what real text does.

1. Quality: every pair of bench/neardup_set.py (the corpus's articles, their reposts and
   look-alike different stories) through the test the pipeline makes (an LSH band in common,
   then the estimated similarity against the threshold) with the project's settings:
   precision and recall at NEAR_DUPLICATE_THRESHOLD, and a threshold sweep. Pairs whose
   shorter text is under NEAR_DUPLICATE_MIN_CHARS are never called duplicates; they are
   counted apart. `--sweep` adds other signature lengths and bands x rows.
2. `--shingles`: exact Jaccard similarity of the pairs' shingle sets for shingle lengths 2-9
   (the measurement behind SHINGLE_CHARS).
3. Throughput: a SQLite crawl state whose near-duplicate index holds `--index-size` synthetic
   articles (random signatures, in time order; written with bulk INSERT ... SELECT, sorted, in
   one transaction), then `--measure` real-length articles (3,000 characters of real sentences
   from the corpus, each a different mix drawn afresh each run, so nearly all take the insert
   path) fingerprinted and
   checked-and-added one by one through the index the pipeline uses, `--rounds` times (the
   default round is ten times the index's `merge_every`, so each round pays for the merges
   of the tail into the band table, as a long crawl does). Rate =
   articles / CPU seconds of this process (resource.getrusage: fingerprinting, SQLite and all),
   per round, then the best, median and worst round. `--keep FILE`
   keeps the filled state file and reuses it on the next run.
4. Space: SQLite file bytes per article; Redis `used_memory` per article for a smaller fill
   (under a unique key prefix as long as the default one, on 127.0.0.1:6379, deleted
   afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aggregator.pipelines.neardup import fingerprinter_for, index_params
from neardup_set import corpus_or_exit, load_articles, pairs
from scrapy.settings import Settings

from aggregator import settings as project
from aggregator.devtools.reposts import (
    ADS,
    BOILERPLATE,
    FOOTERS,
    NOTES,
    employment_bulletin,
    render,
    weather_bulletin,
)
from aggregator.neardup.fingerprint import Fingerprinter, fold_text, visible_text
from aggregator.neardup.index import (
    IndexParams,
    RedisNearDupIndex,
    band_buckets,
    similarity,
)
from aggregator.state.sqlite import SqliteCrawlState

SETTINGS = Settings()
SETTINGS.setmodule(project)
MIN_CHARS = SETTINGS.getint("NEAR_DUPLICATE_MIN_CHARS")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def quality(articles: list[dict], fingerprinter: Fingerprinter, params: IndexParams) -> None:
    items = pairs(articles)
    prints = [(fingerprinter.fingerprint(p.a), fingerprinter.fingerprint(p.b), p) for p in items]
    kinds = Counter(p.kind.split(":")[0].split("+")[0] for p in items)
    short = sum(1 for a, b, _ in prints if min(a.chars, b.chars) < MIN_CHARS)
    print(
        f"labelled set: {len(items)} pairs {dict(kinds)}; {short} under {MIN_CHARS} characters "
        "(never duplicates by rule, left out)"
    )
    prints = [x for x in prints if min(x[0].chars, x[1].chars) >= MIN_CHARS]
    positives = sorted(similarity(a.hashvalues, b.hashvalues) for a, b, p in prints if p.duplicate)
    negatives = sorted(
        similarity(a.hashvalues, b.hashvalues) for a, b, p in prints if not p.duplicate
    )
    print(
        f"  {len(positives)} reposts, estimated similarity min {positives[0]:.3f}; "
        f"{len(negatives)} different stories, max {negatives[-1]:.3f}"
    )
    print(f"  hashes {params.hashes}, {params.bands} bands x {params.rows} rows")
    print("  threshold  precision  recall  false+  false-")
    for threshold in (0.45, 0.5, 0.55, 0.6, 0.65, 0.7):
        tp, fp, fn, wrong = _score(prints, params, threshold)
        mark = "  <- NEAR_DUPLICATE_THRESHOLD" if threshold == params.threshold else ""
        print(
            f"  {threshold:9.2f}  {tp / max(1, tp + fp):9.4f}  {tp / max(1, tp + fn):6.4f}  "
            f"{fp:6d}  {fn:6d}{mark}"
        )
        if threshold == params.threshold and wrong:
            print("     wrong at the threshold:", dict(wrong))


def _score(prints: list, params: IndexParams, threshold: float) -> tuple[int, int, int, Counter]:
    tp = fp = fn = 0
    wrong: Counter[str] = Counter()
    for a, b, pair in prints:
        shared = set(band_buckets(a.hashvalues, params.bands, params.rows)) & set(
            band_buckets(b.hashvalues, params.bands, params.rows)
        )
        called = bool(shared) and similarity(a.hashvalues, b.hashvalues) >= threshold
        if called and pair.duplicate:
            tp += 1
        elif called:
            fp += 1
            wrong["+" + pair.kind] += 1
        elif pair.duplicate:
            fn += 1
            wrong["-" + pair.kind] += 1
    return tp, fp, fn, wrong


def sweep(articles: list[dict], base: IndexParams) -> None:
    items = pairs(articles)
    print("sweep: hashes, bands x rows: precision/recall at thresholds 0.50 0.55 0.60")
    configurations = ((32, 8, 3), (64, 8, 3), (64, 10, 3), (64, 15, 3), (128, 10, 3), (128, 28, 4))
    for hashes, bands, rows in configurations:
        fingerprinter = Fingerprinter(hashes=hashes, shingle_chars=base_shingles())
        prints = [
            (fingerprinter.fingerprint(p.a), fingerprinter.fingerprint(p.b), p) for p in items
        ]
        prints = [x for x in prints if min(x[0].chars, x[1].chars) >= MIN_CHARS]
        cells = []
        for threshold in (0.5, 0.55, 0.6):
            params = IndexParams(hashes, bands, rows, threshold)
            tp, fp, fn, _ = _score(prints, params, threshold)
            cells.append(f"{tp / max(1, tp + fp):.3f}/{tp / max(1, tp + fn):.3f}")
        print(f"  {hashes:4d}  {bands:3d} x {rows}:  " + "  ".join(cells))


def base_shingles() -> int:
    return SETTINGS.getint("NEAR_DUPLICATE_SHINGLE_CHARS")


def shingle_table(articles: list[dict]) -> None:
    items = pairs(articles)
    folded = [(fold_text(visible_text(p.a)), fold_text(visible_text(p.b)), p) for p in items]
    print("k  reposts: min   p1     p5  | highest different story (by kind)  | gap")
    for k in range(2, 10):
        pos, neg = [], Counter()
        for a, b, pair in folded:
            if min(len(a), len(b)) < MIN_CHARS:
                continue
            sa = {a[i : i + k] for i in range(max(1, len(a) - k + 1))}
            sb = {b[i : i + k] for i in range(max(1, len(b) - k + 1))}
            j = len(sa & sb) / len(sa | sb)
            if pair.duplicate:
                pos.append(j)
            else:
                neg[pair.kind] = max(neg[pair.kind], j)
        worst = max(neg.values())
        kinds = " ".join(f"{kind.split(':')[-1][:10]} {v:.2f}" for kind, v in sorted(neg.items()))
        print(
            f"{k}  {min(pos):.3f} {np.percentile(pos, 1):.3f} {np.percentile(pos, 5):.3f} | "
            f"{kinds} | {min(pos) - worst:+.3f}"
        )


def synthetic_articles(count: int = 150, seed: int = 3) -> list[dict]:
    """Articles of made-up sentences, for speed without the corpus: Chinese characters drawn
    with the frequencies of the project's own Chinese text (the demo articles and the repost
    builders' templates), 8-40 to a clause. What the fingerprint costs depends on the length
    and the kind of characters (CJK folds through the table like the corpus's text), and what
    the index costs on the signatures, which are as random as real ones: so the rate is the
    one real text gets. The sentences are all different, so the measured articles take the
    insert path as with the corpus."""
    rng = random.Random(seed)
    pool = [ch for ch in _project_chinese() if "\u4e00" <= ch <= "\u9fff"]
    articles = []
    for number in range(count):
        sentences = []
        for _ in range(rng.randint(20, 60)):
            clauses = ["".join(rng.choices(pool, k=rng.randint(8, 40))) for _ in range(3)]
            sentences.append("，".join(clauses) + "。")
        text = "\n".join("".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4))
        articles.append({"id": f"synthetic-{number}", "text": text})
    return articles


def _project_chinese() -> str:
    """The Chinese text this repository has: the demo site's articles and reposts.py's."""
    demo = Path(project.__file__).resolve().parent / "data" / "demo"
    texts = [
        visible_text(json.loads(p.read_text("utf-8")).get("detail", ""))
        for p in sorted(demo.glob("detail_json/*.json"))
    ]
    rng = random.Random(0)
    texts += [visible_text(weather_bulletin(rng, day)) for day in range(1, 4)]
    texts += [visible_text(employment_bulletin(rng, month)) for month in range(1, 4)]
    texts += [*ADS, *FOOTERS, *NOTES, BOILERPLATE]
    return "".join(texts)


def measured_articles(articles: list[dict], count: int, seed: int = 7) -> list[str]:
    """3,000-character bodies of real sentences: each a random mix from the whole corpus."""
    sentences = []
    for article in articles:
        sentences += [s + "。" for s in article["text"].replace("\n", "。").split("。") if s]
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        paras, length = [], 0
        while length < 3000:
            para = "".join(rng.choice(sentences) for _ in range(4))
            paras.append(para)
            length += len(para)
        text = "\n".join(paras)[:3000]
        bodies.append(render(text.split("\n"), [f"https://img.example.cn/{rng.random()}.jpg"]))
    return bodies


def fill(path: Path, params: IndexParams, size: int, now: float) -> None:
    """`size` synthetic articles written straight into the index's tables, in time order over
    the window: articles with executemany, band entries with one INSERT ... SELECT that unpacks
    JSON arrays of bucket ids and sorts them, so the B-tree is built by appending."""
    state = SqliteCrawlState(f"sqlite:///{path}")
    asyncio.run(state.open())
    asyncio.run(state.near_duplicates(params).open())  # schema and parameters
    asyncio.run(state.close())
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-262144")
    db.execute("BEGIN")
    db.execute("CREATE TEMP TABLE fill (id INTEGER PRIMARY KEY, buckets TEXT)")
    rng = np.random.default_rng(1)
    start_at = now - params.window * 0.97
    step = params.window * 0.96 / max(1, size)
    chunk = 100_000
    for start in range(0, size, chunk):
        n = min(chunk, size - start)
        ids = range(start + 1, start + n + 1)
        signatures = rng.integers(0, 2**32, (n, params.hashes), dtype=np.uint32).astype("<u4")
        buckets = [band_buckets(s, params.bands, params.rows) for s in signatures]
        db.executemany(
            "INSERT INTO nd_article (id, key, at, state, sig) VALUES (?, ?, ?, 1, ?)",
            (
                (i, f"synthetic-{i}", start_at + i * step, signature.tobytes())
                for i, signature in zip(ids, signatures, strict=True)
            ),
        )
        db.executemany(
            "INSERT INTO temp.fill (id, buckets) VALUES (?, ?)",
            ((i, json.dumps(b)) for i, b in zip(ids, buckets, strict=True)),
        )
    db.execute(
        "INSERT INTO nd_band (bucket, id) SELECT j.value, f.id FROM temp.fill f, "
        "json_each(f.buckets) j ORDER BY 1, 2"
    )
    db.execute("UPDATE nd_banded SET id = ?", (size,))  # all of them are in nd_band
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def throughput(
    articles: list[dict],
    fingerprinter: Fingerprinter,
    params: IndexParams,
    size: int,
    measure: int,
    rounds: int,
    keep: Path | None,
) -> None:
    # Fresh bodies on every run (a kept index already holds the last run's), seed printed.
    seed = random.randrange(2**32)
    warm_bodies = measured_articles(articles, 200, seed)
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        path = keep or Path(tmp) / "state.sqlite3"
        now = time.time()
        if not path.exists():
            started = time.perf_counter()
            fill(path, params, size, now)
            took = time.perf_counter() - started
            print(f"index filled with {size:,} synthetic articles in {took:.0f} s")
        state = SqliteCrawlState(f"sqlite:///{path}")
        asyncio.run(state.open())
        index = state.near_duplicates(params)
        asyncio.run(index.open())
        index._expire_every = 10**9  # the fill is in the window; nothing to expire mid-run
        filled = index.count()
        size_before = _file_size(path)
        print(
            f"SQLite: {filled:,} articles, {size_before / 2**20:,.0f} MiB, "
            f"{size_before / filled:,.0f} bytes/article on disk"
        )
        # warm-up: the same work on other articles, so the measured run starts with a warm
        # page cache as a long crawl would
        run = uuid.uuid4().hex[:8]
        for number, body in enumerate(warm_bodies):
            index.check_and_add_now(f"warm-{run}-{number}", fingerprinter.signature(body), now)
        print(
            f"fingerprint + check_and_add, {measure} articles of 3,000 characters a round, "
            f"one at a time, ~{filled:,} in the index (seed {seed}):"
        )
        rates = []
        for round_ in range(1, rounds + 1):
            bodies = measured_articles(articles, measure, seed + round_)
            signatures = []
            wall, before = time.perf_counter(), cpu()
            for body in bodies:
                signatures.append(fingerprinter.fingerprint(body).hashvalues)
            fingerprint_cpu = cpu() - before
            new = merges = 0
            for number, signature in enumerate(signatures):
                key = f"m-{run}-{round_}-{number}"
                tail = index._tail.articles
                new += index.check_and_add_now(key, signature, now) is None
                merges += index._tail.articles < tail
            spent, wall = cpu() - before, time.perf_counter() - wall
            each, fingerprint_each = spent / measure * 1e6, fingerprint_cpu / measure * 1e6
            rates.append(measure / spent)
            wal = path.with_name(path.name + "-wal")
            wal_size = wal.stat().st_size if wal.exists() else 0
            print(
                f"  round {round_}: {measure / spent:,.0f} articles/s CPU ({each:.0f} µs each: "
                f"fingerprint {fingerprint_each:.0f}, index {each - fingerprint_each:.0f}; "
                f"wall {measure / wall:,.0f}/s); {new} new, {measure - new} matched, "
                f"{merges} merges of the tail; WAL {wal_size / 2**20:,.0f} MiB"
            )
        rates.sort()
        print(
            f"  best {rates[-1]:,.0f}, median {rates[len(rates) // 2]:,.0f}, "
            f"worst {rates[0]:,.0f} articles/s CPU (other work on the machine only slows a round)"
        )
        asyncio.run(state.close())
        added = measure * rounds + len(warm_bodies)
        print(
            f"  file grew by {(_file_size(path) - size_before) / added:,.0f} bytes/article "
            f"over the {added} added (WAL included)"
        )


def _file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def redis_space(
    articles: list[dict], fingerprinter: Fingerprinter, params: IndexParams, size: int
) -> None:
    import redis
    import redis.asyncio as aredis

    # as long as the default one (CLUSTER_PREFIX "aggregator" + ":nd"): key names count
    prefix = f"aggbench{uuid.uuid4().hex[:5]}:nd"
    sync = redis.Redis(host="127.0.0.1", port=6379)
    try:
        sync.ping()
    except redis.RedisError as exc:
        print(f"Redis: not measured ({exc})")
        return
    bodies = measured_articles(articles, 300, seed=5)

    async def run() -> tuple[float, float, float]:
        client = aredis.Redis(host="127.0.0.1", port=6379)
        index = RedisNearDupIndex(client, prefix, params)
        await index.open()
        rng = np.random.default_rng(2)
        now = time.time()
        before_memory = (await client.info("memory"))["used_memory"]
        for start in range(0, size, 50):
            await asyncio.gather(
                *(
                    index.check_and_add(
                        f"synthetic-{start + i}",
                        rng.integers(0, 2**32, params.hashes, dtype=np.uint32),
                        now,
                    )
                    for i in range(min(50, size - start))
                )
            )
        memory = (await client.info("memory"))["used_memory"] - before_memory
        before = cpu()
        started = time.perf_counter()
        for number, body in enumerate(bodies):
            await index.check_and_add(f"m-{number}", fingerprinter.signature(body), now)
        rate = len(bodies) / (time.perf_counter() - started)
        await client.aclose()
        return memory / size, rate, (cpu() - before) / len(bodies)

    try:
        per_article, rate, cpu_each = asyncio.run(run())
        print(
            f"Redis: {per_article:,.0f} bytes/article of used_memory ({size:,} articles); "
            f"fingerprint + check_and_add one at a time: {rate:,.0f} articles/s wall "
            f"({cpu_each * 1e6:.0f} µs CPU each in this process, the rest is the server's)"
        )
    finally:
        keys = list(sync.scan_iter(match=f"{prefix}:*", count=5000))
        for start in range(0, len(keys), 5000):
            sync.delete(*keys[start : start + 5000])
        sync.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, help="the corpus (articles.jsonl)")
    parser.add_argument("--index-size", type=int, default=1_000_000)
    parser.add_argument(
        "--measure",
        type=int,
        default=20_000,
        help="articles a round (the default: ten merges of the index's tail in each round)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --measure articles")
    parser.add_argument("--redis-size", type=int, default=20_000, help="0: skip Redis")
    parser.add_argument("--sweep", action="store_true", help="other signature lengths and bands")
    parser.add_argument("--shingles", action="store_true", help="print the shingle-length table")
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the filled SQLite state here")
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="no corpus: speed and space only, on synthetic text",
    )
    args = parser.parse_args()
    if args.synthetic:
        articles = synthetic_articles()
    else:
        articles = load_articles(corpus_or_exit(args.corpus))
    fingerprinter = fingerprinter_for(SETTINGS)
    params = index_params(SETTINGS, fingerprinter)
    print(
        f"hashes {fingerprinter.hashes}, {fingerprinter.shingle_chars}-character shingles, "
        f"{params.bands} bands x {params.rows} rows, threshold {params.threshold}, "
        f"min chars {MIN_CHARS}; signature {fingerprinter.hashes * 4} bytes"
    )
    if args.synthetic:
        print("synthetic text: speed and space only (quality needs the labelled corpus)")
    else:
        if args.shingles:
            shingle_table(articles)
        quality(articles, fingerprinter, params)
        if args.sweep:
            sweep(articles, params)
    if args.index_size:
        throughput(
            articles,
            fingerprinter,
            params,
            args.index_size,
            args.measure,
            args.rounds,
            args.keep,
        )
    if args.redis_size:
        redis_space(articles, fingerprinter, params, args.redis_size)


if __name__ == "__main__":
    main()
