"""The local store makes durable what a create answered "already exists" about.

A push that finds its object already stored (the background process pushed it
and was killed between its link and its fsync of the directory, say) may then
be acknowledged as "identical content": the object and its directory entry
must be on disk by then, whoever wrote them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from walship.errors import AlreadyExists
from walship.storage.local import LocalBackend


def test_already_exists_fsyncs_the_object_and_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalBackend(str(tmp_path / "repo"))
    backend.put("wal/0000000100000000/000000010000000000000001", [b"first"])
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:  # records what is fsynced, then fsyncs it
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    with pytest.raises(AlreadyExists):
        backend.put("wal/0000000100000000/000000010000000000000001", [b"second"])
    directory = tmp_path / "repo" / "wal" / "0000000100000000"
    assert str(directory / "000000010000000000000001") in synced
    assert str(directory) in synced
    with backend.open("wal/0000000100000000/000000010000000000000001") as stream:
        assert b"".join(stream) == b"first"  # untouched
    assert [p.name for p in directory.iterdir()] == ["000000010000000000000001"]
