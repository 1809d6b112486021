"""Throughput of aggregator.render.html.normalise_html on ~10 KB articles, one core.

The target is 1,000 articles/s: a full crawl re-normalises every article, and the normaliser
must stay a small share of that next to network time. Input is seeded so runs compare.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator.render.html import ImageProxy, normalise_html

TARGET_PER_SECOND = 1_000
ARTICLE_BYTES = 10_000
BASE_URL = "https://news.example.com/detail/123456.html?content_id=123456"
# Common CJK characters plus Chinese punctuation, so articles look like the real ones.
HANZI = [chr(code) for code in range(0x4E00, 0x4E00 + 2_000)]
PUNCTUATION = "，，，。。、；：“”！？"


def _sentence(rng: random.Random) -> str:
    words = "".join(rng.choice(HANZI) for _ in range(rng.randint(12, 40)))
    return words + rng.choice(PUNCTUATION)


def _image(rng: random.Random, index: int) -> str:
    name = f"{rng.getrandbits(64):016x}"
    lazy = rng.choice(("data-src", "data-original", "data-lazy-src"))
    # Absolute, protocol-relative and root-relative addresses, as real articles mix them.
    kind = index % 3
    if kind == 0:
        host = rng.choice(["static.1sapp.com", "img.example.cn"])
        address = f"http://{host}/qupost/img/2022/02/02/{name}.png"
    elif kind == 1:
        address = f"//cdn.example.net/qupost/img/{name}.png"
    else:
        address = f"/img/{name}.jpg"
    size = f"{rng.randint(200, 1080)},{rng.randint(100, 800)}"
    return f'<p><img {lazy}="{address}" data-size="{size}" alt="图{index}"></p>'


def _table(rng: random.Random) -> str:
    rows = "".join(
        "<tr>" + "".join(f"<td>{rng.randint(0, 99_999) / 10}万</td>" for _ in range(4)) + "</tr>"
        for _ in range(5)
    )
    head = "<thead><tr><th>地区</th><th>一月</th><th>二月</th><th>三月</th></tr></thead>"
    return f"<table>{head}<tbody>{rows}</tbody></table>"


def make_article(rng: random.Random) -> str:
    parts: list[str] = []
    images = rng.randint(3, 6)
    table_at = rng.randint(2, 8)
    paragraph = 0
    while len("".join(parts).encode()) < ARTICLE_BYTES:
        text = "".join(_sentence(rng) for _ in range(rng.randint(2, 5)))
        if paragraph % 4 == 1:
            cut = rng.randint(5, len(text) - 5)
            href = f"https://news.example.com/a/{rng.randint(1, 10**6)}.html"
            link = f'<a href="{href}">{text[cut : cut + 6]}</a>'
            text = text[:cut] + link + text[cut + 6 :]
        parts.append(f"<p> {text}</p>")
        if paragraph < images * 2 and paragraph % 2 == 0:
            parts.append(_image(rng, paragraph // 2))
        if paragraph == table_at:
            parts.append(_table(rng))
        paragraph += 1
    return "".join(parts)


@dataclass(frozen=True)
class NormaliserRun:
    articles: int
    kilobytes: float
    images: int
    cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.articles / self.cpu_seconds


def measure(count: int = 3_000, seed: int = 20220202) -> NormaliserRun:
    """Normalise `count` generated articles on this thread; CPU time, so other processes on a
    noisy machine do not count against the normaliser."""
    rng = random.Random(seed)
    articles = [make_article(rng) for _ in range(count)]
    total_kb = sum(len(article.encode()) for article in articles) / 1024
    proxy = ImageProxy()

    for article in articles[:50]:  # warm up caches and lazy imports
        normalise_html(article, BASE_URL, proxy)

    images = 0
    started = time.process_time()
    for article in articles:
        images += len(normalise_html(article, BASE_URL, proxy).images)
    return NormaliserRun(count, total_kb, images, time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--articles", type=int, default=3_000)
    parser.add_argument("--seed", type=int, default=20220202)
    args = parser.parse_args()

    run = measure(args.articles, args.seed)
    print(
        f"articles:       {run.articles} (avg {run.kilobytes / run.articles:.1f} KB, "
        f"{run.images} images)"
    )
    print(f"cpu time:       {run.cpu_seconds:.3f} s")
    print(f"articles/s:     {run.per_second:,.0f}")
    print(f"KB/s:           {run.kilobytes / run.cpu_seconds:,.0f}")
    print(f"vs target:      {run.per_second / TARGET_PER_SECOND:.2f}x of {TARGET_PER_SECOND:,}/s")


if __name__ == "__main__":
    main()
