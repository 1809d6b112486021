"""The labelled near-duplicate set: pairs of article bodies (HTML, as the normaliser would hand
them on) built from the corpus of real Chinese articles (bench/data/neardup/SOURCES.md: built
by bench/data/neardup/extract.py from public repositories, and kept outside this repository,
by default at CORPUS).

Positives are one story as two aggregators serve it: the repost gets what aggregators do to a
story (an ad line, a "来源：…" or copyright footer, an editor's note, changed punctuation and
whitespace, full-width/half-width changes, a trimmed ending, other image addresses, other
wrapper HTML, light copy-editing), one to three of them at once. Negatives are different stories
that look alike: two articles from the same source and channel, two bulletins written from one
template with other figures (weather, employment), two articles sharing a long boilerplate
footer, and a short article quoted inside a long one. The builders are
aggregator/devtools/reposts.py.

Everything is seeded: `pairs(articles)` is the same list on every run and machine.

    python bench/neardup_set.py [--corpus PATH] --out PAIRS.jsonl [--per-kind 4]

The pairs are derived from the corpus, so they are kept outside the repository as well.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from aggregator.devtools.reposts import (
    VARIATIONS,
    combination,
    original,
    quoted_inside,
    repost,
    repost_kind,
    template_pairs,
    with_boilerplate,
)

ORIGIN = "img.origin-paper.cn"  # where the first publisher serves the images

# Where the corpus is expected: the steering repository's shared/ folder beside this checkout.
# Data taken from public repositories is never committed here (see SOURCES.md).
CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "neardup" / "articles.jsonl"
BUILD = (
    "build it from the source repositories named in bench/data/neardup/SOURCES.md:\n"
    "    python bench/data/neardup/extract.py --hecate DIR --clts FILE --sogou FILE --out PATH\n"
    "and pass --corpus PATH (or put it at {default})"
)


@dataclass
class Pair:
    kind: str  # positive: "repost:<variations>"; negative: "same_channel", "template", ...
    duplicate: bool
    a_id: str
    b_id: str
    a: str  # body HTML
    b: str


def load_articles(path: Path = CORPUS) -> list[dict]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def corpus_or_exit(path: Path | None) -> Path:
    """The corpus to use; when it is missing, say how to build it and exit with status 2."""
    path = path or CORPUS
    if not path.is_file():
        print(
            f"no near-duplicate corpus at {path}; " + BUILD.format(default=CORPUS), file=sys.stderr
        )
        raise SystemExit(2)
    return path


# --- the set ---------------------------------------------------------------------------------
def pairs(articles: list[dict], seed: int = 20240613) -> list[Pair]:
    rng = random.Random(seed)
    out: list[Pair] = []

    # positives: every variation alone on a rotation of articles, then random combinations
    for number, article in enumerate(articles):
        single = VARIATIONS[number % len(VARIATIONS)]
        combo = combination(rng)
        for variations in ((single,), combo):
            out.append(
                Pair(
                    repost_kind(variations),
                    True,
                    article["id"],
                    article["id"] + "~" + "+".join(variations),
                    original(article, ORIGIN),
                    repost(article, variations, rng),
                )
            )
    # negatives: different stories of one source and channel
    by_channel: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for article in articles:
        by_channel[(article["source"], article["category"])].append(article)
    channel_pairs = []
    for group in by_channel.values():
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                channel_pairs.append((group[i], group[j]))
    for a, b in rng.sample(channel_pairs, min(len(channel_pairs), len(articles) * 2)):
        out.append(
            Pair("same_channel", False, a["id"], b["id"], original(a, ORIGIN), original(b, ORIGIN))
        )
    # negatives: one template, other figures
    out += [Pair(t.kind, False, t.a_id, t.b_id, t.a, t.b) for t in template_pairs(seed, 40)]
    # negatives: a long shared footer on short different articles
    shorts = sorted((a for a in articles if len(a["text"]) < 700), key=lambda a: a["id"])
    for a, b in zip(shorts[::2], shorts[1::2], strict=False):
        out.append(
            Pair("shared_footer", False, a["id"], b["id"], with_boilerplate(a), with_boilerplate(b))
        )
    # negatives: a short article quoted inside a long one
    longs = [a for a in articles if len(a["text"]) >= 2500]
    for number, short in enumerate(shorts[:40]):
        long = longs[number % len(longs)]
        out.append(
            Pair(
                "quoted_inside",
                False,
                short["id"],
                long["id"],
                original(short, ORIGIN),
                quoted_inside(short, long),
            )
        )
    return out


def iter_jsonl(items: list[Pair]) -> Iterator[str]:
    for item in items:
        yield json.dumps(asdict(item), ensure_ascii=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, help=f"articles.jsonl (default {CORPUS})")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-kind", type=int, default=0, help="keep N short pairs of each kind")
    args = parser.parse_args()
    items = pairs(load_articles(corpus_or_exit(args.corpus)))
    if args.per_kind:
        by_kind: dict[str, list[Pair]] = defaultdict(list)
        # the shortest pairs whose texts are long enough to be compared (NEAR_DUPLICATE_MIN_CHARS)
        long_enough = (p for p in items if min(len(p.a), len(p.b)) >= 500)
        for item in sorted(long_enough, key=lambda p: len(p.a) + len(p.b)):
            by_kind[item.kind.split("+")[0]].append(item)
        items = [item for group in by_kind.values() for item in group[: args.per_kind]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(iter_jsonl(items)) + "\n", encoding="utf-8")
    print(len(items), "pairs written to", args.out)


if __name__ == "__main__":
    main()
