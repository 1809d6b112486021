"""The S3 settings, read and checked once: `S3Config.from_settings(uri, settings)`. Everything
that can be wrong without the network (the URI's shape, the limits, half a set of credentials)
raises NotConfigured here, so `check_settings` (exit status 2 before a crawl starts) and the
storage built for a crawl run the very same checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from scrapy.exceptions import NotConfigured

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = ["S3_CLIENTS", "S3Config", "parse_s3_uri"]

S3_CLIENTS = ("lean", "boto3")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Bucket and key prefix (no leading or trailing "/") of `s3://bucket/prefix`."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise NotConfigured(f"OUTPUT_URI {uri!r} is not an s3:// URI")
    if parsed.username or parsed.password:
        # never echo the URI: it holds a secret
        raise NotConfigured(
            "OUTPUT_URI must not carry credentials: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (environment or settings) instead"
        )
    if not parsed.hostname:
        raise NotConfigured(f"OUTPUT_URI {uri!r} needs a bucket name (s3://bucket/prefix)")
    prefix = "/".join(part for part in parsed.path.split("/") if part)
    return parsed.netloc, prefix


@dataclass(frozen=True)
class S3Config:
    """Where posts go and how the client behaves. Build it with `for_uri` (checks the URI) or
    `from_settings` (reads the crawl settings, as Scrapy's S3FeedStorage.from_crawler does);
    either way the limits and credentials are checked on construction."""

    uri: str
    bucket: str
    prefix: str
    access_key: str | None = None
    # never in a repr: a config may end up in a log line or a test failure
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    endpoint_url: str | None = None
    region_name: str | None = None
    use_ssl: bool | None = None
    verify: bool | str | None = None
    max_uploads: int = 8
    max_attempts: int = 5
    conflict_retries: int = 5
    conflict_backoff: float = 0.2
    timeout: float = 30.0
    client: str = "lean"  # or "boto3": what sends the per-post calls (objectcalls.py)

    def __post_init__(self) -> None:
        if self.client not in S3_CLIENTS:
            raise NotConfigured(
                f"S3_CLIENT must be one of {', '.join(S3_CLIENTS)}, not {self.client!r}"
            )
        if self.max_uploads < 1:
            raise NotConfigured(f"S3_MAX_UPLOADS must be at least 1, not {self.max_uploads}")
        if self.max_attempts < 1:
            raise NotConfigured(f"S3_MAX_ATTEMPTS must be at least 1, not {self.max_attempts}")
        # Credentials given in settings replace boto3's whole chain, so half a set would not be
        # completed from the environment: it would fail at the first request, obscurely.
        if bool(self.access_key) != bool(self.secret_key) or (
            self.session_token and not self.access_key
        ):
            raise NotConfigured(
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY together (and AWS_SESSION_TOKEN "
                "only with them), or none of them to use boto3's credential chain"
            )
        object.__setattr__(self, "conflict_retries", max(0, self.conflict_retries))
        object.__setattr__(self, "conflict_backoff", max(0.0, self.conflict_backoff))

    @classmethod
    def for_uri(cls, uri: str, **options: Any) -> S3Config:
        """The config for `s3://bucket/prefix` with `options` (the other fields)."""
        bucket, prefix = parse_s3_uri(uri)
        return cls(uri, bucket, prefix, **options)

    @classmethod
    def from_settings(cls, uri: str, settings: BaseSettings) -> S3Config:
        """Scrapy's AWS_* settings and ours (S3_*). Raises NotConfigured."""
        return cls.for_uri(
            uri,
            access_key=settings.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=settings.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=settings.get("AWS_SESSION_TOKEN") or None,
            endpoint_url=settings.get("AWS_ENDPOINT_URL") or None,
            region_name=settings.get("AWS_REGION_NAME") or None,
            use_ssl=_optional_bool(settings, "AWS_USE_SSL"),
            verify=_parse_verify(settings.get("AWS_VERIFY")),
            max_uploads=settings.getint("S3_MAX_UPLOADS", 8),
            max_attempts=settings.getint("S3_MAX_ATTEMPTS", 5),
            conflict_retries=settings.getint("S3_CONFLICT_RETRIES", 5),
            conflict_backoff=settings.getfloat("S3_CONFLICT_BACKOFF", 0.2),
            timeout=settings.getfloat("S3_TIMEOUT", 30.0),
            client=str(settings.get("S3_CLIENT") or "lean").strip().lower(),
        )


def _parse_verify(value: Any) -> bool | str | None:
    """AWS_VERIFY: unset, a boolean (also as -s text), or the path of a CA bundle."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    return text or None


def _optional_bool(settings: BaseSettings, name: str) -> bool | None:
    return None if settings.get(name) is None else settings.getbool(name)
