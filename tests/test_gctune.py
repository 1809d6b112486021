"""The garbage-collector extension: shipped on, freezes the start-up heap while a spider runs,
leaves the collector as it found it afterwards; CONCURRENT_ITEMS as shipped."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest
from scrapy import Spider, signals
from scrapy.exceptions import NotConfigured
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from aggregator import settings as project_settings
from aggregator.errors import ConfigError
from aggregator.ops.gctune import GcTuning


@pytest.fixture(autouse=True)
def _restore_gc():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def _project_settings(**overrides) -> dict:
    settings = Settings()
    settings.setmodule(project_settings, priority="project")
    values = {name: settings[name] for name in ("GC_FREEZE", "GC_THRESHOLD")}
    values.update(overrides)
    return values


def _open_and_close(crawler):
    """The extension's handlers, as connected to the crawler's signals."""
    connected = []
    connect = crawler.signals.connect
    crawler.signals.connect = lambda receiver, signal, **kw: connected.append((receiver, signal))
    try:
        extension = GcTuning.from_crawler(crawler)
    finally:
        crawler.signals.connect = connect
    assert (extension.spider_opened, signals.spider_opened) in connected
    assert (extension.spider_closed, signals.spider_closed) in connected
    spider = Spider("probe")
    extension.spider_opened(spider)
    during = (gc.get_freeze_count(), gc.get_threshold())
    extension.spider_closed(spider)
    after = (gc.get_freeze_count(), gc.get_threshold())
    return extension, during, after


def test_shipped_settings_enable_the_extension_and_one_item_at_a_time():
    assert project_settings.EXTENSIONS.get("aggregator.ops.gctune.GcTuning") is not None
    assert project_settings.GC_FREEZE is True
    assert project_settings.CONCURRENT_ITEMS == 1


def test_feed_spider_processes_a_feeds_entries_together():
    from aggregator.spiders.feed import FeedSpider

    # one response yields every entry: one at a time, each would wait for its own write
    assert FeedSpider.custom_settings["CONCURRENT_ITEMS"] >= 16


def test_freezes_while_the_spider_runs_and_unfreezes_after():
    gc.unfreeze()
    threshold = gc.get_threshold()
    crawler = get_crawler(settings_dict=_project_settings())
    _, (frozen, during_threshold), (after_frozen, after_threshold) = _open_and_close(crawler)
    assert frozen > 10_000  # the test process's modules, classes and functions at least
    assert during_threshold == (20_000, 10, 10)  # as shipped
    assert after_frozen == 0
    assert after_threshold == threshold


def test_threshold_is_set_for_the_crawl_and_restored():
    gc.set_threshold(700, 10, 10)
    crawler = get_crawler(settings_dict=_project_settings(GC_THRESHOLD="5000, 20, 30"))
    _, (_, during), (_, after) = _open_and_close(crawler)
    assert during == (5000, 20, 30)
    assert after == (700, 10, 10)


def test_unset_threshold_keeps_pythons():
    gc.set_threshold(700, 10, 10)
    crawler = get_crawler(settings_dict=_project_settings(GC_THRESHOLD=None))
    _, (frozen, during), _ = _open_and_close(crawler)
    assert frozen > 10_000
    assert during == (700, 10, 10)


def test_off_means_not_configured():
    crawler = get_crawler(settings_dict={"GC_FREEZE": False, "GC_THRESHOLD": None})
    with pytest.raises(NotConfigured):
        GcTuning.from_crawler(crawler)


@pytest.mark.parametrize("value", ["x", "1,2,3,4", "-1", [1, "a"]])
def test_bad_threshold_is_a_configuration_error(value):
    with pytest.raises(ConfigError):
        GcTuning.from_crawler(get_crawler(settings_dict={"GC_THRESHOLD": value}))


def test_bad_threshold_stops_scrapy_crawl_with_status_2(tmp_path):
    root = Path(__file__).resolve().parents[1]
    settings = [f"STATE_DIR={tmp_path / 'state'}", f"OUTPUT_URI={tmp_path / 'out'}"]
    proc = subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "qutoutiao", "-s", "GC_THRESHOLD=lots"]
        + [arg for setting in settings for arg in ("-s", setting)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "GC_THRESHOLD" in proc.stderr
