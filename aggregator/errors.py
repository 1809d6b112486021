"""Exceptions the commands turn into exit statuses."""

from __future__ import annotations

__all__ = ["ConfigError", "StateUnavailable"]


class ConfigError(ValueError):
    """A setting, spider argument or sources file is wrong; nothing should be crawled.
    The message names what is wrong and where."""


class StateUnavailable(Exception):
    """The crawl-state store (DEDUPE_URI) cannot be reached or used; the message says why."""
