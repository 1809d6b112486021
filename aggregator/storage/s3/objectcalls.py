"""PutObject and HeadObject, the calls made for every post, sent over kept-alive connections,
one per thread (http1.py), instead of through boto3's client. What is S3-specific still comes
from botocore where botocore offers it: the URL its endpoint resolution gives for the bucket
(path-style or virtual-hosted, regional endpoints), the credentials boto3's chain resolved
(refreshed by botocore), its standard retry policy and its exceptions; requests are signed with
SigV4 by sigv4.py (checked against botocore's signer). The calls take the arguments and give the
answers and errors of the boto3 client's (a dict; `ClientError` carrying the HTTP status and S3
error code; botocore's connection errors), so `S3Uploader` and `put_if_absent` work with either.

Why not boto3's client for these two calls: it cost ~1.0 ms of CPU per upload in the crawl
process, these ~0.2 ms (bench/bench_s3_client.py), and on a crawl that writes flat out that
difference is a third of all the CPU an article costs. Its per-call event hooks, endpoint
ruleset evaluation, model-driven serialisation and parsing and urllib3's pool are general
machinery that two fixed calls do not need. Everything else (HeadBucket, ListObjectsV2) stays
on boto3, and `S3_CLIENT=boto3` sends these through it too.

Not supported here, so the storage keeps boto3's client for them (see `client.py`): an HTTP
proxy for the endpoint (botocore honours HTTP(S)_PROXY), and a store that refuses the start-up
probe (`check`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.exceptions import SSLError as BotocoreSSLError
from botocore.httpsession import get_cert_path
from botocore.retries.standard import (
    ExponentialBackoff,
    RetryContext,
    RetryPolicy,
    StandardRetryConditions,
)

from aggregator.errors import ConfigError
from aggregator.storage.s3.http1 import Answer, ConnectFailed, Connection, ExchangeFailed
from aggregator.storage.s3.sigv4 import SigV4Signer

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aggregator.storage.s3.config import S3Config

__all__ = ["PROBE_KEY", "ObjectCalls"]

# the key whose URL botocore resolves to learn the bucket's base URL, and which `check` HEADs
PROBE_KEY = "_aggregator-probe"
USER_AGENT = "aggregator (S3 calls: objectcalls.py)"
# an answer body we read at most: S3 error documents are a few hundred bytes
MAX_ANSWER = 64 * 1024
_CODE = re.compile(rb"<Code>([^<]{1,128})</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]{0,512})</Message>")
# PutObject's arguments we send, and the header each becomes
_PUT_HEADERS = {
    "ContentType": "Content-Type",
    "CacheControl": "Cache-Control",
    "ChecksumSHA256": "x-amz-checksum-sha256",
    "IfNoneMatch": "If-None-Match",
}


@dataclass(frozen=True)
class _HTTPAnswer:
    """What botocore's retry checks read of an HTTP answer (an AWSResponse's attributes)."""

    status_code: int
    headers: Mapping[str, str]


class ObjectCalls:
    """`put_object` and `head_object` for one bucket, callable from any number of threads (each
    keeps its own connection). Build it with `for_client`, from the boto3 client whose
    endpoint, region and credentials it shares."""

    def __init__(
        self,
        *,
        bucket: str,
        base_url: str,
        credentials: Any,
        region: str,
        max_attempts: int,
        timeout: float,
        verify: bool | str | None = None,
        operation_models: Mapping[str, Any] | None = None,
    ):
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"not an S3 base URL: {base_url!r}")
        self.bucket = bucket
        self.endpoint_url = f"{parts.scheme}://{parts.netloc}"
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._base_path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self._credentials = credentials
        self._signer = SigV4Signer(region)
        self._timeout = timeout
        self._tls = _tls_context(verify) if self._https else None
        self._operation_models = dict(operation_models or {})
        self._retries = RetryPolicy(
            retry_checker=StandardRetryConditions(max_attempts=max_attempts),
            retry_backoff=ExponentialBackoff(),
        )
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._lock = threading.Lock()

    @classmethod
    def for_client(cls, client: Any, credentials: Any, config: S3Config) -> ObjectCalls:
        """Calls to `config.bucket` at the URL, region and credentials `client` (boto3's) uses:
        its endpoint resolution names the URL of a probe key, and what precedes the key is the
        bucket's base URL, path-style or virtual-hosted alike."""
        probe = client.generate_presigned_url(
            "head_object", Params={"Bucket": config.bucket, "Key": PROBE_KEY}, ExpiresIn=60
        )
        parts = urlsplit(probe)
        if not parts.path.endswith("/" + PROBE_KEY):
            raise ConfigError(f"cannot tell the URL of bucket {config.bucket!r} from {probe}")
        model = client.meta.service_model
        return cls(
            bucket=config.bucket,
            base_url=f"{parts.scheme}://{parts.netloc}{parts.path[: -len(PROBE_KEY)]}",
            credentials=credentials,
            region=client.meta.region_name or "us-east-1",
            max_attempts=config.max_attempts,
            timeout=config.timeout,
            verify=config.verify,
            operation_models={
                name: model.operation_model(name) for name in ("PutObject", "HeadObject")
            },
        )

    # --- the calls ---------------------------------------------------------------------------
    def put_object(
        self, *, Bucket: str, Key: str, Body: bytes, Metadata: Mapping[str, str] | None = None,
        **options: str,
    ) -> dict[str, Any]:  # fmt: skip
        """PutObject with boto3's argument names; the ones besides Bucket, Key, Body and
        Metadata are those in `_PUT_HEADERS` (anything else is a TypeError, never dropped)."""
        unknown = set(options) - set(_PUT_HEADERS)
        if unknown:
            raise TypeError(f"put_object: unsupported arguments {sorted(unknown)}")
        headers = {_PUT_HEADERS[name]: value for name, value in options.items()}
        for name, value in (Metadata or {}).items():
            headers[f"x-amz-meta-{name}"] = value
        checksum = options.get("ChecksumSHA256")
        # the body's SHA-256 is signed; a caller that sends its checksum has computed it (S3
        # checks the body against both)
        payload = base64.b64decode(checksum).hex() if checksum else None
        answer = self._call("PutObject", "PUT", Bucket, Key, headers, bytes(Body), payload)
        answered = answer.headers
        return {
            "ETag": answered.get("etag"),
            "ResponseMetadata": _metadata(answer.status, answered),
        }

    def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        """HeadObject: the object's user metadata, size, type and ETag."""
        answer = self._call("HeadObject", "HEAD", Bucket, Key, {}, None)
        headers = answer.headers
        return {
            "Metadata": {
                name[len("x-amz-meta-") :]: value
                for name, value in headers.items()
                if name.startswith("x-amz-meta-")
            },
            "ContentLength": int(headers.get("content-length") or 0),
            "ContentType": headers.get("content-type"),
            "ETag": headers.get("etag"),
            "ResponseMetadata": _metadata(answer.status, headers),
        }

    def check(self, prefix: str = "", setting: str = "OUTPUT_URI") -> None:
        """One HEAD of the probe key under `prefix` (where the crawl writes, so a policy that
        grants only the prefix grants this) through these calls: found or not found means the
        store takes our requests (signature, region, addressing). Anything else stops the run
        before the crawl, saying what to set."""
        key = f"{prefix}/{PROBE_KEY}" if prefix else PROBE_KEY
        try:
            self.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            status = int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
            if status == 404:
                return
            raise ConfigError(
                f"{setting}: {self.endpoint_url} answered a signed HEAD of "
                f"{self._base_path}{key} with {status} "
                f"{exc.response['Error']['Code']}; if the bucket is in another region set "
                "AWS_REGION_NAME, or set S3_CLIENT=boto3 to send every call through boto3"
            ) from exc

    def close(self) -> None:
        """Close every thread's connection (a later call on a thread opens its again)."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()

    # --- one call, retried -------------------------------------------------------------------
    def _call(
        self,
        operation: str,
        method: str,
        bucket: str,
        key: str,
        headers: dict[str, str],
        body: bytes | None,
        payload_sha256: str | None = None,
    ) -> Answer:
        """Send until the answer is a success or botocore's standard policy stops retrying;
        raise what boto3 would (ClientError, or the connection error)."""
        if bucket != self.bucket:
            raise ValueError(f"these calls are for bucket {self.bucket!r}, not {bucket!r}")
        path = self._base_path + quote(key, safe="/-_.~")
        if payload_sha256 is None:
            payload_sha256 = hashlib.sha256(body or b"").hexdigest()
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self._send(method, path, headers, body, payload_sha256)
            except _NETWORK_ERRORS as exc:
                error: Exception = exc
                context = RetryContext(
                    attempt,
                    operation_model=self._operation_models.get(operation),
                    caught_exception=error,
                )
            else:
                if answer.status < 300:
                    return answer
                parsed = _error_response(answer)
                error = ClientError(parsed, operation)
                context = RetryContext(
                    attempt,
                    operation_model=self._operation_models.get(operation),
                    parsed_response=parsed,
                    # the headers decoded once, for the error and the retry checks alike
                    http_response=_HTTPAnswer(
                        answer.status, parsed["ResponseMetadata"]["HTTPHeaders"]
                    ),
                )
            if not self._retries.should_retry(context):
                raise error
            time.sleep(self._retries.compute_retry_delay(context))

    def _send(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        payload_sha256: str,
    ) -> Answer:
        """Sign and send once on this thread's connection; the answer (at most MAX_ANSWER
        bytes of its body), or the botocore exception boto3 raises for the same failure."""
        signed = self._signer.sign(
            self._credentials.get_frozen_credentials(),  # botocore refreshes them when due
            method,
            path,
            {**headers, "Host": self._netloc_signed()},
            payload_sha256,
        )
        signed["User-Agent"] = USER_AGENT
        try:
            return self._connection().exchange(method, path, signed, body, MAX_ANSWER)
        except ConnectFailed as exc:
            raise self._connect_error(exc.__cause__) from exc
        except ExchangeFailed as exc:
            if isinstance(exc.__cause__, TimeoutError):
                raise ReadTimeoutError(endpoint_url=self.endpoint_url, error=exc) from exc
            raise ConnectionClosedError(endpoint_url=self.endpoint_url) from exc

    def _netloc_signed(self) -> str:
        """The Host header, as HTTP clients write it (no default port), and as signed."""
        default = 443 if self._https else 80
        host = f"[{self._host}]" if ":" in self._host else self._host
        return host if self._port in (None, default) else f"{host}:{self._port}"

    # --- connections -------------------------------------------------------------------------
    def _connection(self) -> Connection:
        """This thread's connection (opened on its first exchange, kept while the server keeps
        it)."""
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            port = self._port or (443 if self._https else 80)
            connection = Connection(self._host, port, timeout=self._timeout, tls=self._tls)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _connect_error(self, exc: BaseException | None) -> Exception:
        """The botocore exception boto3 raises when it cannot connect (the retry policy
        retries these, as botocore's own)."""
        endpoint = self.endpoint_url
        if isinstance(exc, TimeoutError):
            return ConnectTimeoutError(endpoint_url=endpoint, error=exc)
        if isinstance(exc, ssl.SSLError):
            return BotocoreSSLError(endpoint_url=endpoint, error=exc)
        return EndpointConnectionError(endpoint_url=endpoint, error=exc)


# what a call can fail with on the network, after which botocore's policy may retry it
_NETWORK_ERRORS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
    BotocoreSSLError,
)


def _tls_context(verify: bool | str | None) -> ssl.SSLContext:
    """Certificates checked as botocore checks them: against AWS_VERIFY's path, else
    AWS_CA_BUNDLE's, else botocore's CA bundle; or not at all when AWS_VERIFY is false."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if verify is None or verify is True:
        verify = os.environ.get("AWS_CA_BUNDLE") or True
    return ssl.create_default_context(cafile=get_cert_path(verify))


def _error_response(answer: Answer) -> dict[str, Any]:
    """The error as botocore parses it: the S3 error document's Code and Message, or, for a
    HEAD (no body), the status as the code."""
    code = _CODE.search(answer.body)
    message = _MESSAGE.search(answer.body)
    try:
        reason = HTTPStatus(answer.status).phrase
    except ValueError:  # a status HTTPStatus does not know
        reason = ""
    return {
        "Error": {
            "Code": code.group(1).decode("utf-8", "replace") if code else str(answer.status),
            "Message": message.group(1).decode("utf-8", "replace") if message else reason,
        },
        "ResponseMetadata": _metadata(answer.status, answer.headers),
    }


def _metadata(status: int, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "HTTPStatusCode": status,
        "HTTPHeaders": headers,
        "RequestId": headers.get("x-amz-request-id", ""),
    }
