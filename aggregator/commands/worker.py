"""`scrapy worker`: serve the cluster's queues (CLUSTER_URI) until stopped.

Exit statuses: 0 stopped (SIGTERM/Ctrl-C: requests not started stay queued, those in flight
finish; or idle for --until-idle seconds), 1 Redis unreachable at start, 2 bad settings."""

from __future__ import annotations

import argparse
import sys

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from aggregator.cluster.connect import check_cluster_settings, cluster_server
from aggregator.cluster.worker import ClusterWorker
from aggregator.errors import ConfigError, StateUnavailable
from aggregator.ops.runstatus import EXIT_CONFIG, EXIT_FAILED, check_run_settings


class Command(ScrapyCommand):
    requires_project = True

    def syntax(self) -> str:
        return "[--until-idle SECONDS] [options]"

    def short_desc(self) -> str:
        return "Serve the cluster's queues (CLUSTER_URI): crawl what the coordinator queued"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--until-idle",
            type=float,
            metavar="SECONDS",
            help="stop after this many seconds with nothing to do",
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if args:
            raise UsageError("worker takes no arguments")
        assert self.settings is not None and self.crawler_process is not None
        if opts.until_idle is not None and opts.until_idle < 0:
            raise UsageError("--until-idle takes a number of seconds, 0 or more")
        try:
            check_cluster_settings(self.settings)
            check_run_settings(self.settings)
            server = cluster_server(self.settings)
        except ConfigError as exc:
            print(f"scrapy worker: {exc}", file=sys.stderr)
            self.exitcode = EXIT_CONFIG
            return
        except StateUnavailable as exc:
            print(f"scrapy worker: {exc}", file=sys.stderr)
            self.exitcode = EXIT_FAILED
            return
        ClusterWorker(
            self.crawler_process, self.settings, server, until_idle=opts.until_idle
        ).start()
