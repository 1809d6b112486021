"""Image mirroring (IMAGES_MIRROR_URI): every image of an article is downloaded through the
crawler's own downloader, checked to be an image by its bytes, stored once under a path derived
from its source URL, and the post points at the stored copy instead of the image proxy.

- `sniff`: the image type from the first bytes (JPEG, PNG, GIF, WebP, AVIF) or why not;
- `paths`: where an image is stored, and the address the post uses for it;
- `addresses`: which image addresses a normalised body holds, and rewriting them in place;
- `referer`: the Referer an image request carries (IMAGES_MIRROR_REFERER);
- `stores`: a directory or an S3 bucket, written without ever overwriting;
- `settings`: the IMAGES_MIRROR_* settings, checked before anything starts.

The pipeline itself is `aggregator.pipelines.images.ImageMirrorPipeline` (a FilesPipeline).
"""

from __future__ import annotations

from aggregator import stats as _stats

__all__ = [
    "STAT_ALREADY_STORED",
    "STAT_BYTES",
    "STAT_MIRRORED",
    "failed_stat",
]

_PREFIX = f"{_stats.PREFIX}/images"
# an image this run downloaded and stored (a new object)
STAT_MIRRORED = f"{_PREFIX}/mirrored"
# an image found in the store without downloading it, or downloaded and found stored meanwhile
STAT_ALREADY_STORED = f"{_PREFIX}/already_stored"
# bytes of the images this run stored
STAT_BYTES = f"{_PREFIX}/bytes"


def failed_stat(reason: str) -> str:
    """Key for an image of an article that kept its proxied address, one counter per reason."""
    return f"{_PREFIX}/failed/{reason}"
