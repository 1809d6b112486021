"""`scrapy demo`: the whole pipeline on bundled sample data, with no network.

A replay server on a free local port serves the sample 趣头条 listing and articles (the format
contract's reference article among them); the qutoutiao spider crawls it and the posts land in
OUTPUT_URI (default `output/`). The demo keeps its own dedupe store, started afresh each time,
so it always shows every post being written and never marks anything in the real store.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scrapy.commands import ScrapyCommand

from aggregator.devtools.replay import ReplayServer
from aggregator.ops.runstatus import exit_status
from aggregator.state import state_dir

DEMO_DATA = Path(__file__).resolve().parent.parent / "data" / "demo"


def demo_cids() -> list[str]:
    """The cids the sample data has listings for."""
    names = sorted(DEMO_DATA.glob("outList-cid-*-page-1.json"))
    return [name.name.split("-")[2] for name in names]


class Command(ScrapyCommand):
    requires_project = True

    def short_desc(self) -> str:
        return "Crawl bundled sample data from a local replay server into output/"

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None and self.crawler_process is not None
        db = state_dir(self.settings) / "demo.sqlite3"
        for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            stale.unlink(missing_ok=True)
        with ReplayServer(DEMO_DATA) as server:
            overrides = {
                "QUTOUTIAO_API_BASE": server.base_url,
                "DEDUPE_URI": f"sqlite:///{db}",
                "AUTOTHROTTLE_ENABLED": False,
            }
            for name, value in overrides.items():
                self.settings.set(name, value, priority="cmdline")
            crawler = self.crawler_process.create_crawler("qutoutiao")
            self.crawler_process.crawl(crawler, cid=",".join(demo_cids()))
            self.crawler_process.start()
        self.exitcode = exit_status([crawler], self.crawler_process.bootstrap_failed)
        stats = crawler.stats.get_stats()
        summary = {k: v for k, v in stats.items() if k.startswith("aggregator/")}
        print(json.dumps(summary, indent=2, ensure_ascii=False, sort_keys=True))
        print(f"Posts written to {self.settings.get('OUTPUT_URI')}/")
