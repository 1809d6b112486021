"""The Referer an image request carries (IMAGES_MIRROR_REFERER).

Image hosts that refuse hotlinking want to see their own article page as the Referer, so that
is the default. The setting maps a host (which also matches its subdomains; the longest match
wins; `*` is the default) to `article` (the article's URL), `none` (no Referer) or a fixed
http(s) URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from aggregator.errors import ConfigError

__all__ = ["ARTICLE", "NONE", "RefererPolicy"]

ARTICLE = "article"
NONE = "none"


class RefererPolicy:
    def __init__(self, rules: Mapping[str, str] | None = None):
        self.default = ARTICLE
        self.rules: dict[str, str] = {}
        for host, value in (rules or {}).items():
            if not isinstance(host, str) or not isinstance(value, str):
                raise ConfigError(
                    f"IMAGES_MIRROR_REFERER: {host!r}: {value!r}: hosts and values are strings"
                )
            value = value.strip()
            if value.lower() in (ARTICLE, NONE):
                value = value.lower()
            elif urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
                raise ConfigError(
                    f"IMAGES_MIRROR_REFERER[{host!r}] = {value!r}: expected 'article', 'none' "
                    "or an http(s) URL"
                )
            name = host.strip().strip(".").lower()
            if name == "*":
                self.default = value
            elif name:
                self.rules[name] = value
        # most specific first, so "img.example.com" wins over "example.com"
        self._ordered = sorted(self.rules.items(), key=lambda rule: -len(rule[0]))

    def rule_for(self, host: str) -> str:
        host = host.lower()
        for name, value in self._ordered:
            if host == name or host.endswith("." + name):
                return value
        return self.default

    def referer(self, image_url: str, article_url: str) -> str | None:
        """The Referer header for `image_url` of the article at `article_url`, or None."""
        try:
            host = urlsplit(image_url).hostname or ""
        except ValueError:
            host = ""
        rule = self.rule_for(host)
        if rule == NONE:
            return None
        if rule == ARTICLE:
            return article_url if article_url.startswith(("http://", "https://")) else None
        return rule
