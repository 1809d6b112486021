"""Article keys: the identity of an article, and the only thing file names and object keys are
built from (titles are untrusted and unstable)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from w3lib.url import canonicalize_url, url_query_cleaner

__all__ = ["article_key", "canonical_url", "is_safe_key"]

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SAFE_SITE = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")
_SAFE_KEY = re.compile(
    r"[a-z0-9][a-z0-9_]{0,31}-(?:-(?:id|url)-[0-9a-f]{32}|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})"
)


def canonical_url(
    url: str, tracking_params: Iterable[str] = (), *, keep_fragments: bool = False
) -> str:
    """One spelling per article URL: w3lib's canonical form without tracking parameters, so the
    same article shared with different `utm_*`/`from` values is recognised; without its
    fragment unless `keep_fragments` (a fragment that tells entries of one page apart)."""
    cleaned = url_query_cleaner(
        url.strip(), list(tracking_params), remove=True, unique=False, keep_fragments=True
    )
    return canonicalize_url(cleaned, keep_fragments=keep_fragments)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def article_key(
    site: str,
    article_id: str | None,
    url: str | None = None,
    tracking_params: Iterable[str] = (),
    *,
    keep_fragments: bool = False,
) -> str:
    """The key of an article of `site`: `{site}-{id}` when the source gives a plain id, a digest
    of the id when it has characters unfit for a file name, and a digest of the canonical URL
    (with its fragment when `keep_fragments`) when there is no id. Keys are ASCII and safe as
    file names and object keys."""
    if not _SAFE_SITE.fullmatch(site):
        raise ValueError(f"site name {site!r} is not a short lowercase identifier")
    if article_id is not None and str(article_id).strip():
        article_id = str(article_id).strip()
        if _SAFE_ID.fullmatch(article_id):
            return f"{site}-{article_id}"
        return f"{site}--id-{_digest(article_id)}"
    if not url:
        raise ValueError(f"an article of {site} has neither an id nor a URL")
    canonical = canonical_url(url, tracking_params, keep_fragments=keep_fragments)
    return f"{site}--url-{_digest(canonical)}"


def is_safe_key(key: str) -> bool:
    """Whether `key` has the shape article_key makes; storages refuse anything else."""
    return bool(_SAFE_KEY.fullmatch(key)) and ".." not in key
