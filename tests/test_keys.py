"""Article keys: one key per article, safe as a file name, never from the title."""

from __future__ import annotations

import pytest

from aggregator.keys import article_key, canonical_url, is_safe_key

TRACKING = ["utm_source", "utm_medium", "from", "spm"]


def test_key_from_site_and_listing_id():
    assert article_key("qutoutiao", "58837411") == "qutoutiao-58837411"


def test_same_id_in_two_channels_is_one_key():
    a = article_key("qutoutiao", "1001", "http://x/detail/1001.html?from=a")
    b = article_key("qutoutiao", "1001", "http://x/detail/1001.html?from=b&utm_source=wx")
    assert a == b


def test_url_key_ignores_tracking_parameters_and_order():
    a = article_key("feed", None, "https://ex.com/a?id=3&utm_source=rss&spm=1.2", TRACKING)
    b = article_key("feed", None, "https://ex.com/a?spm=9&id=3#comments", TRACKING)
    c = article_key("feed", None, "https://ex.com/a?id=4", TRACKING)
    assert a == b
    assert a != c
    assert a.startswith("feed--url-")


def test_canonical_url_keeps_identifying_parameters():
    assert canonical_url("https://ex.com/p?b=2&a=1&utm_medium=x", TRACKING) == (
        "https://ex.com/p?a=1&b=2"
    )


@pytest.mark.parametrize(
    "raw_id",
    ["../../etc/passwd", "a/b", "标题", "x" * 200, "id with space", ".hidden", "-rf"],
)
def test_unsafe_ids_are_hashed_into_safe_keys(raw_id):
    key = article_key("feed", raw_id)
    assert key.startswith("feed--id-")
    assert is_safe_key(key)
    assert "/" not in key and ".." not in key
    assert key == article_key("feed", raw_id)  # stable


def test_id_and_url_keys_never_collide():
    assert article_key("feed", "https://ex.com/a") != article_key("feed", None, "https://ex.com/a")


@pytest.mark.parametrize("site", ["Qutoutiao", "a/b", "", "x" * 40])
def test_bad_site_names_are_refused(site):
    with pytest.raises(ValueError):
        article_key(site, "1")


def test_article_without_id_or_url_is_refused():
    with pytest.raises(ValueError, match="neither an id nor a URL"):
        article_key("qutoutiao", None, None)


@pytest.mark.parametrize("key", ["../x", "qutoutiao-a/b", "QUT-1", "qutoutiao-..", "x"])
def test_is_safe_key_refuses_paths(key):
    assert not is_safe_key(key)
