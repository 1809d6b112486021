"""The sources file: named sources, each a spider with its arguments and the channel (categories
and author) its posts carry, read by `scrapy crawlall`.

The file is TOML, parsed with tomllib and checked against a JSON schema, and then every entry is
checked against the project's spiders (the spider exists, and its `parse_arguments` accepts the
arguments), so a mistake is reported up front, naming the source and the key, before anything is
crawled. Which file: the SOURCES_FILE setting, else the AGGREGATOR_SOURCES environment variable,
else the file shipped in the package (`aggregator/data/sources.toml`).
"""

from __future__ import annotations

import ast
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from jsonschema import Draft202012Validator, ValidationError

from aggregator.errors import ConfigError
from aggregator.ops.runstatus import check_arguments

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = [
    "DEFAULT_SOURCES_FILE",
    "SOURCES_ENV",
    "Source",
    "load_sources",
    "parse_sources",
    "select_sources",
    "sources_file",
]

DEFAULT_SOURCES_FILE = Path(__file__).resolve().parent.parent / "data" / "sources.toml"
SOURCES_ENV = "AGGREGATOR_SOURCES"

# Names are used in `--only a,b`, in the summary and in last-run.json: no commas or spaces.
NAME_PATTERN = r"^[\w-]+$"
SOURCE_KEYS = ("spider", "args", "categories", "author", "enabled")
# Passed to the spider as arguments of their own; `args` must not set them as well.
CHANNEL_KEYS = ("categories", "author")

_TEXT = {"type": "string", "minLength": 1, "pattern": r"\S"}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["sources"],
    "additionalProperties": False,
    "properties": {
        "sources": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "required": ["spider", "categories", "author"],
                "additionalProperties": False,
                "properties": {
                    "spider": _TEXT,
                    "args": {"type": "object", "additionalProperties": {"type": "string"}},
                    "categories": {
                        "type": "array",
                        "minItems": 3,
                        "maxItems": 3,
                        # joined with commas into `-a categories=group,source,channel`
                        "items": {**_TEXT, "pattern": r"^[^,]*[^,\s][^,]*$"},
                    },
                    "author": _TEXT,
                    "enabled": {"type": "boolean"},
                },
            },
        }
    },
}
_VALIDATOR = Draft202012Validator(SCHEMA)

_TYPE_NAMES = {
    "string": "a string",
    "boolean": "true or false",
    "array": "a list",
    "object": "a table",
}


class SpiderLoader(Protocol):
    def load(self, spider_name: str) -> type: ...

    def list(self) -> list[str]: ...


@dataclass(frozen=True)
class Source:
    """One entry of the sources file."""

    name: str
    spider: str
    args: dict[str, str]
    categories: tuple[str, str, str]
    author: str
    enabled: bool = True

    def spider_arguments(self) -> dict[str, str]:
        """What the spider is given, exactly as `scrapy crawl <spider> -a k=v ...` would give it:
        the entry's `args` plus `categories=group,source,channel` and `author`."""
        return {**self.args, "categories": ",".join(self.categories), "author": self.author}


def sources_file(settings: BaseSettings) -> Path:
    """SOURCES_FILE (`-s` or settings), else $AGGREGATOR_SOURCES, else the packaged file."""
    configured = settings.get("SOURCES_FILE") or os.environ.get(SOURCES_ENV)
    return Path(configured).expanduser() if configured else DEFAULT_SOURCES_FILE


