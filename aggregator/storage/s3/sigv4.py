"""AWS Signature Version 4 for the S3 requests ObjectCalls sends (no query string, payload
hash signed), written out rather than run through botocore's `S3SigV4Auth`.

Why: botocore's signer works on an `AWSRequest` whose headers are an `email.message.Message`,
and building and canonicalising those cost ~0.17 ms of CPU per upload (half of all that
ObjectCalls costs, bench/bench_s3_client.py), where these few string joins and one HMAC with a
signing key cached per day cost ~0.02 ms. The algorithm is AWS's published one; the tests
check this signer against botocore's own (the same signature for the same request, over
generated headers, keys and credentials) and against a server that verifies signatures (moto
with authentication on). The credentials still come from botocore (boto3's chain, refreshed
by botocore when they expire).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from botocore.credentials import ReadOnlyCredentials

__all__ = ["ALGORITHM", "SigV4Signer"]

ALGORITHM = "AWS4-HMAC-SHA256"
# never signed: botocore leaves these out too (proxies and clients may change them)
UNSIGNED = frozenset({"user-agent", "expect", "connection", "keep-alive", "transfer-encoding"})


class SigV4Signer:
    """Signs requests for one region and service. Thread-safe: the only state is the signing
    key of the last day and secret used, replaced whole."""

    def __init__(self, region: str, service: str = "s3"):
        self.region = region
        self.service = service
        self._key: tuple[str, str, bytes] = ("", "", b"")  # (secret, day, signing key)

    def sign(
        self,
        credentials: ReadOnlyCredentials,
        method: str,
        path: str,
        headers: Mapping[str, str],
        payload_sha256: str,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """The headers to send: `headers` (names as given; Host among them) plus X-Amz-Date,
        X-Amz-Content-SHA256, X-Amz-Security-Token (temporary credentials) and Authorization.
        `path` is the request path exactly as sent (already URI-encoded: S3 signs it as is).
        `credentials` is botocore's frozen credentials (access_key, secret_key, token)."""
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        stamp = moment.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        signed = dict(headers)
        signed["X-Amz-Date"] = stamp
        signed["X-Amz-Content-SHA256"] = payload_sha256
        if credentials.token:
            signed["X-Amz-Security-Token"] = credentials.token
        canonical: dict[str, str] = {}
        for name, value in signed.items():
            lowered = name.lower()
            if lowered not in UNSIGNED:
                canonical[lowered] = " ".join(value.split())
        names = sorted(canonical)
        signed_names = ";".join(names)
        request = "\n".join(
            (
                method,
                path,
                "",  # no query string
                *(f"{name}:{canonical[name]}" for name in names),
                "",
                signed_names,
                payload_sha256,
            )
        )
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join(
            (ALGORITHM, stamp, scope, hashlib.sha256(request.encode("utf-8")).hexdigest())
        )
        key = self._signing_key(credentials.secret_key, day)
        signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        signed["Authorization"] = (
            f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return signed

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached_secret, cached_day, key = self._key
        if cached_secret == secret and cached_day == day:
            return key
        key = _hmac(f"AWS4{secret}".encode(), day)
        for part in (self.region, self.service, "aws4_request"):
            key = _hmac(key, part)
        self._key = (secret, day, key)
        return key


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()
