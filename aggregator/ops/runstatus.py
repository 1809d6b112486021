"""Exit statuses, so cron can tell a good run from one that needs attention."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aggregator.ops.gctune import check_gc_settings
from aggregator.pipelines.neardup import check_near_duplicate_settings
from aggregator.render.post import post_timezone
from aggregator.state import check_state_settings
from aggregator.stats import failures
from aggregator.storage import check_output_settings

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "check_arguments",
    "check_run_settings",
    "check_settings",
    "check_spider_settings",
    "exit_status",
]

EXIT_OK = 0
EXIT_FAILED = 1  # a listing or an article failed; the rest of the run went on
EXIT_CONFIG = 2  # bad settings, arguments or sources file: nothing was crawled
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the lock


def crawler_failed(crawler: Crawler) -> bool:
    """A crawl failed when any listing or article failed, or it did not finish normally."""
    stats: dict[str, Any] = crawler.stats.get_stats() if crawler.stats else {}
    if failures(stats):
        return True
    reason = stats.get("finish_reason")
    return reason != "finished"


def exit_status(crawlers: Iterable[Crawler], bootstrap_failed: bool = False) -> int:
    if bootstrap_failed or any(crawler_failed(c) for c in crawlers):
        return EXIT_FAILED
    return EXIT_OK


def check_settings(settings: BaseSettings, spidercls: type, arguments: dict[str, Any]) -> None:
    """Settings mistakes are configuration errors found before anything starts (raises
    aggregator.errors.ConfigError): OUTPUT_URI and its backend's settings, DEDUPE_URI, POST_TIMEZONE
    and
    whatever the spider checks in its `check_settings` (e.g. the feed spider's RSSHUB_BASE)."""
    check_run_settings(settings)
    check_spider_settings(settings, spidercls, arguments)


def check_run_settings(settings: BaseSettings) -> None:
    """The settings every crawl of a run shares: where posts go, where the state is, the
    blog's time zone, the near-duplicate check (which needs the state to keep its index), the
    garbage collector's thresholds."""
    check_output_settings(settings)
    check_state_settings(settings)
    post_timezone(settings)
    check_near_duplicate_settings(settings)
    check_gc_settings(settings)


def check_spider_settings(
    settings: BaseSettings, spidercls: type, arguments: dict[str, Any]
) -> None:
    """The settings one spider needs for these arguments (its optional `check_settings`)."""
    check = getattr(spidercls, "check_settings", None)
    if check is not None:
        check(settings, arguments)


def check_arguments(spidercls: type, arguments: dict[str, Any]) -> None:
    """Let a spider reject bad `-a` arguments before anything starts (raises
    aggregator.errors.ConfigError)."""
    parse = getattr(spidercls, "parse_arguments", None)
    if parse is not None:
        parse(**arguments)
