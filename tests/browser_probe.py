"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) as the last consumer of
a post: load the pages Hexo generated and record anything a post manages to run or fetch.

What counts as a script run on a page (`PageReport.executions()`):
- a call of a hook installed before the page's own scripts (tests/hexo/instrument.js): the
  corpus payloads' `window.__xss(id)`, `alert`/`confirm`/`prompt`/`print`/`open`, `eval`,
  `Function`, `setTimeout`/`setInterval` with a string;
- a JavaScript dialog that got past the hooks;
- any script V8 compiled in a page's main world that is not one of the theme's own script files
  (inline scripts, event handler attributes, `javascript:` URLs, eval'd code...), seen through
  the Chrome DevTools Protocol (`Debugger.scriptParsed`);
- an uncaught exception (`pageerror`), a request to the beacon server, a popup, the page
  navigating away.

Nothing leaves the machine: Chromium resolves no host but 127.0.0.1. Every request to anything
but the site's own origin and the beacon is recorded: image-proxy URLs as `proxied`, the
theme's own CDN stylesheets as `theme`, video/audio streams (not proxied, by design) as `media`,
anything else as `foreign` (an image that skipped the proxy, a stylesheet, a frame...).
The DOM is audited once the page has loaded, scrolled and let the theme's scripts run
(tests/hexo/audit.js).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
HERE = Path(__file__).resolve().parent / "hexo"
INSTRUMENT_JS = (HERE / "instrument.js").read_text(encoding="utf-8")
AUDIT_JS = (HERE / "audit.js").read_text(encoding="utf-8")
VISIBLE_TEXT_JS = (HERE / "visible_text.js").read_text(encoding="utf-8")
BINDING = "__aggregator_harness_report"
INSTRUMENT_URL = "aggregator-harness-instrument.js"

IMAGE_PROXY = "https://cors.zfour.workers.dev/?"
# Scripts and stylesheets the landscape theme itself loads: not the posts' doing.
THEME_SCRIPT_PATHS = (
    "/js/jquery-3.6.4.min.js",
    "/js/script.js",
    "/fancybox/jquery.fancybox.min.js",
)
THEME_EXTERNAL_PREFIXES = (
    "https://cdn.jsdelivr.net/npm/fork-awesome@",
    "https://cdn.jsdelivr.net/npm/typeface-source-code-pro@",
)
# Where posts put things on a landscape page: the main column and the sidebar widgets.
CONTENT_SELECTOR = "#main, #sidebar"

# Scripts Playwright and this harness run in the page's main world (evaluations, bindings).
HARNESS_SOURCE = re.compile(r"__playwright|utilityScript|deliverResult|aggregator-harness")

BEACON_PATH = "/beacon"
MARK = "/* aggregator-harness */"  # in every script the harness evaluates in a page
GOTO_TIMEOUT_MS = 15_000
LOAD_TIMEOUT = 30.0  # seconds for one path, from navigation to the last check
CLOSE_TIMEOUT = 5.0
# Scroll to the bottom once, give timers and the theme's handlers a moment, let two frames
# render.
SETTLE_JS = f"""async (ms) => {{ {MARK}
  window.scrollTo(0, document.body.scrollHeight);
  await new Promise((r) => setTimeout(r, ms));
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
}}"""
SETTLE_SECONDS = 0.05


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class StaticServer:
    """Serves a generated `public/` directory on 127.0.0.1 at a free port."""

    def __init__(self, directory: Path):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> StaticServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class BeaconServer:
    """Records every request it gets: payloads in the corpus fetch `<url>/<id>`."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self._lock = threading.Lock()
        beacon = self

        class Handler(BaseHTTPRequestHandler):
            def _hit(self) -> None:
                with beacon._lock:
                    beacon.hits.append(self.path)
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_OPTIONS = _hit

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{BEACON_PATH}"

    def take(self) -> list[str]:
        with self._lock:
            hits, self.hits = self.hits, []
        return hits

    def start(self) -> BeaconServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class Request:
    url: str
    resource_type: str
    verdict: str  # proxied | theme | media | foreign


@dataclass
class PageReport:
    site: str
    path: str  # path on the site, e.g. /2022/02/02/feed-x/
    hooks: list[tuple[str, str]] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)  # unexpected scripts compiled
    page_errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    beacon_hits: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    popups: list[str] = field(default_factory=list)
    navigations: list[str] = field(default_factory=list)
    dom: list[dict] = field(default_factory=list)
    instrumented: bool = False
    title: str | None = None
    entry_text: str | None = None
    visible: dict | None = None  # visible_text.js result, when a source was given
    error: str | None = None

    def executions(self) -> list[str]:
        """Evidence that something ran (or tried to) on this page; empty when nothing did."""
        out = [f"hook {kind}({detail})" for kind, detail in self.hooks]
        out += [f"dialog {message}" for message in self.dialogs]
        out += [f"script compiled: {source}" for source in self.scripts]
        out += [f"uncaught error: {error}" for error in self.page_errors]
        out += [f"beacon hit {hit}" for hit in self.beacon_hits]
        out += [f"popup {url}" for url in self.popups]
        out += [f"navigated to {url}" for url in self.navigations]
        if self.error:
            out.append(f"page failed: {self.error}")
        elif not self.instrumented:
            out.append("instrumentation missing on the final document (the page was replaced)")
        return out

    def foreign_requests(self) -> list[Request]:
        return [r for r in self.requests if r.verdict == "foreign"]

    def unproxied_images(self) -> list[str]:
        """Image addresses that skipped the proxy: requested, or in the DOM."""
        found = [r.url for r in self.foreign_requests() if r.resource_type == "image"]
        found += [f["detail"] for f in self.dom if f["kind"] == "unproxied-image"]
        return found

    def live_markup(self) -> list[dict]:
        """DOM findings other than images: handlers, active URLs, forbidden elements."""
        return [f for f in self.dom if f["kind"] != "unproxied-image"]


@dataclass
class SiteVisit:
    """One served site to visit: `paths` on `origin`; `sources` maps a path to the article's
    source HTML whose visible text should be read next to the post's (visible_text.js)."""

    site: str
    origin: str
    paths: list[str]
    sources: dict[str, str] = field(default_factory=dict)


class Probe:
    """One Chromium for all sites (Playwright's async API under the hood, so that a few pages
    load at once). `visit(visits)` loads every path of every site and returns, per site, a
    `PageReport` per path."""

    def __init__(self, beacon_url: str, executable: str = CHROMIUM, concurrency: int = 2):
        self.beacon_origin = _origin(beacon_url)
        self.executable = executable
        self.concurrency = concurrency
        self._loop = asyncio.new_event_loop()
        try:
            self._playwright, self.browser = self._loop.run_until_complete(self._launch())
        except Exception:
            self._loop.close()
            raise

    async def _launch(self):
        from playwright.async_api import async_playwright

        playwright = await async_playwright().start()
        try:
            browser = await playwright.chromium.launch(
                executable_path=self.executable,
                args=[
                    # Everything but 127.0.0.1 goes to a proxy that is not there (IP literals
                    # too, which the resolver rule below does not cover). Chromium's own
                    # switches, not Playwright's proxy option: that one proxies loopback too
                    # in some Playwright versions.
                    f"--proxy-server=http://127.0.0.1:{_closed_port()}",
                    "--proxy-bypass-list=127.0.0.1",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    # Nothing leaves the machine: every host but 127.0.0.1 fails to resolve
                    # (requests are still seen and recorded as they start).
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-domain-reliability",
                    "--disable-sync",
                    "--no-first-run",
                    "--no-pings",
                    "--dns-prefetch-disable",
                ],
            )
        except Exception:
            await playwright.stop()
            raise
        return playwright, browser

    def close(self) -> None:
        async def stop() -> None:
            try:
                await self.browser.close()
            finally:
                await self._playwright.stop()

        try:
            self._loop.run_until_complete(stop())
        finally:
            self._loop.close()

    def visit(self, visits: list[SiteVisit]) -> dict[str, dict[str, PageReport]]:
        return self._loop.run_until_complete(self._visit_all(visits))

    async def _visit_all(self, visits: list[SiteVisit]) -> dict[str, dict[str, PageReport]]:
        queue: asyncio.Queue[tuple[SiteVisit, str]] = asyncio.Queue()
        for visit in visits:
            for path in visit.paths:
                queue.put_nowait((visit, path))
        results: dict[str, dict[str, PageReport]] = {v.site: {} for v in visits}
        workers = [
            asyncio.create_task(self._worker(queue, results))
            for _ in range(max(1, min(self.concurrency, queue.qsize())))
        ]
        await asyncio.gather(*workers)
        for visit in visits:  # in the order asked for
            results[visit.site] = {p: results[visit.site][p] for p in visit.paths}
        return results

    async def _worker(self, queue, results) -> None:
        """A browser context and page of its own, reused for path after path. A page that
        hangs or crashes is recorded as failed and replaced."""
        tab: _Tab | None = None
        try:
            while not queue.empty():
                visit, path = queue.get_nowait()
                if tab is not None and tab.origin != visit.origin:
                    await tab.close()
                    tab = None
                if tab is None:
                    tab = await _Tab.open(self.browser, visit.origin, self.beacon_origin)
                report = PageReport(site=visit.site, path=path)
                try:
                    await tab.load(path, report, visit.sources.get(path))
                except Exception as exc:
                    report.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    await tab.close()
                    tab = None
                results[visit.site][path] = report
        finally:
            if tab is not None:
                await tab.close()


class _Tab:
    """A browser context with the instrumentation and the request log; each path is loaded
    in a fresh page of it (with its own script watch), so nothing a page left running (a
    timer, a pending navigation) reaches the next one. `load` fills a PageReport."""

    def __init__(self, context, origin: str, beacon_origin: str):
        self.context = context
        self.origin = origin
        self.beacon_origin = beacon_origin
        self.page = None
        self.cdp = None
        self.report: PageReport | None = None
        self.expected_url: str | None = None
        self.scripts: list[dict] = []
        self.harness_hashes: set[str] = set()  # scripts already known to be the harness's

    @classmethod
    async def open(cls, browser, origin: str, beacon_origin: str) -> _Tab:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        tab = cls(context, origin, beacon_origin)
        try:
            await context.expose_function(BINDING, tab._on_hook)
            await context.add_init_script(INSTRUMENT_JS)
        except Exception:
            await tab.close()
            raise
        context.on("request", tab._on_request)
        context.on("page", tab._on_popup)
        return tab

    async def close(self) -> None:
        # A context with a page stuck in a navigation or a dialog may never finish closing:
        # give up on it after a while (the browser goes at the end anyway).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.context.close(), CLOSE_TIMEOUT)

    # --- event handlers: everything goes to the report of the path being loaded -------------
    def _on_hook(self, kind: str, detail: str) -> None:
        if self.report is not None:
            self.report.hooks.append((kind, detail))

    def _on_request(self, request) -> None:
        if self.report is None:
            return
        url = request.url
        target = _origin(url)
        if target == self.origin or url.startswith(("data:", "blob:", "about:")):
            return
        if target == self.beacon_origin:
            self.report.beacon_hits.append(url)
            return
        if url.startswith(IMAGE_PROXY):
            verdict = "proxied"
        elif url.startswith(THEME_EXTERNAL_PREFIXES):
            verdict = "theme"
        elif request.resource_type == "media":
            verdict = "media"  # <video>/<audio> streams are not proxied, by design (README)
        else:
            verdict = "foreign"
        self.report.requests.append(Request(url, request.resource_type, verdict))

    def _on_popup(self, page) -> None:
        if self.report is not None and page is not self.page:
            self.report.popups.append(page.url)

    async def _on_dialog(self, dialog) -> None:
        if self.report is not None:
            self.report.dialogs.append(f"{dialog.type}: {dialog.message}"[:300])
        with contextlib.suppress(Exception):
            await dialog.dismiss()

    def _on_page_error(self, error) -> None:
        if self.report is not None:
            self.report.page_errors.append(str(error)[:300])

    def _on_console(self, message) -> None:
        if self.report is not None:
            self.report.console.append(f"{message.type}: {message.text}"[:300])

    def _on_navigated(self, frame) -> None:
        if self.report is None or self.page is None or self.expected_url is None:
            return
        if frame == self.page.main_frame and frame.url != self.expected_url:
            self.report.navigations.append(frame.url)

    def _on_script(self, event: dict) -> None:
        self.scripts.append(event)

    # --- one path ------------------------------------------------------------------------------
    async def _open_page(self):
        page = await self.context.new_page()
        try:
            cdp = await self.context.new_cdp_session(page)
            page.on("dialog", self._on_dialog)
            page.on("pageerror", self._on_page_error)
            page.on("console", self._on_console)
            page.on("framenavigated", self._on_navigated)
            cdp.on("Debugger.scriptParsed", self._on_script)
            await cdp.send("Debugger.enable")
        except Exception:
            await self._close_page(page)
            raise
        return page, cdp

    @staticmethod
    async def _close_page(page) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(page.close(), CLOSE_TIMEOUT)

    async def load(self, path: str, report: PageReport, source: str | None) -> None:
        """Fill `report` for `path`. Raises when the page fails or hangs (LOAD_TIMEOUT); the
        page is then thrown away. Between paths the page goes to about:blank, which stops
        whatever the last one left running (timers, a pending refresh)."""
        self.expected_url = None
        self.scripts = []
        if self.page is None:
            self.page, self.cdp = await self._open_page()
        page = self.page
        self.report = report
        try:
            await asyncio.wait_for(self._load(page, self.cdp, path, report, source), LOAD_TIMEOUT)
            self.report = None
            await page.goto("about:blank", timeout=GOTO_TIMEOUT_MS)
        except Exception as exc:
            # e.g. "execution context was destroyed": the page went somewhere else
            if self.report is not None and self.expected_url:
                with contextlib.suppress(Exception):
                    await page.wait_for_load_state("load", timeout=3000)
                if page.url != self.expected_url:
                    report.navigations.append(page.url)
                elif "navigation" in str(exc):
                    report.navigations.append(f"(a navigation interrupted the checks: {exc})")
            self.page = None
            await self._close_page(page)
            if self.report is not None:
                raise
        finally:
            self.report = None
            self.expected_url = None

    async def _load(self, page, cdp, path: str, report: PageReport, source: str | None) -> None:
        await page.goto(self.origin + path, wait_until="load", timeout=GOTO_TIMEOUT_MS)
        self.expected_url = page.url
        if page.url != self.origin + path:
            report.navigations.append(page.url)
        await page.evaluate(SETTLE_JS, SETTLE_SECONDS * 1000)
        audit = await page.evaluate(AUDIT_JS, {"proxy": IMAGE_PROXY, "content": CONTENT_SELECTOR})
        report.instrumented = audit["instrumented"]
        report.dom = audit["findings"]
        report.title = audit["title"]
        report.entry_text = audit["entryText"]
        if source is not None:
            report.visible = await page.evaluate(VISIBLE_TEXT_JS, source)
        report.scripts = await self._unexpected_scripts(cdp)

    async def _unexpected_scripts(self, cdp) -> list[str]:
        found = []
        for script in list(self.scripts):
            aux = script.get("executionContextAuxData") or {}
            if aux.get("type") == "isolated" or not aux.get("isDefault", True):
                continue  # Playwright's own utility worlds
            url = script.get("url") or ""
            if url.endswith(INSTRUMENT_URL) or "__playwright" in url:
                continue
            if url.startswith(self.origin) and urlsplit(url).path in THEME_SCRIPT_PATHS:
                continue
            if script.get("hash") in self.harness_hashes:
                continue
            try:
                answer = await cdp.send(
                    "Debugger.getScriptSource", {"scriptId": script["scriptId"]}
                )
                full = answer.get("scriptSource", "")
            except Exception:
                if not url:
                    # gone with its document: Playwright's late binding deliveries
                    # (a payload's eval'd code is also reported by the eval/Function hooks)
                    continue
                full = "(source unavailable)"
            if HARNESS_SOURCE.search(full):
                self.harness_hashes.add(script.get("hash"))
                continue
            source = " ".join(full.split())[:160]
            found.append(f"{url or '(no url)'} line {script.get('startLine')}: {source}")
        return found


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
