"""A generated 趣头条-style site for benchmarks, in the replay format `aggregator.devtools.replay`
serves: listing pages `outList-cid-{cid}-page-{page}.json` and, per article, a JSON detail
(`detail_json/{id}.json`) and an article page (`detail/{id}.html`), all with `__BASE__` where
the server's address goes.

    from bench.sitegen import generate_site   # with the repository root on sys.path
    site = generate_site(directory, 2_000)
    with ReplayServer(directory) as server:
        ...  # scrapy crawl qutoutiao -a cid={site.cid} -a pages={site.pages}
             #   -s QUTOUTIAO_API_BASE={server.base_url}

The content is seeded, so two runs (or two benchmarks) crawl the same bytes. Bodies are
~1-3 KB of Chinese text with a lazy-loaded image (or several, with the image files themselves
for bench/bench_images.py), like the real source.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GeneratedSite", "generate_site"]

HANZI = [chr(code) for code in range(0x4E00, 0x4E00 + 2_000)]
FIRST_ID = 70_000_001
FIRST_SHOW_TIME = 1_700_000_000


@dataclass(frozen=True)
class GeneratedSite:
    """What a crawl of the site needs to know: `-a cid=... -a pages=...`."""

    directory: Path
    cid: str
    articles: int
    per_page: int
    pages: int

    @property
    def ids(self) -> list[str]:
        return [str(FIRST_ID + index) for index in range(self.articles)]


def _paragraph(rng: random.Random) -> str:
    return "<p>" + "".join(rng.choice(HANZI) for _ in range(rng.randint(40, 160))) + "。</p>"


def _body(
    rng: random.Random, article_id: str, images: int, image_base: str
) -> tuple[str, list[str]]:
    """The body, with `images` lazy images spread between its paragraphs, and their paths
    under `image_base`."""
    paragraphs = [_paragraph(rng) for _ in range(rng.randint(2, 6))]
    paths = [f"{article_id}/{rng.getrandbits(48):012x}.jpg" for _ in range(images)]
    slots = [len(paragraphs) * (k + 1) // (images + 1) for k in range(images)]
    for slot, path in reversed(list(zip(slots, paths, strict=True))):
        paragraphs.insert(slot, f'<p><img data-src="{image_base}/{path}"></p>')
    return "".join(paragraphs), paths


def _image(path: str, size: int) -> bytes:
    """JPEG-shaped bytes (what the mirror sniffs), seeded by the path: the same every run."""
    return b"\xff\xd8\xff\xe0" + random.Random(path).randbytes(max(0, size - 6)) + b"\xff\xd9"


def generate_site(
    directory: Path | str,
    articles: int,
    *,
    cid: str = "900",
    per_page: int = 20,
    html_only: bool = False,
    seed: int = 5,
    images_per_article: int = 1,
    image_base: str = "http://img.example.cn",
    image_bytes: int = 0,
) -> GeneratedSite:
    """Write a site of `articles` articles into `directory`, newest first, `per_page` to a
    listing page. With `html_only` the listings carry no `detail_url`, so the spider reads
    each body from the article page instead of the JSON detail.

    Each body has `images_per_article` images at `image_base/{id}/{hex}.jpg`. With
    `image_bytes`, those files are written too, under `directory/img/`, that many bytes each
    (serve them with `image_base` = the replay server's address + `/img`)."""
    if articles < 1 or per_page < 1:
        raise ValueError("a site needs at least one article and one article per page")
    root = Path(directory)
    (root / "detail_json").mkdir(parents=True, exist_ok=True)
    (root / "detail").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    entries = []
    for index in range(articles):
        article_id = str(FIRST_ID + index)
        body, image_paths = _body(rng, article_id, images_per_article, image_base)
        for path in image_paths if image_bytes else ():
            target = root / "img" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_image(path, image_bytes))
        detail = {"code": 0, "id": article_id, "detail": body}
        (root / "detail_json" / f"{article_id}.json").write_text(
            json.dumps(detail, ensure_ascii=False), encoding="utf-8"
        )
        page = (
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head><body>'
            f'<div class="article"><div class="content">{body}</div></div></body></html>'
        )
        (root / "detail" / f"{article_id}.html").write_text(page, encoding="utf-8")
        entry = {
            "id": article_id,
            "title": f"第{index}篇：" + "".join(rng.choice(HANZI) for _ in range(14)),
            "type": "news",
            "url": f"__BASE__/detail/{article_id}.html?content_id={article_id}",
            "show_time": str(FIRST_SHOW_TIME + articles - index),
            "nickname": "基准来源",
            "cover": [],
        }
        if not html_only:
            entry["detail_url"] = f"__BASE__/detail_json/{article_id}.json"
        entries.append(entry)
    pages = (articles + per_page - 1) // per_page
    for page in range(1, pages + 1):
        chunk = entries[(page - 1) * per_page : page * per_page]
        listing = {
            "code": 0,
            "message": "success",
            "data": {"page": page, "has_more": page < pages, "data": chunk},
        }
        (root / f"outList-cid-{cid}-page-{page}.json").write_text(
            json.dumps(listing, ensure_ascii=False, indent=1), encoding="utf-8"
        )
    return GeneratedSite(root, cid, articles, per_page, pages)
