"""The local backend removes directories a delete empties, and a concurrent put whose
directory vanished between its makedirs and its create makes it again."""

from __future__ import annotations

import os
import threading
from typing import Any

from walship.storage.local import LocalBackend

SEG_A = "wal/0000000100000000/000000010000000000000001"
SEG_B = "wal/0000000100000000/000000010000000000000002"


def _put(backend: LocalBackend, key: str) -> None:
    backend.put(key, [key.encode()])


def test_delete_removes_emptied_directories(tmp_path: Any) -> None:
    root = str(tmp_path)
    backend = LocalBackend(root)
    _put(backend, SEG_A)
    _put(backend, SEG_B)
    _put(backend, "basebackups/20261202T000000Z/part-000000")
    backend.delete([SEG_A])
    assert os.path.isdir(os.path.join(root, "wal", "0000000100000000"))  # SEG_B is there
    backend.delete([SEG_B, "basebackups/20261202T000000Z/part-000000"])
    assert not os.path.exists(os.path.join(root, "wal", "0000000100000000"))
    assert not os.path.exists(os.path.join(root, "basebackups", "20261202T000000Z"))
    # the top-level directories and the root stay
    assert os.path.isdir(os.path.join(root, "wal")) and os.path.isdir(root)
    assert list(backend.list("wal/")) == []
    # and a later put recreates the directory
    _put(backend, SEG_A)
    assert [i.key for i in backend.list("wal/")] == [SEG_A]


class _DeleteInTheWindow(LocalBackend):
    """A real delete runs right after the put's makedirs, before its create: the
    directory it just made (empty again) is removed under it."""

    def __init__(self, root: str, victim: str) -> None:
        super().__init__(root)
        self.victim = victim
        self.fired = 0

    def _makedirs(self, directory: str) -> None:
        super()._makedirs(directory)
        if not self.fired:
            self.fired += 1
            LocalBackend(self.root).delete([self.victim])
            assert not os.path.isdir(directory)


def test_put_recreates_a_directory_removed_under_it(tmp_path: Any) -> None:
    root = str(tmp_path)
    _put(LocalBackend(root), SEG_A)
    racing = _DeleteInTheWindow(root, SEG_A)
    _put(racing, SEG_B)
    assert racing.fired == 1
    assert [i.key for i in LocalBackend(root).list("wal/")] == [SEG_B]
    with LocalBackend(root).open(SEG_B) as obj:
        assert b"".join(obj) == SEG_B.encode()


def test_concurrent_puts_and_deletes_lose_nothing(tmp_path: Any) -> None:
    """Pushes into one directory while another thread deletes what is there: every
    put succeeds and every object it stored after the last delete is listed."""
    root = str(tmp_path)
    backend = LocalBackend(root)
    errors: list[BaseException] = []
    stop = threading.Event()

    def deleter() -> None:
        while not stop.is_set():
            try:
                LocalBackend(root).delete([i.key for i in LocalBackend(root).list("wal/")][:-1])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    t = threading.Thread(target=deleter)
    t.start()
    try:
        for i in range(300):
            _put(backend, f"wal/0000000100000000/0000000100000000{i:08X}")
    finally:
        stop.set()
        t.join()
    assert not errors
    last = f"wal/0000000100000000/0000000100000000{299:08X}"
    assert last in {i.key for i in backend.list("wal/")}
