"""ObjectCalls and its SigV4 signer: the same signature as botocore's for the same request,
requests a signature-checking S3 server (moto with authentication on, in its own process)
accepts, botocore's retry policy and errors, and the choice between it and boto3's client."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.exceptions import SSLError as BotocoreSSLError
from hypothesis import given, settings
from hypothesis import strategies as st
from s3fixtures import CREDENTIALS, Fault, S3Bucket, free_port, moto_process

from aggregator.errors import ConfigError
from aggregator.storage.s3.client import connect_objects
from aggregator.storage.s3.config import S3Config
from aggregator.storage.s3.objectcalls import PROBE_KEY, ObjectCalls
from aggregator.storage.s3.sigv4 import SigV4Signer

REGION = "us-east-1"


def config_for(bucket: S3Bucket, endpoint_url: str, **options) -> S3Config:
    return S3Config.for_uri(
        bucket.uri(),
        access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
        endpoint_url=endpoint_url,
        **options,
    )


# --- the signer against botocore's ---------------------------------------------------------
def botocore_authorization(
    credentials: ReadOnlyCredentials,
    region: str,
    url: str,
    headers: dict[str, str],
    stamp: str,
) -> str:
    """The Authorization header botocore's S3 signer computes for a request carrying exactly
    `headers` (the date, payload hash and token headers included) at time `stamp`."""
    request = AWSRequest("PUT", url, headers=headers)
    request.context["timestamp"] = stamp
    signer = S3SigV4Auth(credentials, "s3", region)
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    names = signer.signed_headers(signer.headers_to_sign(request))
    scope = signer.credential_scope(request)
    return (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={names}, Signature={signature}"
    )


header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40
).filter(lambda value: value.strip())
metadata_names = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)
path_segments = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1
).filter(lambda segment: segment not in {".", ".."} and "/" not in segment)


@settings(max_examples=300, deadline=None)
@given(
    metadata=st.dictionaries(metadata_names, header_values, max_size=6),
    segments=st.lists(path_segments, min_size=1, max_size=4),
    secret=st.text(min_size=1, max_size=40),
    token=st.none() | st.text(alphabet="abcdefXYZ0123456789/+=", min_size=1, max_size=60),
    region=st.sampled_from(["us-east-1", "eu-west-1", "cn-north-1", "auto"]),
    moment=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
    ),
    content_type=header_values,
)
def test_the_signature_is_botocores(
    metadata, segments, secret, token, region, moment, content_type
):
    from urllib.parse import quote

    credentials = ReadOnlyCredentials("AKIDEXAMPLE", secret, token)
    path = "/bucket/" + "/".join(quote(segment, safe="-_.~") for segment in segments)
    headers = {
        "Host": "s3.example.com:9000",
        "Content-Type": content_type,
        "If-None-Match": "*",
        **{f"x-amz-meta-{name}": value for name, value in metadata.items()},
    }
    payload = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    signed = SigV4Signer(region).sign(credentials, "PUT", path, headers, payload, moment)
    theirs = botocore_authorization(
        credentials,
        region,
        f"http://s3.example.com:9000{path}",
        {name: value for name, value in signed.items() if name != "Authorization"},
        moment.strftime("%Y%m%dT%H%M%SZ"),
    )
    assert signed["Authorization"] == theirs
    assert signed["X-Amz-Date"] == moment.strftime("%Y%m%dT%H%M%SZ")
    assert signed.get("X-Amz-Security-Token") == token


def test_the_signing_key_follows_the_day_and_the_secret():
    signer = SigV4Signer(REGION)
    monday = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    tuesday = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    old, new = (ReadOnlyCredentials("AK", secret, None) for secret in ("old", "new"))
    for credentials, moment in [(old, monday), (old, tuesday), (new, tuesday), (old, monday)]:
        signed = signer.sign(credentials, "PUT", "/b/k", {"Host": "h"}, "0" * 64, moment)
        stamp = moment.strftime("%Y%m%dT%H%M%SZ")
        expected = botocore_authorization(
            credentials,
            REGION,
            "http://h/b/k",
            {name: value for name, value in signed.items() if name != "Authorization"},
            stamp,
        )
        assert signed["Authorization"] == expected


# --- against a server that checks signatures -------------------------------------------------
@pytest.fixture(scope="module")
def checking_moto():
    """moto's server with authentication on (after the first four requests, which set up a
    bucket and an IAM user with a key allowed everything in S3): every later request's
    SigV4 signature is recomputed from what arrived and compared."""
    with moto_process(env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"}) as port:
        endpoint = f"http://127.0.0.1:{port}"
        anyone = {
            "endpoint_url": endpoint,
            "region_name": REGION,
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        boto3.client("s3", **anyone).create_bucket(Bucket="signed")
        iam = boto3.client("iam", **anyone)
        iam.create_user(UserName="crawler")
        key = iam.create_access_key(UserName="crawler")["AccessKey"]
        policy = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        iam.put_user_policy(
            UserName="crawler",
            PolicyName="s3",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [policy]}),
        )
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]


def signed_calls(endpoint: str, access_key: str, secret: str, prefix: str) -> ObjectCalls:
    config = S3Config.for_uri(
        f"s3://signed/{prefix}",
        access_key=access_key,
        secret_key=secret,
        region_name=REGION,
        endpoint_url=endpoint,
        max_attempts=1,
    )
    calls = connect_objects(config)
    assert isinstance(calls, ObjectCalls)
    return calls


def test_a_signature_checking_server_takes_our_puts_and_heads(checking_moto):
    endpoint, access_key, secret = checking_moto
    prefix = "blog posts/新闻"
    calls = signed_calls(endpoint, access_key, secret, prefix)
    key = f"{prefix}/a b+c~(1)!.md"
    answer = calls.put_object(
        Bucket="signed",
        Key=key,
        Body="正文".encode(),
        ContentType="text/markdown; charset=utf-8",
        Metadata={"source-url": "http://x/%E6%96%87?a=1&b=2", "writer": "w  two  spaces"},
        IfNoneMatch="*",
    )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    head = calls.head_object(Bucket="signed", Key=key)
    assert head["Metadata"] == {
        "source-url": "http://x/%E6%96%87?a=1&b=2",
        "writer": "w  two  spaces",
    }
    assert head["ContentLength"] == len("正文".encode())
    with pytest.raises(ClientError) as again:
        calls.put_object(Bucket="signed", Key=key, Body=b"x", IfNoneMatch="*")
    assert again.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_a_wrong_secret_is_refused_by_the_server(checking_moto):
    endpoint, access_key, _ = checking_moto
    calls = ObjectCalls(
        bucket="signed",
        base_url=f"{endpoint}/signed/",
        credentials=_static(access_key, "not-the-secret"),
        region=REGION,
        max_attempts=1,
        timeout=10,
    )
    with pytest.raises(ClientError) as refused:
        calls.put_object(Bucket="signed", Key="k.md", Body=b"x")
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(ConfigError, match=r"answered a signed HEAD .* with 403"):
        calls.check("blog")


def _static(access_key: str, secret: str):
    from botocore.credentials import Credentials

    return Credentials(access_key, secret)


# --- retries, errors, connections ---------------------------------------------------------
def test_transient_answers_are_retried_by_botocores_policy(s3_bucket, fault_proxy):
    calls = connect_objects(config_for(s3_bucket, fault_proxy.endpoint_url, max_attempts=3))
    fault_proxy.inject("PUT", "/slow.md", Fault(503, "SlowDown", times=2))
    calls.put_object(Bucket=s3_bucket.name, Key="blog/slow.md", Body=b"late")
    assert fault_proxy.count("PUT", "/slow.md") == 3
    assert s3_bucket.body("blog/slow.md") == b"late"

    fault_proxy.inject("PUT", "/down.md", Fault(500, "InternalError", times=9))
    with pytest.raises(ClientError, match="InternalError") as failed:
        calls.put_object(Bucket=s3_bucket.name, Key="blog/down.md", Body=b"never")
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert fault_proxy.count("PUT", "/down.md") == 3  # S3_MAX_ATTEMPTS, the first included


def test_client_errors_are_not_retried(s3_bucket, fault_proxy):
    calls = connect_objects(config_for(s3_bucket, fault_proxy.endpoint_url, max_attempts=5))
    fault_proxy.inject("PUT", "/denied.md", Fault(403, "AccessDenied", times=9))
    with pytest.raises(ClientError, match="AccessDenied"):
        calls.put_object(Bucket=s3_bucket.name, Key="blog/denied.md", Body=b"x")
    assert fault_proxy.count("PUT", "/denied.md") == 1


def test_a_dead_endpoint_raises_botocores_connection_error_after_the_attempts(s3_bucket):
    port = free_port()
    calls = ObjectCalls(
        bucket=s3_bucket.name,
        base_url=f"http://127.0.0.1:{port}/{s3_bucket.name}/",
        credentials=_static("a", "b"),
        region=REGION,
        max_attempts=2,
        timeout=5,
    )
    with pytest.raises(EndpointConnectionError, match=f"127.0.0.1:{port}"):
        calls.put_object(Bucket=s3_bucket.name, Key="k.md", Body=b"x")


class ScriptedServer:
    """A raw HTTP/1.1 server on localhost that answers each request with the next of
    `answers` (bytes sent as they are; a tuple's parts 50 ms apart), keeps the connection
    unless told to close it, and records the connections it accepted and the requests it
    read."""

    def __init__(
        self, answers: list[bytes | tuple[bytes, ...]], close_after: set[int] = frozenset()
    ):
        self.answers = list(answers)
        self.close_after = close_after
        self.connections: list[socket.socket] = []
        self.requests: list[bytes] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.settimeout(5)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def calls(self, max_attempts: int = 1) -> ObjectCalls:
        return ObjectCalls(
            bucket="b",
            base_url=f"http://127.0.0.1:{self.port}/b/",
            credentials=_static("a", "b"),
            region=REGION,
            max_attempts=max_attempts,  # no retry hides a failed exchange
            timeout=5,
        )

    def _serve(self) -> None:
        served = 0
        while served < len(self.answers):
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            while served < len(self.answers):
                request = self._read(connection)
                if request is None:
                    break  # the client closed it
                self.requests.append(request)
                answer = self.answers[served]
                for number, part in enumerate(answer if isinstance(answer, tuple) else (answer,)):
                    if number:
                        time.sleep(0.05)
                    connection.sendall(part)
                served += 1
                if served in self.close_after:
                    connection.close()
                    break

    @staticmethod
    def _read(connection: socket.socket) -> bytes | None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = connection.recv(65536)
            if not chunk:
                return None
            request += chunk
        head, _, body = request.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += connection.recv(65536)
        return head

    def stop(self) -> None:
        self.thread.join(timeout=5)
        self.listener.close()
        for connection in self.connections:
            connection.close()


OK = b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "e"\r\n\r\n'


def test_connections_are_kept_alive_and_replaced_once_the_server_drops_them():
    """Two calls share one connection; one the server closed while idle (as servers do after
    their keep-alive timeout) is replaced, not failed on."""
    server = ScriptedServer([OK, OK, OK], close_after={2})
    calls = server.calls()
    for number in range(3):
        assert calls.put_object(Bucket="b", Key=f"{number}.md", Body=b"x")["ETag"] == '"e"'
        time.sleep(0.05)  # the server's close has arrived before the next call
    server.stop()
    assert len(server.requests) == 3
    assert len(server.connections) == 2


def test_answers_framed_by_chunks_or_by_the_connections_end_and_interim_answers():
    error = b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"
    chunked = (
        b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(error):x}\r\n".encode()
        + error
        + b"\r\n0\r\n\r\n"
    )
    until_close = b"HTTP/1.1 409 Conflict\r\nConnection: close\r\n\r\n" + error.replace(
        b"AccessDenied", b"OperationAborted"
    )
    interim_apart = (b"HTTP/1.1 100 Continue\r\n\r\n", OK)
    interim_together = b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n" + OK
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nx-amz-meta-sha256: ab\r\n\r\n"
    server = ScriptedServer(
        [chunked, until_close, interim_apart, interim_together, head, OK], close_after={2}
    )
    calls = server.calls()
    with pytest.raises(ClientError) as denied:
        calls.put_object(Bucket="b", Key="1.md", Body=b"x")
    assert denied.value.response["Error"] == {"Code": "AccessDenied", "Message": "no"}
    with pytest.raises(ClientError) as aborted:
        calls.put_object(Bucket="b", Key="2.md", Body=b"x")
    assert aborted.value.response["Error"]["Code"] == "OperationAborted"
    assert calls.put_object(Bucket="b", Key="3.md", Body=b"x")["ETag"] == '"e"'
    together = calls.put_object(Bucket="b", Key="3b.md", Body=b"x")
    assert together["ETag"] == '"e"'
    assert "x-interim" not in together["ResponseMetadata"]["HTTPHeaders"]
    # a HEAD's answer ends with its headers (its Content-Length is the object's), and the
    # connection goes on to the next call
    assert calls.head_object(Bucket="b", Key="4.md")["Metadata"] == {"sha256": "ab"}
    assert calls.put_object(Bucket="b", Key="5.md", Body=b"x")["ETag"] == '"e"'
    server.stop()
    assert len(server.connections) == 2  # a new one only after the close-framed answer


def test_an_answer_cut_short_is_a_connection_error_and_is_retried():
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly part"
    server = ScriptedServer([cut, OK], close_after={1})
    calls = server.calls(max_attempts=2)
    assert calls.put_object(Bucket="b", Key="1.md", Body=b"x")["ETag"] == '"e"'
    server.stop()
    assert len(server.requests) == 2


def test_a_header_that_would_end_a_line_is_never_sent():
    server = ScriptedServer([OK])
    calls = server.calls()
    with pytest.raises(ValueError, match="refusing to send header"):
        calls.put_object(Bucket="b", Key="1.md", Body=b"x", Metadata={"x": "a\r\nX-Injected: 1"})
    assert calls.put_object(Bucket="b", Key="2.md", Body=b"x")["ETag"] == '"e"'
    server.stop()
    assert len(server.requests) == 1 and b"X-Injected" not in server.requests[0]


def test_unknown_arguments_are_refused_not_dropped(s3_bucket, moto_server):
    calls = connect_objects(config_for(s3_bucket, moto_server.endpoint_url))
    with pytest.raises(TypeError, match="ServerSideEncryption"):
        calls.put_object(Bucket=s3_bucket.name, Key="k", Body=b"", ServerSideEncryption="x")
    with pytest.raises(ValueError, match="not 'other'"):
        calls.put_object(Bucket="other", Key="k", Body=b"")


# --- which client ---------------------------------------------------------------------------
def test_the_per_post_calls_use_boto3_when_asked_or_behind_a_proxy(
    s3_bucket, moto_server, fault_proxy, monkeypatch
):
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    endpoint = moto_server.endpoint_url
    assert isinstance(connect_objects(config_for(s3_bucket, endpoint)), ObjectCalls)
    boto = connect_objects(config_for(s3_bucket, endpoint, client="boto3"))
    assert not isinstance(boto, ObjectCalls)
    assert boto.meta.service_model.service_name == "s3"
    # behind a proxy (the fault proxy relays absolute-form requests too), boto3 does it all
    monkeypatch.setenv("HTTP_PROXY", fault_proxy.endpoint_url)
    proxied = connect_objects(config_for(s3_bucket, endpoint))
    assert not isinstance(proxied, ObjectCalls)
    proxied.put_object(Bucket=s3_bucket.name, Key="blog/p.md", Body=b"via the proxy")
    assert fault_proxy.count("PUT", "/blog/p.md") == 1
    assert s3_bucket.body("blog/p.md") == b"via the proxy"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert isinstance(connect_objects(config_for(s3_bucket, endpoint)), ObjectCalls)


def test_a_store_that_refuses_the_probe_stops_the_run_at_start(s3_bucket, fault_proxy):
    fault_proxy.inject("HEAD", f"/{PROBE_KEY}", Fault(400, "AuthorizationHeaderMalformed"))
    with pytest.raises(ConfigError, match=r"with 400 .*AWS_REGION_NAME.*S3_CLIENT=boto3"):
        connect_objects(config_for(s3_bucket, fault_proxy.endpoint_url))
    assert fault_proxy.count("HEAD", f"/blog/{PROBE_KEY}") == 1  # under the crawl's prefix


# the bucket is created through boto3 without verification, on purpose
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_unless_aws_verify_is_false():
    """moto's server over TLS with a self-signed certificate: refused as botocore refuses it
    (an SSLError naming the endpoint, after the attempts), accepted with AWS_VERIFY=false."""
    with moto_process("--ssl") as port:
        endpoint = f"https://127.0.0.1:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            verify=False,
            region_name=REGION,
            aws_access_key_id="a",
            aws_secret_access_key="b",
        ).create_bucket(Bucket="tls")

        def calls(verify: bool | None) -> ObjectCalls:
            return ObjectCalls(
                bucket="tls",
                base_url=f"{endpoint}/tls/",
                credentials=_static("a", "b"),
                region=REGION,
                max_attempts=1,
                timeout=10,
                verify=verify,
            )

        with pytest.raises(BotocoreSSLError, match=f"127.0.0.1:{port}"):
            calls(None).put_object(Bucket="tls", Key="k.md", Body=b"x")
        unverified = calls(False)
        unverified.put_object(Bucket="tls", Key="k.md", Body=b"over TLS")
        assert unverified.head_object(Bucket="tls", Key="k.md")["ContentLength"] == 8
