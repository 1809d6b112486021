"""The boto3 S3 client, built from an S3Config and checked against the bucket (HeadBucket), so a
missing bucket, bad credentials or an unreachable endpoint stop the run, with one clear line,
before anything is crawled; and the client the per-post calls go through (`connect_objects`).
Blocking: the storages call these in a worker thread."""

from __future__ import annotations

import logging
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from botocore.handlers import add_expect_header

from aggregator.errors import ConfigError
from aggregator.ops.logredact import redact_secrets
from aggregator.storage.s3.objectcalls import ObjectCalls

if TYPE_CHECKING:
    from aggregator.storage.s3.config import S3Config

__all__ = [
    "SDK_LOGGERS",
    "build_client",
    "check_bucket",
    "connect",
    "connect_objects",
    "error_of",
    "quiet_sdk_debug_logs",
]

SDK_LOGGERS = ("botocore", "boto3", "urllib3")

logger = logging.getLogger(__name__)


def connect(config: S3Config, setting: str = "OUTPUT_URI") -> Any:
    """A client for `config` whose bucket answered HeadBucket. Raises ConfigError, naming
    `setting`, the one that points at the bucket."""
    client = build_client(config)
    check_bucket(client, config, setting)
    return client


def connect_objects(config: S3Config, setting: str = "OUTPUT_URI") -> Any:
    """`connect`, then what the per-post calls (PutObject, HeadObject) go through: ObjectCalls
    sharing the client's endpoint, region and credentials, checked with one signed HEAD; or
    the boto3 client itself with `S3_CLIENT=boto3` or when an HTTP proxy applies to the
    endpoint (ObjectCalls speaks to the endpoint directly). Raises ConfigError."""
    session = _session(config)
    client = build_client(config, session)
    check_bucket(client, config, setting)
    endpoint = client.meta.endpoint_url
    if config.client == "boto3":
        return client
    if _proxied(endpoint):
        logger.info("S3 calls go through boto3: a proxy is set for %s", endpoint)
        return client
    calls = ObjectCalls.for_client(client, session.get_credentials(), config)
    calls.check(config.prefix, setting)
    return calls


def _proxied(endpoint: str) -> bool:
    """Whether botocore would send requests to `endpoint` through a proxy (HTTP_PROXY,
    HTTPS_PROXY, NO_PROXY in the environment)."""
    parts = urlsplit(endpoint)
    proxies = urllib.request.getproxies()
    if parts.scheme not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.netloc)


def _session(config: S3Config) -> boto3.session.Session:
    """A session with the configured credentials (or boto3's chain); the secret and token it
    resolves are redacted from the logs."""
    session = boto3.session.Session(
        aws_access_key_id=config.access_key,
        aws_secret_access_key=config.secret_key,
        aws_session_token=config.session_token,
        region_name=config.region_name,
    )
    credentials = session.get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        redact_secrets(frozen.secret_key, frozen.token)
    return session


def build_client(config: S3Config, session: boto3.session.Session | None = None) -> Any:
    """The client (of `session`, or a new one). No per-call parameter validation and no
    `Expect: 100-continue` (bench/bench_s3_client.py)."""
    if session is None:
        session = _session(config)
    botocore_config = Config(
        max_pool_connections=config.max_uploads + 1,  # + the manifest
        retries={"mode": "standard", "total_max_attempts": config.max_attempts},
        connect_timeout=config.timeout,
        read_timeout=config.timeout,
        # our few call sites pass well-formed parameters; checking them against the model on
        # every call cost CPU per upload for nothing
        parameter_validation=False,
    )
    options: dict[str, Any] = {}
    if config.use_ssl is not None:
        options["use_ssl"] = config.use_ssl
    if config.verify is not None:
        options["verify"] = config.verify
    client = session.client(
        "s3", endpoint_url=config.endpoint_url, config=botocore_config, **options
    )
    # botocore sends every PutObject with "Expect: 100-continue", then waits for the interim
    # answer before sending the body: an extra round trip and its CPU per upload, worth it for
    # large bodies, not for posts of a few kilobytes.
    client.meta.events.unregister("before-call.s3", add_expect_header)
    return client


def check_bucket(client: Any, config: S3Config, setting: str = "OUTPUT_URI") -> None:
    """HeadBucket, with what went wrong said in terms of the settings."""
    where = f"{setting} {config.uri}"
    bucket = config.bucket
    endpoint = client.meta.endpoint_url
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError as exc:
        raise ConfigError(
            f"{where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (environment or settings) or configure a boto3 profile"
        ) from exc
    except ClientError as exc:
        status, code = error_of(exc)
        if status == 404 or code in {"404", "NoSuchBucket"}:
            reason = f"bucket {bucket!r} does not exist at {endpoint}"
        elif status == 403:
            reason = (
                f"access to bucket {bucket!r} at {endpoint} is denied; check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the boto3 profile) and "
                "the bucket policy"
            )
        elif status == 301:
            reason = f"bucket {bucket!r} is in another region; set AWS_REGION_NAME"
        else:
            reason = f"HeadBucket {bucket!r} at {endpoint} failed: {code or status}"
        raise ConfigError(f"{where}: {reason}") from exc
    except BotoCoreError as exc:
        raise ConfigError(
            f"{where}: cannot use bucket {bucket!r} at {endpoint} (check AWS_ENDPOINT_URL): {exc}"
        ) from exc


def error_of(exc: Any) -> tuple[int, str]:
    """HTTP status and S3 error code of a botocore ClientError (0 and "" when absent)."""
    response = getattr(exc, "response", None) or {}
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(response.get("Error", {}).get("Code") or "")
    return status, code


def quiet_sdk_debug_logs(log_level: int | str) -> None:
    """Raise the SDK's loggers to LOG_LEVEL, unless configured otherwise. Scrapy sets the root
    logger to NOTSET and drops records by level in its handler, so botocore's debug records
    (dozens per request) would each be built and then dropped: measured, about a quarter of
    the CPU an upload costs the crawl's interpreter. Output is the same."""
    level = logging.getLevelName(log_level) if isinstance(log_level, str) else log_level
    if not isinstance(level, int) or level <= logging.DEBUG:
        return
    for name in SDK_LOGGERS:
        target = logging.getLogger(name)
        if target.level == logging.NOTSET:
            target.setLevel(level)