def load_sources(path: Path, spiders: SpiderLoader) -> dict[str, Source]:
    """Read and check the sources file at `path`; sources in file order (raises ConfigError)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sources file {path}: cannot read it: {exc}") from exc
    return parse_sources(text, spiders, origin=str(path))


def parse_sources(text: str, spiders: SpiderLoader, origin: str = "<sources>") -> dict[str, Source]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sources file {origin}: {_describe_toml_error(exc, text)}") from exc
    problems = [_describe_schema_error(e) for e in _schema_errors(document)]
    if problems:
        raise ConfigError("\n".join(f"sources file {origin}: {p}" for p in problems))
    sources = {}
    for name, entry in document["sources"].items():
        source = Source(
            name=name,
            spider=entry["spider"].strip(),
            args=dict(entry.get("args", {})),
            categories=tuple(c.strip() for c in entry["categories"]),  # type: ignore[arg-type]
            author=entry["author"].strip(),
            enabled=entry.get("enabled", True),
        )
        try:
            _check_spider(source, spiders)
        except ConfigError as exc:
            raise ConfigError(f"sources file {origin}: {exc}") from exc
        sources[name] = source
    return sources


def select_sources(
    sources: dict[str, Source], only: Iterable[str] = (), skip: Iterable[str] = ()
) -> list[Source]:
    """The enabled sources to crawl, in file order: those named in `only` (all when empty),
    less those in `skip`. Naming a source the file lacks, or a disabled one in `only`, is a
    ConfigError: a typo must not quietly crawl nothing."""
    only, skip = list(only), list(skip)
    unknown = [name for name in [*only, *skip] if name not in sources]
    if unknown:
        raise ConfigError(
            f"no source named {', '.join(map(repr, unknown))} (known: {', '.join(sources)})"
        )
    disabled = [name for name in only if not sources[name].enabled]
    if disabled:
        raise ConfigError(
            f"source {', '.join(map(repr, disabled))} is disabled (enabled = false in the "
            "sources file)"
        )
    return [
        source
        for name, source in sources.items()
        if source.enabled and (not only or name in only) and name not in skip
    ]


def parse_names(option: str, value: str | None) -> list[str]:
    """`--only a,b` → ["a", "b"]."""
    if value is None:
        return []
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"{option}: expected source names, comma-separated")
    return names


# --- checks ------------------------------------------------------------------------------------
def _check_spider(source: Source, spiders: SpiderLoader) -> None:
    where = f"[sources.{source.name}]"
    try:
        spidercls = spiders.load(source.spider)
    except KeyError:
        known = ", ".join(sorted(spiders.list()))
        raise ConfigError(
            f"{where} key 'spider': no spider named {source.spider!r} (known: {known})"
        ) from None
    clashing = [key for key in CHANNEL_KEYS if key in source.args]
    if clashing:
        raise ConfigError(
            f"{where} key 'args.{clashing[0]}': set {clashing[0]} as a key of the source, "
            "not in args"
        )
    try:
        check_arguments(spidercls, source.spider_arguments())
    except ConfigError as exc:
        raise ConfigError(f"{where} key 'args' (spider {source.spider!r}): {exc}") from exc


def _schema_errors(document: dict[str, Any]) -> list[ValidationError]:
    return sorted(_VALIDATOR.iter_errors(document), key=lambda e: [str(p) for p in e.path])


def _describe_schema_error(error: ValidationError) -> str:
    path = list(error.absolute_path)
    validator, instance = error.validator, error.instance
    if not path:
        if validator == "required":
            return "no [sources.NAME] tables: a sources file lists its sources as [sources.NAME]"
        if validator == "additionalProperties":
            extra = sorted(set(instance) - {"sources"})
            return f"unknown top-level key {extra[0]!r}: sources go in [sources.NAME] tables"
        return f"expected a TOML document of [sources.NAME] tables ({error.message})"
    if len(path) == 1:
        if validator == "minProperties":
            return "no sources: add at least one [sources.NAME] table"
        if "propertyNames" in error.schema_path:
            return (
                f"source name {instance!r}: use letters, digits, '-' and '_' only "
                "(names are given to --only and --skip)"
            )
        return f"'sources' must hold [sources.NAME] tables, got {_show(instance)}"
    where = f"[sources.{path[1]}]"
    if len(path) == 2:
        if validator == "required":
            missing = [key for key in error.validator_value if key not in instance]
            return f"{where} missing key {missing[0]!r}"
        if validator == "additionalProperties":
            extra = sorted(set(instance) - set(SOURCE_KEYS))
            return f"{where} unknown key {extra[0]!r} (known: {', '.join(SOURCE_KEYS)})"
        return f"{where} must be a table of keys, got {_show(instance)}"
    key = _key_name(path[2:])
    return f"{where} key {key!r}: {_describe_value_error(error, path[2:])}"


def _describe_value_error(error: ValidationError, keys: list[Any]) -> str:
    validator, instance = error.validator, error.instance
    if validator == "type":
        expected = _TYPE_NAMES.get(str(error.validator_value), str(error.validator_value))
        in_args = keys[0] == "args" and len(keys) == 2
        hint = f' (spider arguments are strings: {keys[-1]} = "{instance}")' if in_args else ""
        return f"expected {expected}{hint}, got {_show(instance)}"
    if keys == ["categories"] and validator in ("minItems", "maxItems"):
        return f"expected three values [group, source, channel], got {len(instance)}"
    if validator in ("minLength", "pattern") and isinstance(instance, str):
        if "," in instance:
            return f"{instance!r} must not contain a comma"
        return "must not be empty"
    return error.message


def _key_name(parts: list[Any]) -> str:
    name = str(parts[0])
    for part in parts[1:]:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def _show(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    kind = kinds.get(type(value))
    if kind is not None:
        return f"{kind} ({value!r})" if not isinstance(value, bool) else repr(value).lower()
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


# --- TOML syntax errors --------------------------------------------------------------------------
_AT_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_DECLARED_TWICE = re.compile(r"^Cannot declare (\(.*\)) twice")
_HEADER = re.compile(r"^\s*\[\s*sources\s*\.\s*(.+?)\s*\]\s*(#.*)?$")


def _describe_toml_error(exc: tomllib.TOMLDecodeError, text: str) -> str:
    """tomllib's message, said in terms of sources: a table declared twice is a source defined
    twice; a key set twice is named, with the source it is in."""
    message = str(exc)
    found = _AT_LINE.search(message)
    lineno = int(found.group(1)) if found else None
    lines = text.splitlines()
    line = lines[lineno - 1].strip() if lineno and lineno <= len(lines) else ""
    twice = _DECLARED_TWICE.match(message)
    if twice:
        try:
            declared = ast.literal_eval(twice.group(1))
        except (ValueError, SyntaxError):
            declared = ()
        if len(declared) == 2 and declared[0] == "sources":
            return f"source {declared[1]!r} is defined twice (again at line {lineno}: {line})"
        return f"table {'.'.join(declared)} is declared twice (line {lineno}: {line})"
    source = _enclosing_source(lines, lineno) if lineno else None
    where = f" in [sources.{source}]" if source else ""
    if message.startswith("Cannot overwrite a value") and "=" in line:
        key = line.split("=", 1)[0].strip()
        return f"key {key!r} is set twice{where} (line {lineno}: {line})"
    plain = _AT_LINE.sub("", message).strip()
    at = f" (line {lineno}: {line})" if lineno else ""
    return f"not valid TOML{where}: {plain}{at}"


def _enclosing_source(lines: list[str], lineno: int) -> str | None:
    for line in reversed(lines[: lineno - 1]):
        header = _HEADER.match(line)
        if header:
            return header.group(1).strip().strip('"')
        if line.lstrip().startswith("["):
            return None
    return None
