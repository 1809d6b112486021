"""Atomic replacement: readers see the old file or the new one, other users can read it, and a
failed write leaves neither a partial file nor a temporary one."""

from __future__ import annotations

import stat

import pytest

from aggregator.atomicfile import write_atomically


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
