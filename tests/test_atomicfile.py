"""Atomic replacement: readers see the old file or the new one, other users can read it, and a
failed write leaves neither a partial file nor a temporary one."""

from __future__ import annotations

import os
import stat
import sys
from datetime import UTC, datetime

import pytest

from aggregator.atomicfile import write_atomically
from aggregator.storage import PostRecord
from aggregator.storage.files import FilePostStorage


@pytest.mark.parametrize("fsync", [False, True])
def test_replaces_the_file_and_makes_it_readable_by_others(tmp_path, fsync):
    path = tmp_path / "last-run.json"
    path.write_bytes(b"old")
    write_atomically(path, b"new", fsync=fsync)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["last-run.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "post.md"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomically(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["post.md"]


def _interned_during(monkeypatch, write) -> list[str]:
    """The strings `sys.intern` was asked for while `write()` ran (in any thread)."""
    seen: list[str] = []
    real = sys.intern

    def counting(text: str) -> str:
        seen.append(text)
        return real(text)

    monkeypatch.setattr(sys, "intern", counting)
    write()
    monkeypatch.setattr(sys, "intern", real)
    return seen


@pytest.mark.parametrize(("fsync", "sync"), [(False, "fsync"), (True, "fsync"), (True, "syncfs")])
def test_writing_posts_interns_no_name_of_a_post(tmp_path, monkeypatch, fsync, sync):
    """pathlib interns every part of a path it parses, and the interpreter's table of interned
    strings only ever grows: a Path per post (its random temporary name, its file name) left a
    20,000-article crawl holding ~210 B per article at close (issue 14). A post's names must
    be plain strings."""
    storage = FilePostStorage(str(tmp_path / "out"), fsync=fsync, sync=sync)
    storage.open(None)  # type: ignore[arg-type]
    published = datetime(2026, 1, 1, tzinfo=UTC)
    posts = [
        PostRecord(f"post-{i:03d}", "site", "t", "https://example.com/", published, b"x")
        for i in range(20)
    ]
    single = os.path.join(tmp_path, "single.md")
    try:
        outcomes: list = []
        seen = _interned_during(monkeypatch, lambda: outcomes.extend(storage.write_batch(posts)))
        seen += _interned_during(monkeypatch, lambda: write_atomically(single, b"y", fsync=fsync))
    finally:
        storage.close(None)  # type: ignore[arg-type]
    assert [o.location for o in outcomes] == [str(tmp_path / "out" / f"{p.key}.md") for p in posts]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{p.key}.md" for p in posts]
    assert [text for text in seen if "post-" in text or "single" in text] == []
