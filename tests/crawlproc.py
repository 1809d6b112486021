"""Crawl processes for the tests: `python -m scrapy ...` as cron starts it, without paying for
the interpreter's start-up in every one.

Starting a crawl costs about a second of CPU, nearly all of it importing Scrapy, Twisted and the
project; the suite runs over a hundred crawls, so on the 2-core machine that start-up was the
larger part of its time. `run()` takes the command `python -m scrapy ARGS` and, instead of a
new interpreter, forks a launcher process that has imported those modules once. The child is a
process of its own like the one it replaces: it takes the command's arguments, environment,
working directory and sys.path, the standard streams it is given (stdin /dev/null, stdout and
stderr captured), runs Scrapy's `__main__` as `-m` does, and ends through the interpreter's
normal shutdown with the exit status the command would have had.

A fork cannot give the child a fresh copy of what a module did when it was imported, so the
launcher does not preload what depends on the crawl: the project's settings module (it reads
environment variables), anything that starts a thread (numpy's BLAS pool; forking a process
with threads is unsafe), the Twisted reactor (each crawl installs its own). Warnings raised while
preloading are raised again in each child, where a new interpreter would have shown them.
Commands whose interpreter would start differently (other PYTHON* variables than PYTHONPATH and
PYTHONUNBUFFERED) and AGGREGATOR_TEST_FRESH_CRAWLS=1 get a new interpreter as before.

Run as a script, this module is the launcher: `python crawlproc.py SOCKET`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import json
import locale
import os
import pkgutil
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRESH_ENV = "AGGREGATOR_TEST_FRESH_CRAWLS"
# read by the interpreter as it starts: the launcher's own must match the command's
STARTUP_VARIABLES_HANDLED = {"PYTHONPATH", "PYTHONUNBUFFERED"}
# packages whose modules a crawl imports anyway (the command table imports every command)
PRELOAD_PACKAGES = (
    "scrapy.commands",
    "aggregator.commands",
    "aggregator.spiders",
    "aggregator.pipelines",
)
# the default components Scrapy loads for a crawl, by setting
PRELOAD_COMPONENTS = (
    "DOWNLOAD_HANDLERS_BASE",
    "DOWNLOADER_MIDDLEWARES_BASE",
    "SPIDER_MIDDLEWARES_BASE",
    "EXTENSIONS_BASE",
    "ITEM_PIPELINES_BASE",
)
NOT_PRELOADED = ("numpy",)  # starts threads when imported
MUST_NOT_BE_LOADED = ("aggregator.settings", "twisted.internet.reactor")
MESSAGE_LIMIT = 1 << 20


# --- the client: used by the tests' crawl helpers ----------------------------------------------
def run(
    cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, capture_output=True, text=True)`
    for `cmd = [sys.executable, "-m", "scrapy", ...]`, through the launcher when it can."""
    if _needs_new_interpreter(cmd, env):
        return subprocess.run(
            cmd, cwd=cwd, env=env, timeout=timeout, capture_output=True, text=True
        )
    return _launcher().run(cmd, cwd=cwd, env=env, timeout=timeout)


def stop() -> None:
    """Stop this process's launcher, if it started one (the tests' session end)."""
    global _LAUNCHER
    with _LOCK:
        if _LAUNCHER is not None:
            _LAUNCHER.stop()
            _LAUNCHER = None


_LAUNCHER: Launcher | None = None
_LOCK = threading.Lock()


def _launcher() -> Launcher:
    global _LAUNCHER
    with _LOCK:
        if _LAUNCHER is None:
            _LAUNCHER = Launcher()
        return _LAUNCHER


def _startup_variables(env: dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in env.items()
        if k.startswith("PYTHON") and k not in STARTUP_VARIABLES_HANDLED
    }


def _needs_new_interpreter(cmd: list[str], env: dict[str, str]) -> bool:
    return (
        os.environ.get(FRESH_ENV, "") not in ("", "0")
        or cmd[:3] != [sys.executable, "-m", "scrapy"]
        or not hasattr(os, "pidfd_open")
        or _startup_variables(env) != _startup_variables(dict(os.environ))
    )


class Launcher:
    """One launcher process per test process, started on the first crawl."""

    def __init__(self):
        self._directory = tempfile.TemporaryDirectory(prefix="crawlproc-")
        self.address = os.path.join(self._directory.name, "socket")
        self.process = subprocess.Popen(
            [sys.executable, __file__, self.address],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.PIPE,  # closed: the launcher ends
            stdout=subprocess.PIPE,  # "ready" once it listens
        )
        ready = self.process.stdout.readline()
        if ready != b"ready\n":
            self.process.kill()
            raise RuntimeError(f"the crawl launcher did not start (it said {ready!r})")

    def run(
        self, cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        request = {"args": cmd[3:], "cwd": str(cwd), "env": env}
        with (
            open(os.devnull, "rb") as stdin,
            tempfile.TemporaryFile() as stdout,
            tempfile.TemporaryFile() as stderr,
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn,
        ):
            conn.connect(self.address)
            data = json.dumps(request).encode() + b"\n"
            socket.send_fds(conn, [data], [stdin.fileno(), stdout.fileno(), stderr.fileno()])
            replies = _Replies(conn)
            pid = replies.next()["pid"]
            conn.settimeout(timeout)
            try:
                returncode = replies.next()["returncode"]
                timed_out = False
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                conn.settimeout(None)
                returncode = replies.next()["returncode"]
                timed_out = True
            out, err = _text(stdout), _text(stderr)
        if timed_out:
            raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err)
        return subprocess.CompletedProcess(cmd, returncode, out, err)

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)
        self.process.stdout.close()
        self._directory.cleanup()


