"""Keep AWS secrets out of the logs.

Scrapy logs every overridden setting when a crawler starts ("Overridden settings: {...}"), so
`-s AWS_SECRET_ACCESS_KEY=...` would land in the log, and botocore's debug log prints request
headers, session token included. A filter on the loggers that print them replaces each known
secret with `***`. Secrets come from the settings (the `RedactAwsSecrets` extension) and from
whatever the boto3 credential chain resolved (the S3 storage registers those).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

__all__ = ["RedactAwsSecrets", "redact_secrets"]

# The loggers that can print a secret: Scrapy's settings dump, botocore's request/response
# debug lines. Logger filters only see records of that very logger, hence the full names.
SENSITIVE_LOGGERS = ("scrapy.crawler", "botocore.endpoint", "botocore.parsers", "botocore.auth")
MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words


class _RedactFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if not secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_redactor = _RedactFilter()


def redact_secrets(*values: str | None) -> None:
    """From now on, print `values` as *** wherever SENSITIVE_LOGGERS would print them."""
    known = set(_redactor.secrets)
    known.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)
    # longest first, so a secret that contains another is replaced whole
    _redactor.secrets = tuple(sorted(known, key=len, reverse=True))
    for name in SENSITIVE_LOGGERS:
        target = logging.getLogger(name)
        if _redactor not in target.filters:
            target.addFilter(_redactor)


class RedactAwsSecrets:
    """Extension. Extensions are built just before Scrapy logs the overridden settings, so
    this one registers AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN in time."""

    SETTINGS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

    def __init__(self, secrets: list[str]):
        redact_secrets(*secrets)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RedactAwsSecrets:
        return cls([str(crawler.settings.get(name) or "") for name in cls.SETTINGS])
