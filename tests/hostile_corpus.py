"""The hostile corpus (tests/fixtures/hostile/*.yaml) as articles a source serves: an RSS 2.0
feed and 趣头条 listing/detail answers for the replay server, and what each post must show.

Every corpus article becomes one post: a group of vectors (each original payload followed by
its hooked variant), a hostile title with a plain body, or an ordinary article.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import yaml
from aggregator.pipelines.validate import clean_title

from aggregator.keys import article_key

CORPUS = Path(__file__).resolve().parent / "fixtures" / "hostile"
HOSTILE_FILES = ("html.yaml", "markdown.yaml", "hexo.yaml")
FEED_PATH = "/hostile.rss"
QUTOUTIAO_CID = "77"
ARTICLE_LINK = "http://news.example.com/articles/{id}.html"
# Placeholders in payloads, replaced when the source answers are written.
BEACON = "__BEACON__"
FIRST_PUBLISHED = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Vector:
    id: str
    source: str
    html: str
    hooked: str | None = None


@dataclass(frozen=True)
class Article:
    id: str
    kind: str  # "hostile" | "title" | "ordinary"
    channel: str  # "feed" | "qutoutiao"
    title: str
    html: str  # the article body as the source serves it (placeholders not yet replaced)
    source: str
    published: datetime
    vectors: tuple[Vector, ...] = ()
    must_show: tuple[str, ...] = ()

    @property
    def post_file(self) -> str:
        """The post file the crawl writes for this article."""
        site = "feed" if self.channel == "feed" else "qutoutiao"
        return article_key(site, self.id) + ".md"

    @property
    def expected_title(self) -> str:
        """The title as the post (and so the page) must show it."""
        return clean_title(self.title)

    def body(self, beacon: str) -> str:
        return self.html.replace(BEACON, beacon)


@dataclass
class Corpus:
    articles: list[Article] = field(default_factory=list)

    def by_kind(self, kind: str) -> list[Article]:
        return [a for a in self.articles if a.kind == kind]

    def by_post_file(self) -> dict[str, Article]:
        return {a.post_file: a for a in self.articles}

    def channel(self, channel: str) -> list[Article]:
        return [a for a in self.articles if a.channel == channel]

    def vector(self, vector_id: str) -> tuple[Article, Vector]:
        for article in self.articles:
            for vector in article.vectors:
                if vector.id == vector_id:
                    return article, vector
        raise KeyError(vector_id)


def _load(name: str) -> dict:
    with (CORPUS / name).open(encoding="utf-8") as file:
        return yaml.safe_load(file)


def load_corpus() -> Corpus:
    articles: list[Article] = []

    def published() -> datetime:
        return FIRST_PUBLISHED + timedelta(hours=len(articles))

    for name in HOSTILE_FILES:
        for post in _load(name)["posts"]:
            vectors = tuple(
                Vector(v["id"], v["source"], v["html"], v.get("hooked")) for v in post["vectors"]
            )
            parts = [f"<p>安全语料 {post['id']}</p>", post.get("intro", "")]
            for vector in vectors:
                parts.append(vector.html)
                if vector.hooked:
                    parts.append(vector.hooked)
            articles.append(
                Article(
                    id=post["id"],
                    kind="hostile",
                    channel=post.get("channel", "feed"),
                    title=post["title"],
                    html=("\n\n" if post.get("blank_lines") else "\n").join(p for p in parts if p),
                    source="; ".join(v.source for v in vectors),
                    published=published(),
                    vectors=vectors,
                )
            )
    for entry in _load("titles.yaml")["titles"]:
        articles.append(
            Article(
                id=entry["id"],
                kind="title",
                channel="qutoutiao",
                title=entry["title"],
                html=f"<p>标题语料 {entry['id']}：正文只是一段普通文字。</p>",
                source=entry["source"],
                published=published(),
            )
        )
    for entry in _load("ordinary.yaml")["articles"]:
        articles.append(
            Article(
                id=entry["id"],
                kind="ordinary",
                channel=entry.get("channel", "feed"),
                title=entry["title"],
                html=entry["html"],
                source=entry["source"],
                published=published(),
                must_show=tuple(entry.get("must_show", ())),
            )
        )
    ids = [a.post_file for a in articles]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"corpus post ids used twice: {duplicates}")
    vector_ids = [v.id for a in articles for v in a.vectors]
    duplicates = sorted({i for i in vector_ids if vector_ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"corpus vector ids used twice: {duplicates}")
    return Corpus(articles)


# --- what the sources serve ------------------------------------------------------------------
def _cdata(text: str) -> str:
    # "]]>" cannot appear inside CDATA: end the section and start another between its parts.
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def feed_xml(
    articles: list[Article], beacon: str, *, self_url: str = "__BASE__/hostile.rss"
) -> str:
    """RSS 2.0 with each article's body in content:encoded (CDATA) and its title as text."""
    items = []
    for article in articles:
        link = ARTICLE_LINK.format(id=article.id)
        items.append(
            "<item>\n"
            f"<title>{xml_escape(article.title)}</title>\n"
            f"<link>{link}</link>\n"
            f'<guid isPermaLink="false">{xml_escape(article.id)}</guid>\n'
            f"<pubDate>{format_datetime(article.published, usegmt=True)}</pubDate>\n"
            f"<content:encoded>{_cdata(article.body(beacon))}</content:encoded>\n"
            "</item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
        ' xmlns:atom="http://www.w3.org/2005/Atom">\n<channel>\n'
        "<title>hostile corpus</title>\n<link>http://news.example.com/</link>\n"
        f'<atom:link href="{self_url}" rel="self" type="application/rss+xml" />\n'
        "<description>aggregator's hostile corpus</description>\n"
        + "\n".join(items)
        + "\n</channel>\n</rss>\n"
    )


def qutoutiao_files(articles: list[Article], beacon: str, cid: str = QUTOUTIAO_CID) -> dict:
    """Replay-server files for a 趣头条 listing of `articles` (one page) and their JSON details,
    in the shape of tests/fixtures/qutoutiao/ (see its README)."""
    listing = []
    files: dict[str, bytes] = {}
    for article in articles:
        listing.append(
            {
                "id": article.id,
                "title": article.title,
                "type": "news",
                "url": f"__BASE__/detail/{article.id}.html",
                "detail_url": f"__BASE__/detail_json/{article.id}.json",
                "show_time": str(int(article.published.timestamp())),
                "nickname": "语料",
                "source_name": "语料",
                "cover": [],
                "introduction": "",
            }
        )
        detail = {
            "code": 0,
            "message": "success",
            "id": article.id,
            "title": article.title,
            "detail": article.body(beacon),
        }
        files[f"detail_json/{article.id}.json"] = json.dumps(detail, ensure_ascii=False).encode()
    page = {
        "code": 0,
        "message": "success",
        "showErr": 0,
        "currentTime": int(FIRST_PUBLISHED.timestamp()),
        "data": {"page": 1, "has_more": False, "data": listing},
    }
    files[f"outList-cid-{cid}-page-1.json"] = json.dumps(page, ensure_ascii=False).encode()
    return files


def write_source(directory: Path, corpus: Corpus, beacon: str) -> None:
    """Everything the replay server needs for the corpus, under `directory`."""
    (directory / "detail_json").mkdir(parents=True, exist_ok=True)
    (directory / FEED_PATH.lstrip("/")).write_text(
        feed_xml(corpus.channel("feed"), beacon), encoding="utf-8"
    )
    for path, data in qutoutiao_files(corpus.channel("qutoutiao"), beacon).items():
        (directory / path).write_bytes(data)
