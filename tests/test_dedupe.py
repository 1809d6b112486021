"""The sqlite dedupe store: published marks, pending articles and small state survive a reopen."""

from __future__ import annotations

import pytest
from scrapy.exceptions import NotConfigured
from scrapy.settings import Settings

from aggregator.state.sqlite import SqliteDedupeStore, dedupe_uri, open_dedupe_store


def test_published_survives_reopen(tmp_path):
    store = SqliteDedupeStore(tmp_path / "d.sqlite3")
    store.mark_published("qutoutiao-1", "output/qutoutiao-1.md")
    store.close()
    again = SqliteDedupeStore(tmp_path / "d.sqlite3")
    assert again.published_among(["qutoutiao-1", "qutoutiao-2"]) == {"qutoutiao-1"}


def test_published_among_handles_more_keys_than_sqlite_variables(tmp_path):
    store = SqliteDedupeStore(tmp_path / "d.sqlite3")
    for i in range(0, 1500, 3):
        store.mark_published(f"s-{i}", "x")
    found = store.published_among(f"s-{i}" for i in range(1500))
    assert len(found) == 500


def test_pending_is_kept_until_published(tmp_path):
    store = SqliteDedupeStore(tmp_path / "d.sqlite3")
    store.add_pending("qutoutiao", "qutoutiao-7", {"entry": {"id": "7"}}, "HTTP 500")
    store.add_pending("qutoutiao", "qutoutiao-7", {"entry": {"id": "7", "v": 2}}, "HTTP 502")
    store.add_pending("feed", "feed-1", {"entry": {}}, "x")
    assert store.pending("qutoutiao") == [("qutoutiao-7", {"entry": {"id": "7", "v": 2}})]
    store.mark_published("qutoutiao-7", "out")
    assert store.pending("qutoutiao") == []
    assert [k for k, _ in store.pending("feed")] == ["feed-1"]


def test_values_roundtrip_and_delete(tmp_path):
    store = SqliteDedupeStore(tmp_path / "d.sqlite3")
    store.set_value("feed:etag:https://x", '"abc"')
    assert store.get_value("feed:etag:https://x") == '"abc"'
    store.set_value("feed:etag:https://x", None)
    assert store.get_value("feed:etag:https://x") is None


def test_default_uri_lives_in_state_dir(tmp_path):
    settings = Settings({"STATE_DIR": str(tmp_path / "st"), "DEDUPE_URI": None})
    assert dedupe_uri(settings) == f"sqlite:///{tmp_path / 'st' / 'dedupe.sqlite3'}"


def test_store_is_chosen_by_scheme(tmp_path):
    settings = Settings(
        {
            "DEDUPE_URI": f"sqlite:///{tmp_path}/x.sqlite3",
            "DEDUPE_STORES": {"sqlite": "aggregator.state.sqlite.SqliteDedupeStore"},
        }
    )
    store = open_dedupe_store(settings)
    assert isinstance(store, SqliteDedupeStore)
    assert store.path == tmp_path / "x.sqlite3"


def test_unknown_scheme_names_the_setting():
    settings = Settings({"DEDUPE_URI": "redis://localhost/0", "DEDUPE_STORES": {"sqlite": "x"}})
    with pytest.raises(NotConfigured, match="DEDUPE_URI"):
        open_dedupe_store(settings)
