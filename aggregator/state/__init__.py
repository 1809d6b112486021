"""The crawl state: what is published, what waits for a retry, and small records that must
survive runs. One component per crawler (`CrawlStateExtension`) owns the store that `DEDUPE_URI`
names; everything else reaches it through the crawler with `crawl_state(crawler)`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from scrapy.utils.misc import load_object

from aggregator.errors import ConfigError
from aggregator.state.base import (
    CrawlState,
    PendingArticle,
    PendingArticles,
    PublishedKeys,
    PublishedRecord,
    Records,
)

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = [
    "CrawlState",
    "PendingArticle",
    "PendingArticles",
    "PublishedKeys",
    "PublishedRecord",
    "Records",
    "check_state_settings",
    "dedupe_uri",
    "state_class",
    "state_dir",
]


def state_dir(settings: BaseSettings) -> Path:
    """STATE_DIR: the SQLite store's default home, and where the run lock, last-run.json and
    S3 manifest journals live."""
    return Path(settings.get("STATE_DIR") or ".state")


def dedupe_uri(settings: BaseSettings) -> str:
    """DEDUPE_URI; else, in cluster mode, CLUSTER_URI (the state lives in the cluster's Redis);
    else the documented default under STATE_DIR."""
    uri = settings.get("DEDUPE_URI") or settings.get("CLUSTER_URI")
    if uri:
        return str(uri)
    return f"sqlite:///{state_dir(settings) / 'dedupe.sqlite3'}"


def state_class(settings: BaseSettings, uri: str) -> Any:
    """The backend class registered for the URI's scheme in DEDUPE_STORES(_BASE)."""
    scheme = urlparse(uri).scheme
    stores = settings.getwithbase("DEDUPE_STORES")
    if scheme not in stores or not stores[scheme]:
        raise ConfigError(
            f"DEDUPE_URI {uri!r}: no store for scheme {scheme!r} (known: {sorted(stores)})"
        )
    return load_object(stores[scheme])


def check_state_settings(settings: BaseSettings) -> None:
    """Raise ConfigError when DEDUPE_URI cannot work, without connecting: commands call it
    before anything starts, so a typo is exit status 2."""
    uri = dedupe_uri(settings)
    check = getattr(state_class(settings, uri), "check_uri", None)
    if check is not None:
        check(uri)
