"""Dependencies true to the code: every runtime dependency is imported by the shipped code, and
.ci/lowest.txt pins exactly the lower bounds pyproject.toml declares (CI runs the suite on them)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# tzdata is zoneinfo's fallback data: used wherever zoneinfo is
IMPORT_NAMES = {
    "python-frontmatter": "frontmatter",
    "PyYAML": "yaml",
    "scrapy-redis": "scrapy_redis",
    "tzdata": "zoneinfo",
}


def runtime_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?>=([0-9][^,;\s]*)", requirement)
        assert match, f"{requirement!r}: every dependency has a plain >= lower bound"
        found[match[1]] = match[2]
    return found


def shipped_source() -> str:
    files = [*ROOT.joinpath("aggregator").rglob("*.py")]
    files += [*ROOT.joinpath("spiders").glob("*.py"), *ROOT.joinpath("pipelines").glob("*.py")]
    return "\n".join(path.read_text(encoding="utf-8") for path in files)


def test_every_runtime_dependency_is_imported_by_the_shipped_code():
    source = shipped_source()
    for name in runtime_requirements():
        module = IMPORT_NAMES.get(name, name)
        pattern = rf"^\s*(?:from|import) {re.escape(module)}\b"
        assert re.search(pattern, source, re.MULTILINE), f"{name} is declared but never imported"


def test_the_lowest_constraints_pin_the_declared_lower_bounds():
    lines = (ROOT / ".ci" / "lowest.txt").read_text(encoding="utf-8").splitlines()
    pinned = dict(
        line.split("==", 1) for line in (ln.strip() for ln in lines) if line and line[0] != "#"
    )
    assert pinned == runtime_requirements()
