"""The one item the spiders produce and the pipelines consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["Article"]


@dataclass
class Article:
    """An article as read from a source, refined by the pipelines on its way to a post.

    `key` identifies the article across runs, sources and channels (see aggregator.keys); it,
    never the title, names the post. `published` is aware and in UTC. `base_url`, when set, is
    what the body's relative addresses are relative to, when that is not `url` (a feed's
    xml:base, a redirected or `<base href>` page).
    """

    key: str
    site: str
    url: str
    title: str
    body: str
    id: str | None = None
    source: str = ""
    group: str = ""
    channel: str = ""
    author: str = ""
    published: datetime | None = None
    images: list[str] = field(default_factory=list)
    cover: list[str] = field(default_factory=list)
    headimg: str | None = None
    base_url: str | None = None

    @property
    def categories(self) -> list[str]:
        return [self.group, self.source, self.channel]
