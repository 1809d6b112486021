"""Real Hexo sites as consumers of the posts: install a pinned site (`npm ci`), copy it into a
temporary directory, drop posts into `source/_posts/`, run `hexo generate`, hand back the exit
status, the output and `public/`.

The sites live in `tests/hexo/<name>/` (package.json, package-lock.json, _config.yml); their
`node_modules/` is installed in place by `npm ci` and never committed. A build copies only the
site's own files and symlinks `node_modules`, so builds never change the pinned site and can run
side by side. Hexo is run from the site's own `node_modules/.bin/hexo`, never through npx, so a
build can never fetch anything from the registry.

Each build directory also gets a file `leak-canary.txt` holding a random token and each build
runs with a random `AGGREGATOR_HEXO_BUILD_SECRET` in its environment: a page that shows either
proves that a post read a file or the environment of the build machine.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from filelock import FileLock

HEXO_DIR = Path(__file__).resolve().parent / "hexo"
SITES = ("hexo7-marked", "hexo7-markdown-it", "hexo6-marked")
SITE_FILES = ("package.json", "package-lock.json", "_config.yml")
CANARY_PREFIX = "aggregator-canary"  # files a payload managed to write, in the build directory
LEAK_FILE = "leak-canary.txt"
SECRET_ENV = "AGGREGATOR_HEXO_BUILD_SECRET"
NPM_TIMEOUT = 600
GENERATE_TIMEOUT = 120

# Hexo names the post it failed on: "Nunjucks Error: _posts/x.md [Line 2, ...]",
# "Process failed: _posts/x.md", "... (_posts/x.md) ...".
_FAILED_POST_RE = re.compile(r"_posts/([^\s/\\\]\[)(:'\"]+\.md)")


def node_tools() -> tuple[str | None, str | None]:
    """Paths of node and npm, or None for a missing one."""
    return shutil.which("node"), shutil.which("npm")


def site_dir(name: str) -> Path:
    if name not in SITES:
        raise ValueError(f"unknown Hexo site {name!r}; known: {', '.join(SITES)}")
    return HEXO_DIR / name


def ensure_installed(name: str) -> Path:
    """Run `npm ci` for the site unless its node_modules matches its lockfile. Returns the
    site directory. Install scripts are not run: none of the sites needs one."""
    site = site_dir(name)
    marker = site / "node_modules" / ".package-lock.json"
    lock = site / "package-lock.json"
    with FileLock(str(site / ".npm-ci.lock")):
        if marker.is_file() and marker.stat().st_mtime >= lock.stat().st_mtime:
            return site
        proc = subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=site,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"npm ci failed in {site} (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
    return site


@dataclass
class HexoBuild:
    site: str
    directory: Path
    returncode: int
    stdout: str
    stderr: str
    posts: list[str]  # file names given to the build
    secret: str  # value of SECRET_ENV during the build
    leak_token: str  # content of LEAK_FILE
    # posts left out after a failed build, with the error excerpt (build_excluding_failures)
    excluded: dict[str, str] = field(default_factory=dict)
    first_returncode: int | None = None

    @property
    def public(self) -> Path:
        return self.directory / "public"

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def post_page(self, post_file: str) -> Path | None:
        """`public/.../<slug>/index.html` of a post (slug = the file name without `.md`)."""
        slug = post_file.removesuffix(".md")
        pages = sorted(self.public.glob(f"**/{glob_escape(slug)}/index.html"))
        return pages[0] if pages else None

    def canaries(self) -> list[Path]:
        """Files a payload wrote into the build directory (payloads write relative names, so
        into Hexo's working directory, the top of the build directory)."""
        return sorted(self.directory.glob(f"{CANARY_PREFIX}*"))

    def pages(self) -> list[Path]:
        return sorted(self.public.rglob("*.html")) if self.public.is_dir() else []


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def prepare(name: str, workdir: Path, posts: Mapping[str, bytes]) -> Path:
    """A fresh copy of the site in `workdir` with `posts` (file name -> bytes) in
    source/_posts/. node_modules is a symlink to the installed site's."""
    site = ensure_installed(name)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for file in SITE_FILES:
        shutil.copy2(site / file, workdir / file)
    (workdir / "node_modules").symlink_to(site / "node_modules", target_is_directory=True)
    posts_dir = workdir / "source" / "_posts"
    posts_dir.mkdir(parents=True)
    for file, data in posts.items():
        if "/" in file or not file.endswith(".md"):
            raise ValueError(f"not a post file name: {file!r}")
        (posts_dir / file).write_bytes(data)
    return workdir


def generate(
    name: str,
    workdir: Path,
    posts: Mapping[str, bytes],
    *,
    config: Mapping[str, object] | None = None,
    tz: str = "UTC",
    timeout: float = GENERATE_TIMEOUT,
) -> HexoBuild:
    """Copy the site to `workdir`, add `posts`, run `hexo generate` once.

    `config` keys override the site's `_config.yml` (written to a second config file and given
    to hexo as `--config _config.yml,_config.test.yml`). `tz` is the build machine's time zone
    (TZ), independent of the site's `timezone:` setting."""
    directory = prepare(name, workdir, posts)
    return _run(name, directory, sorted(posts), config=config, tz=tz, timeout=timeout)


def _run(
    name: str,
    directory: Path,
    posts: list[str],
    *,
    config: Mapping[str, object] | None,
    tz: str,
    timeout: float,
) -> HexoBuild:
    shutil.rmtree(directory / "public", ignore_errors=True)
    (directory / "db.json").unlink(missing_ok=True)
    secret = secrets.token_hex(16)
    leak_token = "leak-" + secrets.token_hex(16)
    (directory / LEAK_FILE).write_text(leak_token + "\n")
    command = [str(directory / "node_modules" / ".bin" / "hexo"), "generate"]
    if config:
        (directory / "_config.test.yml").write_text(
            yaml.safe_dump(dict(config), allow_unicode=True), encoding="utf-8"
        )
        command += ["--config", "_config.yml,_config.test.yml"]
    env = _build_env(directory, tz, secret)
    try:
        proc = subprocess.run(
            command, cwd=directory, capture_output=True, text=True, timeout=timeout, env=env
        )
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        returncode = -1
        stdout = _text(exc.stdout)
        stderr = _text(exc.stderr) + f"\n[hexo generate timed out after {timeout} s]"
    return HexoBuild(name, directory, returncode, stdout, stderr, posts, secret, leak_token)


def _build_env(directory: Path, tz: str, secret: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),
        "LANG": "C.UTF-8",
        "TZ": tz,
        "NO_COLOR": "1",
        "FORCE_COLOR": "0",
        "npm_config_offline": "true",
        SECRET_ENV: secret,
    }


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def failed_post(build: HexoBuild) -> str | None:
    """The post file a failed build names, if it names one of its posts."""
    for match in _FAILED_POST_RE.finditer(build.output):
        if match.group(1) in build.posts:
            return match.group(1)
    return None


