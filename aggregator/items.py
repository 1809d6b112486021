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
    xml:base, a redirected or `<base href>` page). `image_sources` and `mirrored_images` are
    for the image mirror (pipelines/images.py).
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
    # original image URL -> the address the normaliser wrote for it (proxied or not)
    image_sources: dict[str, str] = field(default_factory=dict)
    # the stored objects the post points at, when images are mirrored (IMAGES_MIRROR_URI)
    mirrored_images: list[str] = field(default_factory=list)

    @property
    def categories(self) -> list[str]:
        return [self.group, self.source, self.channel]
