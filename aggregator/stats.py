"""Stats keys: every counter the project writes lives under one prefix so it can be read apart
from Scrapy's own."""

from __future__ import annotations

PREFIX = "aggregator"

LISTING_PAGES = f"{PREFIX}/listings/pages"
LISTING_FAILED = f"{PREFIX}/listings/failed"
ARTICLES_NEW = f"{PREFIX}/articles/new"
ARTICLES_DUPLICATE = f"{PREFIX}/articles/duplicate"
# Another source's copy of a story published within NEAR_DUPLICATE_DAYS (pipelines/neardup.py).
ARTICLES_NEAR_DUPLICATE = f"{PREFIX}/articles/near_duplicate"
ARTICLES_FAILED = f"{PREFIX}/articles/failed"
ARTICLES_PENDING = f"{PREFIX}/articles/pending"
ARTICLES_PENDING_RETRIED = f"{PREFIX}/articles/pending_retried"
ARTICLES_TIME_MISSING = f"{PREFIX}/articles/published_time_missing"
# Posts are in the bucket but consumers reading `_manifests/` do not see them until the next run
# sends the manifest kept locally: worth an alert.
S3_MANIFEST_FAILED = f"{PREFIX}/s3/manifest_failed"
# Cluster mode: a request that could not be queued (not JSON-safe), or a queued payload that
# was refused (not a valid JSON request: garbage or a planted pickle).
CLUSTER_UNSERIALIZABLE = f"{PREFIX}/cluster/unserializable"
CLUSTER_REFUSED = f"{PREFIX}/cluster/refused"
CLUSTER_RATE_LIMITED = f"{PREFIX}/cluster/rate_limited"
# requests a stopping worker put back in their queue before starting them
CLUSTER_RELEASED = f"{PREFIX}/cluster/released"


def dropped(reason: str) -> str:
    """Key for an item dropped on purpose, one counter per reason."""
    return f"{PREFIX}/articles/dropped/{reason}"


def failures(stats: dict) -> int:
    """How many listings, articles and manifests failed in a run; non-zero means the run needs
    attention."""
    return sum(
        int(stats.get(key, 0))
        for key in (
            LISTING_FAILED,
            ARTICLES_FAILED,
            S3_MANIFEST_FAILED,
            CLUSTER_UNSERIALIZABLE,
            CLUSTER_REFUSED,
        )
    )
