"""One HTTP/1.1 request and its answer at a time over a kept-alive socket: the transport
ObjectCalls sends S3 requests on, with httptools (llhttp, the parser Node.js uses) reading the
answer. Blocking; one connection per thread.

Why not http.client: it parses every answer's headers with the `email` package and checks each
request header with two regular expressions, which made it two thirds of ObjectCalls' CPU per
upload; writing the request and parsing the answer with llhttp costs about half of what
http.client did for the whole exchange (bench/bench_s3_client.py). What it needs of HTTP is
small: no redirects, no `Expect`, no proxies (ObjectCalls is not used behind one), answers
framed by Content-Length, chunks or the connection's end, and interim 1xx answers skipped.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

import httptools

__all__ = ["Answer", "ConnectFailed", "Connection", "ExchangeFailed"]

# a header value may not end a line early (request smuggling) or carry a NUL
_ILLEGAL_VALUE = re.compile(r"[\r\n\x00]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class ConnectFailed(Exception):
    """Could not connect (`__cause__` says why: refused, timed out, TLS)."""


class ExchangeFailed(Exception):
    """Connected, but the request or its answer did not go through whole (`__cause__`: the
    connection closed, a timeout, an answer that is not HTTP)."""


@dataclass
class Answer:
    """An answer: status, headers (names lower-cased; a repeated header keeps its last value)
    and at most `limit` bytes of body."""

    status: int = 0
    body: bytearray = field(default_factory=bytearray)
    limit: int = 64 * 1024
    complete: bool = False
    headers_done: bool = False
    keep_alive: bool = False
    truncated: bool = False
    parser: httptools.HttpResponseParser | None = field(default=None, repr=False)
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        """Decoded when asked for: a successful PUT's caller reads none of them."""
        return {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in self.raw_headers
        }

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None, "set before any data is fed"
        self.status = self.parser.get_status_code()
        if self.status < 200:
            return  # an interim answer (1xx): the real one follows on this connection
        self.headers_done = True
        # asked here: once the message is complete the parser has reset for the next one
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        room = self.limit - len(self.body)
        if len(data) > room:
            self.truncated = True
        self.body += data[:room]

    def on_message_complete(self) -> None:
        if self.status < 200:
            self.raw_headers.clear()  # the interim answer's
            return
        self.complete = True


class Connection:
    """A socket to `host:port` (TLS with `tls`), opened on first use, kept between
    exchanges while the server keeps it, replaced when the server closed it meanwhile."""

    def __init__(self, host: str, port: int, *, timeout: float, tls: ssl.SSLContext | None):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.tls = tls
        self.sock: socket.socket | None = None
        # where the host was found, kept for the next connection: servers that close after
        # every answer would otherwise cost a name lookup per request
        self._address: tuple[int, tuple[Any, ...]] | None = None

    def exchange(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None, limit: int
    ) -> Answer:
        """Send one request and read its answer (at most `limit` bytes of body). Raises
        ConnectFailed, ExchangeFailed, or ValueError for a header that may not be sent."""
        request = _request(method, target, headers, body)
        if self.sock is not None and _dropped(self.sock):
            self.close()
        if self.sock is None:
            self.sock = self._connect()
        try:
            self.sock.sendall(request)
            answer = self._read(self.sock, method, limit)
        except (OSError, httptools.HttpParserError) as exc:
            self.close()
            raise ExchangeFailed(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self.close()
            raise
        return answer

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def _connect(self) -> socket.socket:
        try:
            sock = self._open_socket()
        except OSError as exc:
            self._address = None  # looked up again next time
            raise ConnectFailed(str(exc)) from exc
        if self.tls is None:
            return sock
        try:
            return self.tls.wrap_socket(sock, server_hostname=self.host)
        except OSError as exc:  # ssl.SSLError, or the handshake timed out
            sock.close()
            raise ConnectFailed(str(exc)) from exc

    def _open_socket(self) -> socket.socket:
        """A connected socket: to the address that answered last, else to the first of the
        host's addresses that accepts (socket.create_connection's lookup)."""
        if self._address is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._address = (sock.family, sock.getpeername())
            return sock
        family, address = self._address
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def _read(self, sock: socket.socket, method: str, limit: int) -> Answer:
        """Feed the parser until the answer is complete (interim 1xx answers are skipped as
        they come). A HEAD answer ends with its headers, whatever Content-Length says."""
        answer = Answer(limit=limit)
        parser = answer.parser = httptools.HttpResponseParser(answer)
        while not answer.complete and not (method == "HEAD" and answer.headers_done):
            if answer.truncated:
                break  # the rest of an over-long body is not read: the connection goes
            data = sock.recv(65536)
            if not data:
                self._ended(answer)
                break
            parser.feed_data(data)
        if method == "HEAD" and answer.headers_done:
            answer.complete = True  # no body follows
        if not answer.complete or not answer.keep_alive:
            self.close()
        return answer

    def _ended(self, answer: Answer) -> None:
        """The server closed the connection: the end of a body framed by the connection's
        end, else an answer cut short."""
        headers = answer.headers
        framed = "content-length" in headers or "transfer-encoding" in headers
        if not answer.headers_done or framed:
            raise ExchangeFailed("the connection closed before the answer was complete")
        answer.complete = True
        self.close()


def _request(method: str, target: str, headers: dict[str, str], body: bytes | None) -> bytes:
    # one check over all names and one over all values: no separator is a token character
    names = "".join(headers)
    if "" in headers or (names and not _TOKEN.fullmatch(names)):
        bad = next(name for name in headers if not _TOKEN.fullmatch(name))
        raise ValueError(f"refusing to send header {bad!r}")
    if _ILLEGAL_VALUE.search("".join(headers.values())):
        bad = next(name for name, value in headers.items() if _ILLEGAL_VALUE.search(value))
        raise ValueError(f"refusing to send header {bad!r}: {headers[bad]!r}")
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    if body is not None or method in {"PUT", "POST"}:
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head + body if body else head


def _dropped(sock: socket.socket) -> bool:
    """An idle kept-alive socket that is readable has been closed by the server (or holds
    bytes nobody asked for): not fit for the next request."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