def error_excerpt(output: str, limit: int = 600) -> str:
    """The part of Hexo's output that says what went wrong (FATAL/ERROR onwards)."""
    for mark in ("FATAL", "ERROR", "Error"):
        at = output.find(mark)
        if at >= 0:
            return output[at : at + limit]
    return output[-limit:]


def build_excluding_failures(
    name: str,
    workdir: Path,
    posts: Mapping[str, bytes],
    *,
    config: Mapping[str, object] | None = None,
    tz: str = "UTC",
    timeout: float = GENERATE_TIMEOUT,
    max_exclusions: int = 25,
) -> HexoBuild:
    """`generate`, and while the build fails, leave out the posts that fail it and build
    again, so that one post that breaks the site does not hide what the others do. The posts
    are those that fail rendered one by one (`screen_posts`), then, while the build still
    fails, the one Hexo's error names, else the one a bisection of the remaining posts finds.
    `excluded` maps each post left out to Hexo's error; `first_returncode` is the exit status
    with every post in."""
    directory = prepare(name, workdir, posts)
    remaining = sorted(posts)
    excluded: dict[str, str] = {}
    options = {"config": config, "tz": tz, "timeout": timeout}
    build = _run(name, directory, remaining, **options)
    first = build.returncode
    if build.returncode != 0:
        # Hexo stops at the first post that fails: render them one by one to find them all.
        for post, error in screen_posts(directory, config=config, tz=tz, timeout=timeout).items():
            if error and post in remaining:
                excluded[post] = "(rendered alone) " + error[:1500]
                (directory / "source" / "_posts" / post).unlink()
                remaining.remove(post)
        if excluded:
            build = _run(name, directory, remaining, **options)
    scratch = workdir.with_name(workdir.name + "-bisect")
    while build.returncode != 0 and len(excluded) < max_exclusions:
        culprit = failed_post(build)
        if culprit is not None:
            excluded[culprit] = error_excerpt(build.output)
        else:
            culprit = _bisect(name, scratch, posts, remaining, options)
            alone = _run(
                name, prepare(name, scratch, {culprit: posts[culprit]}), [culprit], **options
            )
            shutil.rmtree(scratch, ignore_errors=True)
            if alone.returncode == 0:
                break  # the failure is not one post's doing: leave it to the report
            excluded[culprit] = "(found by bisection: Hexo's error does not name the post) " + (
                error_excerpt(alone.output)
            )
        (directory / "source" / "_posts" / culprit).unlink()
        remaining.remove(culprit)
        build = _run(name, directory, remaining, **options)
    build.excluded = excluded
    build.first_returncode = first
    return build


def screen_posts(
    directory: Path,
    *,
    config: Mapping[str, object] | None = None,
    tz: str = "UTC",
    timeout: float = GENERATE_TIMEOUT,
) -> dict[str, str | None]:
    """Render each post of a prepared site on its own (tests/hexo/render_each.js): post file
    -> the error it fails with, or None. Empty when the screen itself fails."""
    command = ["node", str(HEXO_DIR / "render_each.js"), str(directory)]
    if config:
        command.append("_config.yml,_config.test.yml")
    try:
        proc = subprocess.run(
            command,
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_build_env(directory, tz, secrets.token_hex(16)),
        )
        return json.loads(proc.stdout) if proc.returncode == 0 else {}
    except (subprocess.TimeoutExpired, ValueError):
        return {}


def _fails(name: str, workdir: Path, posts: Mapping[str, bytes], subset, options) -> bool:
    build = _run(
        name, prepare(name, workdir, {p: posts[p] for p in subset}), list(subset), **options
    )
    return build.returncode != 0


def _bisect(name, workdir, posts, remaining, options) -> str:
    """The post among `remaining` (whose build fails) that a bisection ends on."""
    candidates = list(remaining)
    while len(candidates) > 1:
        half = candidates[: len(candidates) // 2]
        candidates = (
            half if _fails(name, workdir, posts, half, options) else candidates[len(half) :]
        )
    return candidates[0]
