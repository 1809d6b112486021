"""Real-HTTP S3 for the tests: moto's standalone server on a free localhost port (boto3 and the
crawls reach it through `endpoint_url`, nothing is patched), a bucket helper, and a proxy in
front of it that injects the answers moto never gives: a 409 ConditionalRequestConflict, a PUT
that lands but whose answer is lost, a slow PUT; it also times every request it relays.

moto keeps its state in the process, not in the server: a server stopped and started again on
the same port still has every bucket and object, like a real store after an outage.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import boto3
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import MotoRequestHandler

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key-9f8e7d",
    "AWS_REGION_NAME": "us-east-1",
}


@contextlib.contextmanager
def moto_process(*options: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """moto's standalone server in a process of its own, on a free localhost port (yielded),
    for a server the tests' own cannot be: one whose settings (`env`, read at import) or
    options (`--ssl`) differ."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), *options],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "moto never came up"
                time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _TrackingHandler(MotoRequestHandler):
    """Remembers its connection, so stopping the server can cut keep-alive connections too."""

    def setup(self) -> None:
        super().setup()
        self.server.open_connections.add(self.connection)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.open_connections.discard(self.connection)  # type: ignore[attr-defined]


class MotoServer(ThreadedMotoServer):
    """ThreadedMotoServer on 127.0.0.1 whose stop() behaves like a crashed server: the
    listening socket is closed and open connections are cut, so clients see errors at once
    (ThreadedMotoServer.stop only ends the accept loop)."""

    def __init__(self, port: int | None = None):
        super().__init__(ip_address="127.0.0.1", port=port or free_port(), verbose=False)

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> MotoServer:
        super().start()
        assert self._server is not None
        self._server.open_connections = set()  # type: ignore[attr-defined]
        self._server.RequestHandlerClass = _TrackingHandler
        return self

    def stop(self) -> None:
        super().stop()
        assert self._server is not None
        self._server.server_close()
        for connection in list(self._server.open_connections):  # type: ignore[attr-defined]
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


def s3_client(endpoint_url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION_NAME"],
    )


@dataclass
class S3Bucket:
    """A fresh bucket and what the tests read back from it."""

    endpoint_url: str
    name: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        self.client = s3_client(self.endpoint_url)

    def create(self) -> S3Bucket:
        self.client.create_bucket(Bucket=self.name)
        return self

    def uri(self, prefix: str = "blog") -> str:
        return f"s3://{self.name}/{prefix}"

    def settings(self, prefix: str = "blog", endpoint_url: str | None = None) -> dict[str, str]:
        """Crawl settings that send posts here."""
        return {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": endpoint_url or self.endpoint_url,
            "OUTPUT_URI": self.uri(prefix),
        }

    def object_keys(self, prefix: str = "") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(found)

    def posts(self, prefix: str = "blog") -> dict[str, bytes]:
        """Post bodies by file name, as the file writer names them."""
        return {
            key.rsplit("/", 1)[1]: self.body(key)
            for key in self.object_keys(f"{prefix}/")
            if key.endswith(".md")
        }

    def body(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def head(self, key: str) -> dict[str, Any]:
        return self.client.head_object(Bucket=self.name, Key=key)

    def manifests(self, prefix: str = "blog") -> dict[str, list[dict[str, Any]]]:
        """Manifest lines by manifest key, oldest manifest first."""
        return {
            key: [json.loads(line) for line in self.body(key).decode("utf-8").splitlines()]
            for key in self.object_keys(f"{prefix}/_manifests/")
        }

    def wait_for(self, count: int, prefix: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.object_keys(prefix)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} objects under {prefix} in {timeout} s")
            time.sleep(0.05)


@dataclass
class Fault:
    """Answer a request with `status`/`code` for `times` hits; with `forward`, pass the request
    on to S3 first (it takes effect there) and then answer with the fault."""

    status: int
    code: str
    forward: bool = False
    times: int = 1


@dataclass
class Relayed:
    """One request the proxy answered: when it arrived and when its answer was ready (just
    before it was sent)."""

    method: str
    path: str
    arrived: float
    answered: float


class FaultProxy:
    """An HTTP proxy in front of the S3 server (path-style requests) that injects faults on
    requests whose path ends with a given suffix, can slow every PUT (`put_delay`) or some
    (`delay`), and records how many requests it had in hand at once (`peak_in_flight`) and when
    each was answered (`relayed`)."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.put_delay = 0.0
        self.requests: list[tuple[str, str]] = []
        self.relayed: list[Relayed] = []
        self._faults: dict[tuple[str, str], Fault] = {}
        self._delays: dict[tuple[str, str], float] = {}
        self._in_flight: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def inject(self, method: str, suffix: str, fault: Fault) -> None:
        with self._lock:
            self._faults[(method, suffix)] = fault

    def delay(self, method: str, suffix: str, seconds: float) -> None:
        """Answer requests whose path ends with `suffix` `seconds` late (delays add up)."""
        with self._lock:
            self._delays[(method, suffix)] = seconds

    def delay_for(self, method: str, path: str) -> float:
        with self._lock:
            extra = sum(
                seconds
                for (delay_method, suffix), seconds in self._delays.items()
                if delay_method == method and path.endswith(suffix)
            )
        return extra + (self.put_delay if method == "PUT" else 0.0)

    def peak_in_flight(self, method: str) -> int:
        """The most `method` requests the proxy had in hand at once."""
        with self._lock:
            return self._peak.get(method, 0)

    def arrived(self, method: str, path: str) -> Relayed:
        with self._lock:
            self._in_flight[method] = self._in_flight.get(method, 0) + 1
            self._peak[method] = max(self._peak.get(method, 0), self._in_flight[method])
        return Relayed(method, path, time.monotonic(), 0.0)

    def answered(self, relayed: Relayed) -> None:
        with self._lock:
            self._in_flight[relayed.method] -= 1
            relayed.answered = time.monotonic()
            self.relayed.append(relayed)

    def count(self, method: str, suffix: str = "") -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and p.endswith(suffix))

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            for (fault_method, suffix), fault in list(self._faults.items()):
                if fault_method == method and path.endswith(suffix) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def forward(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            connection.request(method, target, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def _proxy_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = urlsplit(self.path).path
            relayed = proxy.arrived(self.command, path)
            try:
                status, upstream_headers, answer = self._result(path, body)
            finally:
                # before the client can see the answer (and send its next request)
                proxy.answered(relayed)
            self.send_response(status)
            for name, value in upstream_headers:
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            if self.command == "HEAD":
                size = dict((k.lower(), v) for k, v in upstream_headers).get("content-length")
                self.send_header("Content-Length", size or "0")
                self.end_headers()
                return
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def _result(self, path: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            delay = proxy.delay_for(self.command, path)
            if delay:
                time.sleep(delay)
            fault = proxy.take_fault(self.command, path)
            if fault is not None and not fault.forward:
                return _error(fault)
            result = proxy.forward(self.command, self.path, headers, body)
            return _error(fault) if fault is not None else result

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def _error(fault: Fault) -> tuple[int, list[tuple[str, str]], bytes]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{fault.code}</Code><Message>injected by the test proxy</Message>"
        "</Error>"
    ).encode()
    return fault.status, [("Content-Type", "application/xml")], body
