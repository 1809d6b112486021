"""What counts as a failed run: cron alerts on it through the exit status."""

from __future__ import annotations

import pytest

from aggregator import stats as keys


def test_a_clean_run_has_no_failures():
    assert keys.failures({keys.ARTICLES_NEW: 5, keys.ARTICLES_DUPLICATE: 2}) == 0


@pytest.mark.parametrize(
    "key", [keys.LISTING_FAILED, keys.ARTICLES_FAILED, keys.S3_MANIFEST_FAILED]
)
def test_each_kind_of_failure_counts(key):
    assert keys.failures({key: 2, keys.ARTICLES_NEW: 5}) == 2


def test_failures_add_up():
    assert keys.failures({keys.LISTING_FAILED: 1, keys.S3_MANIFEST_FAILED: 1}) == 2
