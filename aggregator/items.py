"""The item the spiders produce and the pipelines consume, and the channel a source posts to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["Article", "Channel"]


@dataclass(frozen=True)
class Channel:
    """Where a source's articles go, shared by every spider: the site that keys them (articles of
    one site are one article however many channels list them), the post's categories
    `[group, source, channel]` and its author."""

    site: str
    group: str
    source: str
    channel: str
    author: str

    @property
    def categories(self) -> list[str]:
        return [self.group, self.source, self.channel]

    def retry_fields(self) -> dict[str, Any]:
        """What a pending article records of its channel, so that the crawl posting to the same
        channel retries it (and the retried post carries the channel it would have had)."""
        return {"categories": self.categories, "author": self.author}

    def owns(self, retry: dict[str, Any]) -> bool:
        """Whether a pending article (its `retry` payload) is this channel's. Payloads stored
        before the channel was recorded belong to any crawl of the site."""
        if "categories" not in retry:
            return True
        return {k: retry.get(k) for k in ("categories", "author")} == self.retry_fields()

    def article(self, **fields: Any) -> Article:
        return Article(
            site=self.site,
            group=self.group,
            source=self.source,
            channel=self.channel,
            author=self.author,
            **fields,
        )


@dataclass
class Article:
    """An article as read from a source, refined by the pipelines on its way to a post.

    `key` identifies the article across runs, sources and channels (see aggregator.keys); it,
    never the title, names the post. `published` is aware and in UTC. `base_url`, when set, is
    what the body's relative addresses are relative to, when that is not `url` (a feed's
    xml:base, a redirected or `<base href>` page). `retry` is what the spider needs to make the
    article again if it fails on its way (JSON-safe; see aggregator.state.pending). `aliases`
    are keys the article had under an older key scheme: if one of them is published, so is it.
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
    retry: dict[str, Any] | None = None
    aliases: list[str] = field(default_factory=list)

    @property
    def categories(self) -> list[str]:
        return [self.group, self.source, self.channel]
