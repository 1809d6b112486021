"""Redis for the tests: the shared server (AGGREGATOR_TEST_REDIS, else redis://127.0.0.1:6379/0
when it answers), each test under its own key prefix and deleting only its own keys; or a
private `redis-server` (for tests that stop and restart Redis, or when no shared one runs).

Never FLUSHALL/FLUSHDB: the shared server is shared with other people's tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import redis

SHARED_DEFAULT = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


class PrivateRedis:
    """A redis-server of our own on a free port, AOF on, in `directory`; stop() and start()
    keep its data (appendonly), as a restarted production Redis would."""

    def __init__(self, directory: Path, port: int | None = None, password: str | None = None):
        self.directory = directory
        self.port = port or free_port()
        self.password = password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not answers(self.url):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def shared_redis_url(tmp_root: Path) -> tuple[str, PrivateRedis | None]:
    """The URL tests use, and the private server started for them when no shared one runs."""
    url = os.environ.get("AGGREGATOR_TEST_REDIS") or SHARED_DEFAULT
    if answers(url):
        return url, None
    server = PrivateRedis(tmp_root / "redis").start()
    return server.url, server


def new_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def delete_prefix(url: str, prefix: str) -> None:
    """Delete the keys under `prefix` (and only those)."""
    client = redis.Redis.from_url(url)
    try:
        batch = [key for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(batch), 500):
            client.delete(*batch[start : start + 500])
    finally:
        client.close()
