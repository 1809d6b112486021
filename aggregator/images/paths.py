"""Where a mirrored image is stored, and the address a post uses for it.

An image is stored at `{u[:2]}/{u}-{c}.{ext}`: `u` is a digest of its canonical source URL
(w3lib: query sorted, fragment dropped), `c` a digest of its bytes, `ext` that of the type
sniffed from the bytes. Deriving the name from the URL lets a later run find the stored copy by
its source URL (a listing of `{u[:2]}/{u}-`) without downloading anything; the bytes digest
makes each name stand for one content, so an object is never replaced: a stored image may be
cached for ever (`Cache-Control: immutable`), and an image that changed at its source (found
when IMAGES_MIRROR_EXPIRES makes the pipeline download it again) gets a name of its own while
older posts keep theirs. Identical images at different URLs are stored once each: deduplicating
by bytes would need a download before the first look-up.
"""

from __future__ import annotations

import hashlib

from w3lib.url import canonicalize_url

from aggregator.images.sniff import IMAGE_TYPES, ImageType

__all__ = [
    "EXTENSIONS",
    "image_path",
    "mirrored_address",
    "source_digest",
    "stem",
]

URL_DIGEST_LENGTH = 32  # hex digits: 128 bits
CONTENT_DIGEST_LENGTH = 12  # hex digits: tells versions of one URL apart
EXTENSIONS = frozenset(t.extension for t in IMAGE_TYPES)


def source_digest(url: str) -> str:
    try:
        canonical = canonicalize_url(url, keep_fragments=False)
    except ValueError:
        canonical = url
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:URL_DIGEST_LENGTH]


def stem(url: str) -> str:
    """`{u[:2]}/{u}`: every version of the image at `url` is stored under `{stem}-`."""
    digest = source_digest(url)
    return f"{digest[:2]}/{digest}"


def image_path(url: str, data: bytes, image_type: ImageType) -> str:
    content = hashlib.sha256(data).hexdigest()[:CONTENT_DIGEST_LENGTH]
    return f"{stem(url)}-{content}.{image_type.extension}"


def mirrored_address(base_url: str, path: str) -> str:
    """IMAGES_MIRROR_BASE_URL + the stored path (one "/" between them)."""
    return base_url.rstrip("/") + "/" + path
