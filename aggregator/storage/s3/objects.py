"""What goes into the bucket and how: object keys, locations and metadata, and the one
conditional PUT of a post with its exactly-once rules. Blocking: `S3Uploader` takes a client
and is called from worker threads.

Every post is a conditional PutObject (`IfNoneMatch="*"`), so an existing object is never
overwritten. A 412 means the object exists; it counts as ours (written) only when its stored
SHA-256 and writer id equal ours, i.e. a PUT of ours landed although we never saw the answer.
A 409 `ConditionalRequestConflict` (a concurrent conditional write) is retried here with
full-jitter backoff, since no botocore retry mode does.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from aggregator.keys import is_safe_key
from aggregator.storage import PostRecord, StoreResult
from aggregator.storage.s3.client import error_of

if TYPE_CHECKING:
    from aggregator.storage.s3.config import S3Config

__all__ = [
    "MANIFEST_CONTENT_TYPE",
    "MANIFEST_DIR",
    "POST_CONTENT_TYPE",
    "ObjectLayout",
    "S3UploadError",
    "S3Uploader",
    "Uploaded",
    "post_metadata",
    "put_if_absent",
]

POST_CONTENT_TYPE = "text/markdown; charset=utf-8"
MANIFEST_CONTENT_TYPE = "application/x-ndjson; charset=utf-8"
MANIFEST_DIR = "_manifests"  # never a site name: those start with [a-z0-9]
# S3 allows 2 KB of user metadata in all; a longer source URL is cut (and flagged) there, and
# kept whole in the manifest, rather than failing the PUT on every run.
MAX_URL_METADATA = 1500
CONFLICT_BACKOFF_CAP = 5.0

# Characters RFC 3986 allows unescaped in a URL, plus "%" so existing escapes stay as they are.
_URL_SAFE = "!#$&'()*+,/:;=?@[]~%-._"
_SITE = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")


def put_if_absent(
    client: Any, *, retries: int, backoff: float, **put_args: Any
) -> tuple[bool, int]:
    """One conditional PutObject (`IfNoneMatch="*"`): (True, conflicts) when it created the
    object, (False, conflicts) on 412, the object exists. A 409 `ConditionalRequestConflict`
    (a concurrent conditional write of the key) is retried up to `retries` times with
    full-jitter backoff, which no botocore retry mode does; `conflicts` counts those retries.
    Any other error, and the conflict that outlasts the retries, is raised as botocore's."""
    conflicts = 0
    while True:
        try:
            client.put_object(**put_args, IfNoneMatch="*")
        except ClientError as exc:
            if error_of(exc)[0] == 412:
                return False, conflicts
            if not is_conflict(exc) or conflicts >= retries:
                raise
            conflicts += 1
            time.sleep(conflict_delay(backoff, conflicts))
            continue
        return True, conflicts


def is_conflict(exc: ClientError) -> bool:
    return error_of(exc) == (409, "ConditionalRequestConflict")


def conflict_delay(backoff: float, attempt: int) -> float:
    """Full jitter: concurrent writers retrying a conflict should not collide again."""
    return random.uniform(0, min(CONFLICT_BACKOFF_CAP, backoff * 2**attempt))


class S3UploadError(Exception):
    """A PUT that still failed after botocore's retries (or ours, for 409 conflicts)."""


@dataclass(frozen=True)
class Uploaded:
    """What one upload did. `outcome` is "created" (our PUT made the object), "ours" (it
    existed: an earlier PUT of ours had landed) or "existing" (another writer's object)."""

    result: StoreResult
    outcome: str
    conflicts: int
    size: int
    entry: dict[str, Any] | None  # the manifest line, when the object counts as ours


@dataclass(frozen=True)
class ObjectLayout:
    """Object keys under `s3://bucket/prefix`, all derived from the article key, never the
    title: `{prefix}/{site}/{article key}.md` and `{prefix}/_manifests/{UTC timestamp}-{spider}-
    {run id}.jsonl`."""

    bucket: str
    prefix: str = ""

    def join(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, *parts) if part)

    def post_key(self, post: PostRecord) -> str:
        if not _SITE.fullmatch(post.site) or not is_safe_key(post.key):
            raise ValueError(f"refusing to build an object key from {post.site!r}/{post.key!r}")
        return self.join(post.site, f"{post.key}.md")

    def manifest_key(self, spider: str, run_id: str, moment: datetime) -> str:
        """Named by the time it is written, so it sorts after every manifest written before."""
        stamp = moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        return self.join(MANIFEST_DIR, f"{stamp}-{spider}-{run_id}.jsonl")

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def _utc_iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _url_metadata(url: str) -> dict[str, str]:
    """The source URL as ASCII; user metadata travels in HTTP headers."""
    encoded = quote(url, safe=_URL_SAFE)
    if len(encoded) <= MAX_URL_METADATA:
        return {"source-url": encoded}
    cut = re.sub(r"%[0-9A-Fa-f]?$", "", encoded[:MAX_URL_METADATA])
    return {"source-url": cut, "source-url-truncated": "true"}


