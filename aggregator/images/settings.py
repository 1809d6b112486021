"""The IMAGES_MIRROR_* settings, read once and checked before anything starts: a mistake is
exit status 2 (via aggregator.storage.check_output_settings), not a crawl that fails later."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from scrapy.exceptions import NotConfigured

from aggregator.errors import ConfigError
from aggregator.images.referer import RefererPolicy

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = ["DEFAULT_CACHE_CONTROL", "MirrorSettings", "check_image_settings", "store_scheme"]

DEFAULT_MAXSIZE = 10 * 1024 * 1024
DEFAULT_CACHE_CONTROL = "public, max-age=31536000, immutable"
_UNSAFE_IN_ADDRESS = re.compile(r'[\s"<>\\]')
STORE_SCHEMES = ("", "file", "s3")


def store_scheme(uri: str) -> str:
    if Path(uri).is_absolute():
        return ""
    scheme = urlsplit(uri).scheme
    return "" if len(scheme) == 1 else scheme  # a Windows drive letter, not a scheme


@dataclass(frozen=True)
class MirrorSettings:
    uri: str
    base_url: str
    expires_days: float
    maxsize: int
    referer: RefererPolicy
    required: bool
    cache_control: str

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> MirrorSettings:
        """Raises NotConfigured (no arguments) when IMAGES_MIRROR_URI is unset, ConfigError
        when a setting is wrong."""
        uri = str(settings.get("IMAGES_MIRROR_URI") or "").strip()
        if not uri:
            raise NotConfigured
        scheme = store_scheme(uri)
        if scheme not in STORE_SCHEMES:
            raise ConfigError(
                f"IMAGES_MIRROR_URI {uri!r}: no image store for scheme {scheme!r} "
                "(a directory, file:// or s3://bucket/prefix)"
            )
        base_url = str(settings.get("IMAGES_MIRROR_BASE_URL") or "").strip()
        if not base_url:
            raise ConfigError(
                "IMAGES_MIRROR_URI is set but IMAGES_MIRROR_BASE_URL is not: set where the blog "
                "serves the mirrored images (https://img.example.com/ or /images/)"
            )
        parts = urlsplit(base_url)
        absolute = parts.scheme in ("http", "https") and parts.netloc
        if _UNSAFE_IN_ADDRESS.search(base_url) or not (absolute or base_url.startswith("/")):
            raise ConfigError(
                f"IMAGES_MIRROR_BASE_URL {base_url!r}: expected an http(s) URL or a path "
                "starting with / (no spaces, quotes or angle brackets)"
            )
        try:
            expires = settings.getfloat("IMAGES_MIRROR_EXPIRES", 0)
            maxsize = settings.getint("IMAGES_MIRROR_MAXSIZE", DEFAULT_MAXSIZE)
            rules = settings.getdict("IMAGES_MIRROR_REFERER")
            required = settings.getbool("IMAGES_MIRROR_REQUIRED", False)
        except ValueError as exc:
            raise ConfigError(f"IMAGES_MIRROR_*: {exc}") from exc
        if expires < 0:
            raise ConfigError(f"IMAGES_MIRROR_EXPIRES must be 0 (never) or more, not {expires}")
        if maxsize < 1:
            raise ConfigError(f"IMAGES_MIRROR_MAXSIZE must be at least 1 byte, not {maxsize}")
        return cls(
            uri=uri,
            base_url=base_url,
            expires_days=expires,
            maxsize=maxsize,
            referer=RefererPolicy(rules),
            required=required,
            cache_control=str(settings.get("IMAGES_MIRROR_CACHE_CONTROL") or "").strip()
            or DEFAULT_CACHE_CONTROL,
        )


def check_image_settings(settings: BaseSettings) -> None:
    """Raise ConfigError when the IMAGES_MIRROR_* settings cannot work (nothing when mirroring
    is off), without touching the store."""
    try:
        mirror = MirrorSettings.from_settings(settings)
    except NotConfigured:
        return
    if store_scheme(mirror.uri) == "s3":
        from aggregator.images.stores import S3ImageStore

        try:
            S3ImageStore.check_settings(mirror.uri, settings)
        except NotConfigured as exc:
            raise ConfigError(str(exc)) from exc
