"""A local HTTP server that replays recorded source responses.

It serves fixture directories in the shape of the real APIs (趣头条's listing endpoint, article
pages, feeds), replacing `__BASE__` in text bodies with its own address. The demo command and
the tests both use it, so the demo shows exactly what the tests pin. Tests can make any path
fail for a while, replace a response, and read the request log.

Run it by hand: `python -m aggregator.devtools.replay DIR [DIR ...] [--port N]`.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

__all__ = ["ReplayServer", "Reply"]

logger = logging.getLogger(__name__)

LISTING_PATH = "/content/outList"
EMPTY_LISTING = {"code": 0, "message": "success", "data": {"data": [], "has_more": False}}
CONTENT_TYPES = {
    ".json": "application/json; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".rss": "application/rss+xml; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".rdf": "application/rdf+xml; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
TEXT_SUFFIXES = set(CONTENT_TYPES)
# A fixed Last-Modified keeps conditional requests reproducible across runs and machines.
FIXED_LAST_MODIFIED = email.utils.formatdate(1_700_000_000, usegmt=True)


@dataclass
class Reply:
    """A canned response that overrides a path (with or without its query) for `times` hits."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    times: int | None = None  # None: for good
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Content-Encoding


class ReplayServer:
    """Serve `roots` (searched in order) on 127.0.0.1 at a free port, in a background thread.

    `latency` (seconds) delays every answer, as a remote API's round trip would: benchmarks use
    it to compare crawls under the conditions they meet in production, not only flat out."""

    def __init__(
        self,
        roots: Path | str | Iterable[Path | str],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
    ):
        if isinstance(roots, (str, Path)):
            roots = [roots]
        self.roots = [Path(r).resolve() for r in roots]
        self._overrides: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self.requests: list[str] = []
        self.latency = latency
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ReplayServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="replay", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test controls -----------------------------------------------------------------------
    def set_reply(self, target: str, reply: Reply) -> None:
        """Answer `target` (a path, or a path with its query) with `reply`."""
        with self._lock:
            self._overrides[target] = reply

    def fail(self, target: str, status: int = 500, times: int | None = None) -> None:
        self.set_reply(target, Reply(status=status, body=b"injected failure", times=times))

    def reset(self) -> None:
        """Forget overrides and the request log."""
        with self._lock:
            self._overrides.clear()
            self.requests.clear()

    def hits(self, prefix: str) -> int:
        """How many requests so far had a path (with query) starting with `prefix`."""
        with self._lock:
            return sum(1 for r in self.requests if r.startswith(prefix))

    # --- serving -----------------------------------------------------------------------------
    def _override(self, target: str, path: str) -> Reply | None:
        with self._lock:
            for name in (target, path):
                reply = self._overrides.get(name)
                if reply is None:
                    continue
                if reply.times is not None:
                    reply.times -= 1
                    if reply.times <= 0:
                        del self._overrides[name]
                return reply
        return None

    def _find(self, relative: str) -> Path | None:
        for root in self.roots:
            candidate = (root / relative).resolve()
            if candidate.is_relative_to(root) and candidate.is_file():
                return candidate
        return None

    def resolve(self, target: str) -> tuple[int, bytes, str, dict[str, str]]:
        """Status, body, content type and other headers for a request target, from overrides
        or the roots."""
        parts = urlsplit(target)
        with self._lock:
            self.requests.append(target)
        reply = self._override(target, parts.path)
        if reply is not None:
            if reply.delay:
                time.sleep(reply.delay)
            return reply.status, reply.body, reply.content_type, reply.headers
        if parts.path == LISTING_PATH:
            query = parse_qs(parts.query)
            cid = query.get("cid", ["1"])[0]
            page = query.get("page", ["1"])[0]
            found = self._find(f"outList-cid-{cid}-page-{page}.json")
            if found is None:
                body = json.dumps(EMPTY_LISTING).encode()
                return 200, body, CONTENT_TYPES[".json"], {}
        else:
            found = self._find(parts.path.lstrip("/")) if parts.path != "/" else None
        if found is None:
            return 404, b"not found", "text/plain; charset=utf-8", {}
        body = found.read_bytes()
        if found.suffix in TEXT_SUFFIXES:
            body = body.replace(b"__BASE__", self.base_url.encode())
        return 200, body, CONTENT_TYPES.get(found.suffix, "application/octet-stream"), {}


def _handler_for(server: ReplayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; with Nagle's algorithm on, the body
        # waits for the client's delayed ACK (~40 ms) and every request looks slow.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if server.latency:
                time.sleep(server.latency)
            status, body, content_type, headers = server.resolve(self.path)
            etag = '"' + hashlib.sha1(body).hexdigest() + '"'
            if status == 200 and self._not_modified(etag):
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            if status == 200:
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", FIXED_LAST_MODIFIED)
            self.end_headers()
            self.wfile.write(body)

        def _not_modified(self, etag: str) -> bool:
            if_none_match = self.headers.get("If-None-Match")
            if if_none_match is not None:
                return etag in [t.strip() for t in if_none_match.split(",")]
            return self.headers.get("If-Modified-Since") == FIXED_LAST_MODIFIED

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("replay: %s", format % args)

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    server = ReplayServer(args.roots, port=args.port, latency=args.latency).start()
    print(f"listening on {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