def post_metadata(post: PostRecord, sha256: str, *, writer_id: str, run_id: str) -> dict[str, str]:
    """User metadata (all ASCII): where the post comes from and what its body hashes to, plus
    who wrote it, which tells our own landed retries from another writer's object."""
    return {
        **_url_metadata(post.url),
        "article-key": post.key,
        "published": _utc_iso(post.published),
        "sha256": sha256,
        "writer": writer_id,
        "run": run_id,
    }


class S3Uploader:
    """Posts and manifests into one bucket as writer `writer_id`, run `run_id`. Blocking."""

    def __init__(
        self,
        client: Any,
        layout: ObjectLayout,
        *,
        writer_id: str,
        run_id: str,
        conflict_retries: int = 5,
        conflict_backoff: float = 0.2,
    ):
        self.client = client
        self.layout = layout
        self.writer_id = writer_id
        self.run_id = run_id
        self.conflict_retries = conflict_retries
        self.conflict_backoff = conflict_backoff

    @classmethod
    def from_config(
        cls, client: Any, config: S3Config, *, writer_id: str, run_id: str
    ) -> S3Uploader:
        return cls(
            client,
            ObjectLayout(config.bucket, config.prefix),
            writer_id=writer_id,
            run_id=run_id,
            conflict_retries=config.conflict_retries,
            conflict_backoff=config.conflict_backoff,
        )

    def upload(self, post: PostRecord) -> Uploaded:
        """One conditional PUT of `post`, with the 412 and 409 rules of the module docstring."""
        key = self.layout.post_key(post)
        location = self.layout.location(key)
        digest = hashlib.sha256(post.data).digest()
        sha256 = digest.hex()
        metadata = post_metadata(post, sha256, writer_id=self.writer_id, run_id=self.run_id)
        # S3 checks the body against this (end-to-end integrity), and botocore need not
        # compute a checksum of its own
        checksum = base64.b64encode(digest).decode("ascii")
        conflicts = 0
        while True:
            try:
                created, retried = put_if_absent(
                    self.client,
                    retries=self.conflict_retries - conflicts,
                    backoff=self.conflict_backoff,
                    Bucket=self.layout.bucket,
                    Key=key,
                    Body=post.data,
                    ContentType=POST_CONTENT_TYPE,
                    Metadata=metadata,
                    ChecksumSHA256=checksum,
                )
            except ClientError as exc:
                status, code = error_of(exc)
                if is_conflict(exc):
                    raise S3UploadError(
                        f"PUT {location}: {code} after {self.conflict_retries} retries"
                    ) from exc
                raise S3UploadError(f"PUT {location}: {code or status}") from exc
            except BotoCoreError as exc:
                raise S3UploadError(f"PUT {location}: {exc}") from exc
            conflicts += retried
            if created:
                return self._uploaded(post, key, sha256, conflicts, ours=True, new=True)
            existing = self._head_metadata(key)
            if existing is not None:
                ours = existing.get("sha256") == sha256 and existing.get("writer") == self.writer_id
                return self._uploaded(post, key, sha256, conflicts, ours=ours, new=False)
            # deleted between our PUT and our HEAD: try again, like a conflict
            if conflicts >= self.conflict_retries:
                raise S3UploadError(f"PUT {location}: 412 after {conflicts} retries")
            conflicts += 1
            time.sleep(conflict_delay(self.conflict_backoff, conflicts))

    def _head_metadata(self, key: str) -> dict[str, str] | None:
        try:
            response = self.client.head_object(Bucket=self.layout.bucket, Key=key)
        except ClientError as exc:
            if error_of(exc)[0] == 404:
                return None
            raise S3UploadError(f"HEAD {self.layout.location(key)}: {error_of(exc)[1]}") from exc
        return {name.lower(): value for name, value in response.get("Metadata", {}).items()}

    def _uploaded(
        self, post: PostRecord, key: str, sha256: str, conflicts: int, *, ours: bool, new: bool
    ) -> Uploaded:
        entry = None
        if ours:
            entry = {
                "key": key,
                "article_key": post.key,
                "title": post.title,
                "url": post.url,
                "published": _utc_iso(post.published),
                "sha256": sha256,
                "size": len(post.data),
            }
            if post.images:
                entry["images"] = list(post.images)
        outcome = "created" if new else ("ours" if ours else "existing")
        location = self.layout.location(key)
        return Uploaded(
            StoreResult(location, created=ours), outcome, conflicts, len(post.data), entry
        )

    def put_manifest(self, spider: str, run_id: str, body: bytes) -> str:
        """Upload a manifest (of this run, or one an earlier run left behind: `run_id`) named by
        the time it is written. Returns its key."""
        key = self.layout.manifest_key(spider, run_id, datetime.now(UTC))
        self.client.put_object(
            Bucket=self.layout.bucket,
            Key=key,
            Body=body,
            ContentType=MANIFEST_CONTENT_TYPE,
            Metadata={"writer": self.writer_id, "run": run_id},
            IfNoneMatch="*",
        )
        return key
