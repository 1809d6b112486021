"""Where mirrored images go, by the scheme of IMAGES_MIRROR_URI: a directory (or file://) or
an S3 bucket (s3://bucket/prefix). Both speak Scrapy's files-store protocol (`stat_file`,
`persist_file`, returning Deferreds), with two differences the mirror relies on:

- `stat_file` is given a path *stem* (`ab/abcd…`, see aggregator.images.paths) and finds the
  newest stored version under `{stem}-`, whatever its extension; its answer carries the
  stored `path` besides `last_modified`;
- `persist_file` never overwrites and fires True when it created the object, False when one was
  there already (a name stands for one content, so that is the same image, stored).

Stores are built from the crawler's settings and passed nothing through class attributes, so
two crawlers in one process (crawlall) cannot see each other's settings.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from scrapy.exceptions import NotConfigured
from twisted.internet import defer, threads

from aggregator.errors import ConfigError
from aggregator.images.paths import EXTENSIONS
from aggregator.images.settings import DEFAULT_CACHE_CONTROL
from aggregator.storage.s3.client import connect, quiet_sdk_debug_logs
from aggregator.storage.s3.config import S3Config
from aggregator.storage.s3.objects import _url_metadata, put_if_absent
from aggregator.storage.s3.threads import S3Threads

if TYPE_CHECKING:
    from collections.abc import Iterable
    from io import BytesIO

    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings
    from twisted.internet.defer import Deferred

__all__ = ["DirectoryImageStore", "S3ImageStore", "StoredImage"]

logger = logging.getLogger(__name__)

StoredImage = dict[str, Any]  # Scrapy's StatInfo plus "path"


def _newest(candidates: Iterable[tuple[str, float, str | None]]) -> StoredImage:
    """{"path", "last_modified", "checksum"} of the newest (path, mtime, checksum), or {}."""
    best: tuple[str, float, str | None] | None = None
    for candidate in candidates:
        path = candidate[0]
        if path.rsplit(".", 1)[-1] not in EXTENSIONS:
            continue
        if best is None or candidate[1] > best[1]:
            best = candidate
    if best is None:
        return {}
    return {"path": best[0], "last_modified": best[1], "checksum": best[2]}


class DirectoryImageStore:
    """Images as files under a directory (IMAGES_MIRROR_URI=path or file://path). A file is
    written to a temporary name beside its target and hard-linked into place, which fails if
    the target exists: never a half-written image, never an overwrite. Blocking work runs in
    the reactor's thread pool, as post files do."""

    def __init__(self, uri: str, *, fsync: bool = True):
        parsed = urlparse(uri)
        self.directory = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
        self.fsync = fsync

    @classmethod
    def from_crawler(cls, crawler: Crawler, uri: str) -> DirectoryImageStore:
        return cls(uri, fsync=crawler.settings.getbool("OUTPUT_FSYNC", True))

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"IMAGES_MIRROR_URI {self.directory}: cannot create it: {exc}"
            ) from exc
        if not os.access(self.directory, os.W_OK):
            raise ConfigError(f"IMAGES_MIRROR_URI {self.directory} is not writable")

    def close(self) -> None:
        return None

    def object_key(self, path: str) -> str:
        return path

    def location(self, path: str) -> str:
        return str(self.directory / path)

    def _file(self, path: str) -> Path:
        parts = path.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"refusing image path {path!r}")
        return self.directory.joinpath(*parts)

    def lookup(self, stem: str) -> StoredImage:
        target = self._file(stem)
        prefix = target.name + "-"
        try:
            with os.scandir(target.parent) as entries:
                found = [
                    (f"{stem}-{entry.name[len(prefix) :]}", entry.stat().st_mtime, None)
                    for entry in entries
                    if entry.name.startswith(prefix) and entry.is_file()
                ]
        except FileNotFoundError:
            return {}
        return _newest(found)

    def write(self, path: str, data: bytes) -> bool:
        target = self._file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    # Scrapy's files-store protocol
    def stat_file(self, path: str, info: Any) -> Deferred[StoredImage]:
        return threads.deferToThread(self.lookup, path)

    def persist_file(
        self,
        path: str,
        buf: BytesIO,
        info: Any,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Deferred[bool]:
        return threads.deferToThread(self.write, path, buf.getvalue())


def parse_image_uri(uri: str) -> tuple[str, str]:
    """Bucket and key prefix (no leading or trailing "/") of IMAGES_MIRROR_URI=s3://…"""
    parsed = urlparse(uri)
    if parsed.username or parsed.password:
        raise NotConfigured(
            "IMAGES_MIRROR_URI must not carry credentials: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (environment or settings) instead"
        )
    if parsed.scheme != "s3" or not parsed.hostname:
        raise NotConfigured(f"IMAGES_MIRROR_URI {uri!r} needs a bucket (s3://bucket/prefix)")
    return parsed.netloc, "/".join(part for part in parsed.path.split("/") if part)


class S3ImageStore:
    """Images as objects under `s3://bucket/prefix`, with the S3 settings posts use (AWS_*,
    S3_MAX_UPLOADS, S3_MAX_ATTEMPTS, S3_CONFLICT_*, S3_TIMEOUT). Each object is one
    conditional PutObject (`IfNoneMatch="*"`, as posts): a 412 means it is stored already.
    It gets its type's Content-Type, IMAGES_MIRROR_CACHE_CONTROL, a SHA-256 checksum S3
    verifies and `source-url`/`sha256` metadata. Look-ups are one ListObjectsV2 of the
    image's stem. boto3 blocks, so calls run in this store's own thread pool (S3_MAX_UPLOADS
    threads), never in the reactor's, which Scrapy's DNS resolution shares."""

    def __init__(
        self,
        config: S3Config,
        *,
        cache_control: str = DEFAULT_CACHE_CONTROL,
        log_level: int | str = logging.DEBUG,
    ):
        self.config = config
        self.uri, self.bucket, self.prefix = config.uri, config.bucket, config.prefix
        self.cache_control = cache_control
        self.log_level = log_level
        self.client: Any = None
        self._threads = S3Threads(config.max_uploads, "s3-images")

    @classmethod
    def _config(cls, uri: str, settings: BaseSettings) -> S3Config:
        parse_image_uri(uri)  # its own messages, naming IMAGES_MIRROR_URI
        return S3Config.from_settings(uri, settings)

    @classmethod
    def check_settings(cls, uri: str, settings: BaseSettings) -> None:
        cls._config(uri, settings)

    @classmethod
    def from_crawler(cls, crawler: Crawler, uri: str) -> S3ImageStore:
        settings = crawler.settings
        return cls(
            cls._config(uri, settings),
            cache_control=str(settings.get("IMAGES_MIRROR_CACHE_CONTROL") or "")
            or DEFAULT_CACHE_CONTROL,
            log_level=settings.get("LOG_LEVEL") or logging.DEBUG,
        )

    def object_key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def location(self, path: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(path)}"

    # --- blocking side: worker threads ------------------------------------------------------
    def connect(self) -> None:
        self.client = connect(self.config, "IMAGES_MIRROR_URI")

    def lookup(self, stem: str) -> StoredImage:
        prefix = self.object_key(stem) + "-"
        answer = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=100)
        strip = len(self.object_key(""))
        return _newest(
            (
                item["Key"][strip:],
                item["LastModified"].astimezone(UTC).timestamp(),
                str(item.get("ETag", "")).strip('"') or None,
            )
            for item in answer.get("Contents", [])
        )

    def put(self, path: str, data: bytes, content_type: str, source_url: str) -> bool:
        digest = hashlib.sha256(data).digest()
        created, _ = put_if_absent(
            self.client,
            retries=self.config.conflict_retries,
            backoff=self.config.conflict_backoff,
            Bucket=self.bucket,
            Key=self.object_key(path),
            Body=data,
            ContentType=content_type,
            CacheControl=self.cache_control,
            ChecksumSHA256=base64.b64encode(digest).decode("ascii"),
            Metadata={**_url_metadata(source_url), "sha256": digest.hex()},
        )
        return created  # False: the name stands for this content, stored already

    # --- reactor side -----------------------------------------------------------------------
    def open(self) -> Deferred[None]:
        quiet_sdk_debug_logs(self.log_level)
        self._threads.start()
        return self._threads.run(self.connect)

    def close(self) -> None:
        self._threads.stop()

    def stat_file(self, path: str, info: Any) -> Deferred[StoredImage]:
        if self.client is None:
            return defer.succeed({})
        return self._threads.run(self.lookup, path)

    def persist_file(
        self,
        path: str,
        buf: BytesIO,
        info: Any,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Deferred[bool]:
        if self.client is None:
            return defer.fail(RuntimeError(f"{self.location(path)}: the image store is not open"))
        content_type = (headers or {}).get("Content-Type", "application/octet-stream")
        source_url = str((meta or {}).get("source-url", ""))
        return self._threads.run(self.put, path, buf.getvalue(), content_type, source_url)
