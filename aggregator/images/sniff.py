"""The type of an image from its first bytes, never from Content-Type or the URL: a server may
call an HTML error page `image/jpeg`, and an SVG can carry script.

Only raster formats a browser shows as they are are accepted, and their bytes are kept as they
are (no re-encoding, so an animated GIF stays animated). The checks are the formats' own magic
numbers; a dozen lines did not justify a dependency (libmagic would also need a system library)
and keep the accepted set exactly this one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IMAGE_TYPES", "ImageType", "Refused", "sniff"]


@dataclass(frozen=True)
class ImageType:
    name: str
    extension: str
    content_type: str


@dataclass(frozen=True)
class Refused:
    """Not stored: `reason` is the stats suffix (`aggregator/images/failed/<reason>`)."""

    reason: str
    detail: str


JPEG = ImageType("jpeg", "jpg", "image/jpeg")
PNG = ImageType("png", "png", "image/png")
GIF = ImageType("gif", "gif", "image/gif")
WEBP = ImageType("webp", "webp", "image/webp")
AVIF = ImageType("avif", "avif", "image/avif")
IMAGE_TYPES: tuple[ImageType, ...] = (JPEG, PNG, GIF, WEBP, AVIF)

_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_MARKUP_START = (b"<!doctype", b"<html", b"<head", b"<body", b"<!--", b"<?xml", b"<svg")


def _avif(data: bytes) -> bool:
    """An ISO-BMFF `ftyp` box whose major or compatible brands include avif/avis (HEIC, MP4
    and other ISO-BMFF files share the box, not the brands)."""
    if data[4:8] != b"ftyp":
        return False
    size = int.from_bytes(data[0:4], "big")
    end = min(size, len(data)) if size >= 16 else 16
    brands = [data[8:12]] + [data[i : i + 4] for i in range(16, end - 3, 4)]
    return any(brand in _AVIF_BRANDS for brand in brands)


def sniff(data: bytes) -> ImageType | Refused:
    if not data:
        return Refused("empty", "empty body")
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if data[0:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    if _avif(data):
        return AVIF
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n\f").lower()
    if b"<svg" in head and head.startswith((b"<svg", b"<?xml", b"<!--", b"<!doctype svg")):
        return Refused("svg", "an SVG image (it can carry script)")
    if head.startswith(_MARKUP_START):
        return Refused("html", "an HTML page, not an image")
    return Refused("unknown_type", f"not a JPEG, PNG, GIF, WebP or AVIF image ({data[:8]!r})")