def _text(file) -> str:
    """What subprocess.run(text=True) makes of the bytes: locale encoding, universal newlines."""
    file.seek(0)
    text = file.read().decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _Replies:
    """The launcher's answers on one connection, a JSON object a line; a read that times out
    leaves what was received for the next one."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.buffer = b""

    def next(self) -> dict:
        while b"\n" not in self.buffer:
            chunk = self.conn.recv(4096)
            if not chunk:
                raise ConnectionError("the crawl launcher went away")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


# --- the launcher ------------------------------------------------------------------------------
@dataclass
class Request:
    args: list[str]
    cwd: str
    env: dict[str, str]
    fds: list[int]  # stdin, stdout, stderr


class _Refuse(importlib.abc.MetaPathFinder):
    """Keeps the modules in NOT_PRELOADED (and what imports them) out of the launcher."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in NOT_PRELOADED:
            raise ImportError(f"{name} is not preloaded")
        return None


def preload() -> list[warnings.WarningMessage]:
    """Import what every crawl imports; returns the warnings the imports raised."""
    from scrapy.settings import default_settings
    from scrapy.utils.misc import load_object

    refuse = _Refuse()
    sys.meta_path.insert(0, refuse)
    try:
        with warnings.catch_warnings(record=True) as raised:
            warnings.simplefilter("always")
            importlib.import_module("scrapy.cmdline")
            for package in PRELOAD_PACKAGES:
                for name in _modules(package):
                    # ImportError: it needs a module that is not preloaded; the child imports it
                    with contextlib.suppress(ImportError):
                        importlib.import_module(name)
            for setting in PRELOAD_COMPONENTS:
                for key, value in getattr(default_settings, setting).items():
                    path = value if isinstance(value, str) else key
                    if path:
                        load_object(path)
    finally:
        sys.meta_path.remove(refuse)
    loaded = [name for name in MUST_NOT_BE_LOADED if name in sys.modules]
    threads = os.listdir("/proc/self/task")
    if loaded or len(threads) != 1 or threading.active_count() != 1:
        raise RuntimeError(f"cannot fork crawls: loaded {loaded}, {len(threads)} threads")
    return raised


def _modules(package: str) -> list[str]:
    module = importlib.import_module(package)
    return [info.name for info in pkgutil.iter_modules(module.__path__, package + ".")]


def serve(address: str) -> Request | None:
    """Fork a child per request; returns the request in the child, None when stdin closes."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(16)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "stop")
    running: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, connection)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "stop":
                if os.read(sys.stdin.fileno(), 4096):
                    continue
                for pid, _conn in running.values():
                    os.kill(pid, signal.SIGKILL)
                return None
            if key.data == "accept":
                conn, _ = listener.accept()
                request = _receive(conn)
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    listener.close()
                    for pidfd, (_pid, other) in running.items():
                        os.close(pidfd)
                        other.close()
                    conn.close()
                    return request
                for fd in request.fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, conn)
                selector.register(pidfd, selectors.EVENT_READ, "exit")
                _reply(conn, {"pid": pid})
            else:  # a child ended
                pidfd = key.fd
                pid, conn = running.pop(pidfd)
                selector.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                _reply(conn, {"returncode": os.waitstatus_to_exitcode(status)})
                conn.close()


def _receive(conn: socket.socket) -> Request:
    data, fds, _flags, _address = socket.recv_fds(conn, MESSAGE_LIMIT, 3)
    while not data.endswith(b"\n"):
        chunk = conn.recv(MESSAGE_LIMIT)
        if not chunk:
            break
        data += chunk
    return Request(**json.loads(data), fds=fds)


def _reply(conn: socket.socket, message: dict) -> None:
    # OSError: the test gave up on this crawl (the child still runs to its end)
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message).encode() + b"\n")


def become(request: Request, base_path: list[str], raised: list) -> None:
    """Turn the forked child into `python -m scrapy ARGS` started in request.cwd."""
    for fd, target in zip(request.fds, (0, 1, 2), strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    extra = [p for p in request.env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [os.getcwd(), *extra, *base_path]
    importlib.invalidate_caches()
    sys.argv = ["-m", *request.args]
    for w in raised:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _base_path() -> list[str]:
    """sys.path without the script's directory and the launcher's own PYTHONPATH."""
    own = {p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    return [p for p in sys.path[1:] if p not in own]


if __name__ == "__main__":
    BASE_PATH = _base_path()
    sys.path[0] = str(ROOT)  # import the project as `python -m` in ROOT would
    RAISED = preload()
    REQUEST = serve(sys.argv[1])
    if REQUEST is not None:
        become(REQUEST, BASE_PATH, RAISED)
        runpy.run_module("scrapy", run_name="__main__", alter_sys=True)
