"""Crawl processes for the tests: `python -m scrapy ...` as cron starts it, without paying for
the interpreter's start-up in every one.

Starting a crawl costs about a second of CPU, nearly all of it importing Scrapy, Twisted and
their kin; the suite runs well over a hundred crawls, so on the 2-core machine that start-up was
the larger part of its time. `run()` and `popen()` take the command `python -m scrapy ARGS` and,
instead of a new interpreter, fork a launcher process that has imported those modules once. The
child is a process of its own like the one it replaces: it takes the command's arguments,
environment, working directory and sys.path (PYTHONPATH), the standard streams it is given
(stdin /dev/null), runs Scrapy's `__main__` as `-m` does, and ends through the interpreter's
normal shutdown with the exit status the command would have had. Its stdout and stderr are
unbuffered (PYTHONUNBUFFERED, which the tests' crawls set anyway).

A fork cannot give the child a fresh copy of what a module did when it was imported, so only
third-party modules are preloaded (none of them keeps per-process state made at import: checked
for uuid, pid, time and random values). The project's modules are imported once to find the
third-party modules they use, then forgotten: every child imports them afresh, so per-process
values (aggregator.cluster.queue.INCARNATION, a restarted worker's lease ids) and the settings
module's reading of the environment happen in the crawl's own process. Not preloaded either:
anything that starts a thread (numpy's BLAS pool; forking a process with threads is unsafe) and
the Twisted reactor (each crawl installs its own). Warnings raised while preloading are raised
again in each child, where a new interpreter would have shown them. Commands whose interpreter
would start differently (other PYTHON* variables than PYTHONPATH and PYTHONUNBUFFERED) and
AGGREGATOR_TEST_FRESH_CRAWLS=1 get a new interpreter as before.

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
from subprocess import DEVNULL, PIPE, STDOUT

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
MUST_NOT_BE_LOADED = ("twisted.internet.reactor",)  # each crawl installs its own
MESSAGE_LIMIT = 1 << 20
PROJECT_DIRS = ("aggregator", "pipelines", "spiders", "tests", "bench")


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


def popen(
    cmd: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdout=None,
    stderr=None,
    text: bool = False,
) -> subprocess.Popen | LaunchedProcess:
    """`subprocess.Popen(cmd, ...)` for a crawl left running in the background, through the
    launcher when it can (see LaunchedProcess for what it offers of Popen's interface)."""
    env = dict(os.environ) if env is None else env
    if _needs_new_interpreter(cmd, env):
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=text)
    return _launcher().start(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=text)


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
            stdin=PIPE,  # closed: the launcher ends
            stdout=PIPE,  # "ready" once it listens
        )
        ready = self.process.stdout.readline()
        if ready != b"ready\n":
            self.process.kill()
            raise RuntimeError(f"the crawl launcher did not start (it said {ready!r})")

    def run(
        self, cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        """run() through this launcher: on a timeout the child is killed, as subprocess.run
        kills its child."""
        proc = self.start(cmd, cwd=cwd, env=env, stdout=PIPE, stderr=PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err) from None
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def start(self, cmd: list[str], *, cwd, env, stdout, stderr, text) -> LaunchedProcess:
        return LaunchedProcess(self.address, cmd, cwd, env, stdout, stderr, text)

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)
        self.process.stdout.close()
        self._directory.cleanup()


class LaunchedProcess:
    """A crawl forked by the launcher, with the part of subprocess.Popen the tests use: args,
    pid, returncode, poll, wait, communicate, send_signal, terminate, kill. stdout and stderr
    take None (this process's), PIPE, DEVNULL, STDOUT (stderr), a file or a descriptor; PIPE
    output goes to a temporary file that communicate() reads once the process has ended."""

    def __init__(self, address: str, cmd: list[str], cwd, env, stdout, stderr, text: bool):
        self.args = cmd
        self.returncode: int | None = None
        self._text = text
        self._captured: dict[str, object] = {}
        with contextlib.ExitStack() as opened:
            stdin_fd = opened.enter_context(open(os.devnull, "rb")).fileno()
            out_fd = self._stream("stdout", stdout, 1, opened)
            err_fd = out_fd if stderr == STDOUT else self._stream("stderr", stderr, 2, opened)
            self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._conn.connect(address)
            request = {"args": cmd[3:], "cwd": str(cwd), "env": env}
            data = json.dumps(request).encode() + b"\n"
            socket.send_fds(self._conn, [data], [stdin_fd, out_fd, err_fd])
        self._replies = _Replies(self._conn)
        self.pid: int = self._replies.next()["pid"]
        self._pidfd = os.pidfd_open(self.pid)  # signals reach this process, never a successor

    def _stream(self, name: str, spec, inherited: int, opened: contextlib.ExitStack) -> int:
        if spec is None:
            return inherited
        if spec == PIPE:
            # kept open (and read by communicate) for as long as the process object lives
            self._captured[name] = file = tempfile.TemporaryFile()  # noqa: SIM115
            return file.fileno()
        if spec == DEVNULL:
            return opened.enter_context(open(os.devnull, "wb")).fileno()
        return spec if isinstance(spec, int) else spec.fileno()

    def poll(self) -> int | None:
        if self.returncode is None:
            self._conn.setblocking(False)
            try:
                self._ended(self._replies.next())
            except BlockingIOError:
                pass
            finally:
                if self.returncode is None:
                    self._conn.setblocking(True)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                self._ended(self._replies.next())
            except TimeoutError:
                self._conn.settimeout(None)
                raise subprocess.TimeoutExpired(self.args, timeout) from None
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple:
        self.wait(timeout)
        return self._output("stdout"), self._output("stderr")

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it has just ended
                signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _ended(self, reply: dict) -> None:
        self.returncode = reply["returncode"]
        self._conn.close()
        os.close(self._pidfd)

    def _output(self, name: str):
        file = self._captured.get(name)
        if file is None:
            return None
        file.seek(0)
        data = file.read()
        return _text(data) if self._text else data


def _text(data: bytes) -> str:
    """What subprocess makes of output with text=True: locale encoding, universal newlines."""
    text = data.decode(locale.getpreferredencoding(False))
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
    """Import the third-party modules every crawl imports; returns the warnings the imports
    raised."""
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
    # The project's modules were imported for the third-party modules they import; each child
    # imports them afresh, so what they do when imported is done in the crawl's own process.
    for name in [name for name, module in sys.modules.items() if _is_project(name, module)]:
        del sys.modules[name]
    raised = [w for w in raised if not _in_project(w.filename)]
    loaded = [name for name in MUST_NOT_BE_LOADED if name in sys.modules]
    threads = os.listdir("/proc/self/task")
    if loaded or len(threads) != 1 or threading.active_count() != 1:
        raise RuntimeError(f"cannot fork crawls: loaded {loaded}, {len(threads)} threads")
    return raised


def _in_project(filename: str | None) -> bool:
    """In the project's source (not in a virtualenv that may live in the checkout)."""
    if filename is None:
        return False
    path = Path(filename).resolve()
    return any(path.is_relative_to(ROOT / part) for part in PROJECT_DIRS)


def _is_project(name: str, module) -> bool:
    if name == "__main__":  # the launcher itself
        return False
    return name.split(".")[0] == "aggregator" or _in_project(getattr(module, "__file__", None))


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
