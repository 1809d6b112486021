"""Parsing of spider arguments shared by the spiders: `-a` values arrive as strings."""

from __future__ import annotations

from collections.abc import Iterable

from aggregator.errors import ConfigError

__all__ = ["parse_categories", "parse_list", "parse_positive_int", "require_known"]


def require_known(arguments: Iterable[str], known: Iterable[str]) -> None:
    """Refuse arguments a spider does not take: Scrapy would set a typo (`-a cdi=7`) as an
    attribute and the crawl would quietly run with the default instead."""
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown spider argument {unknown[0]!r} (this spider takes: {', '.join(known)})"
        )


def parse_list(name: str, value: str | list[str] | tuple[str, ...]) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    cleaned = [str(v).strip() for v in items if str(v).strip()]
    if not cleaned:
        raise ConfigError(f"spider argument {name}={value!r}: expected a comma-separated list")
    return cleaned


def parse_positive_int(name: str, value: str | int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"spider argument {name}={value!r}: expected a whole number") from None
    if number < 1:
        raise ConfigError(f"spider argument {name}={value!r}: must be at least 1")
    return number


def parse_categories(value: str | list[str] | tuple[str, ...]) -> tuple[str, str, str]:
    """Posts carry exactly [group, source, channel]."""
    parts = parse_list("categories", value)
    if len(parts) != 3:
        raise ConfigError(
            f"spider argument categories={value!r}: expected three values: group,source,channel"
        )
    return parts[0], parts[1], parts[2]
