"""Stats keys: every counter the project writes lives under one prefix so it can be read apart
from Scrapy's own."""

from __future__ import annotations

PREFIX = "aggregator"

LISTING_PAGES = f"{PREFIX}/listings/pages"
LISTING_FAILED = f"{PREFIX}/listings/failed"
ARTICLES_NEW = f"{PREFIX}/articles/new"
ARTICLES_DUPLICATE = f"{PREFIX}/articles/duplicate"
ARTICLES_FAILED = f"{PREFIX}/articles/failed"
ARTICLES_PENDING = f"{PREFIX}/articles/pending"
ARTICLES_PENDING_RETRIED = f"{PREFIX}/articles/pending_retried"
ARTICLES_TIME_MISSING = f"{PREFIX}/articles/published_time_missing"


def dropped(reason: str) -> str:
    """Key for an item dropped on purpose, one counter per reason."""
    return f"{PREFIX}/articles/dropped/{reason}"


def failures(stats: dict) -> int:
    """How many listings and articles failed in a run; non-zero means the run needs attention."""
    return int(stats.get(LISTING_FAILED, 0)) + int(stats.get(ARTICLES_FAILED, 0))
