"""The backend contract suite: the definition of "works" for every backend.

A backend joins by providing a pytest fixture that yields a fresh, empty
backend and adding its name to BACKEND_FIXTURES in test_contract.py (or by
subclassing :class:`BackendContract` with a ``backend`` fixture).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from walship.errors import AlreadyExists, NotFound, StorageError
from walship.storage.base import Backend, read_all


class Boom(Exception):
    pass


def _failing_chunks(n: int) -> Iterator[bytes]:
    for _ in range(n):
        yield b"x" * 1000
    raise Boom("source failed mid-stream")


class BackendContract:
    """Every test gets ``backend``: a fresh, empty store."""

    def test_head_absent_is_none(self, backend: Backend) -> None:
        assert backend.head("wal/x/absent") is None

    def test_open_absent_raises_not_found(self, backend: Backend) -> None:
        with pytest.raises(NotFound):
            backend.open("wal/x/absent")

    def test_put_then_read_roundtrip_with_metadata(self, backend: Backend) -> None:
        data = os.urandom(3 * 1024 * 1024 + 17)
        chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
        info = backend.put("a/b/obj", chunks, metadata={"walship-raw-sha256": "abc", "k": "v"})
        assert info.key == "a/b/obj"
        head = backend.head("a/b/obj")
        assert head is not None
        assert head.size == len(data)
        assert head.metadata.get("walship-raw-sha256") == "abc"
        assert head.metadata.get("k") == "v"
        stream = backend.open("a/b/obj")
        assert stream.info.size == len(data)
        assert read_all(stream) == data

    def test_empty_object(self, backend: Backend) -> None:
        backend.put("empty", [])
        assert read_all(backend.open("empty")) == b""
        head = backend.head("empty")
        assert head is not None and head.size == 0

    def test_create_refuses_existing_and_keeps_original(self, backend: Backend) -> None:
        backend.put("k", [b"first"])
        with pytest.raises(AlreadyExists):
            backend.put("k", [b"second"], mode="create")
        assert read_all(backend.open("k")) == b"first"

    def test_overwrite_replaces(self, backend: Backend) -> None:
        backend.put("k", [b"first"])
        backend.put("k", [b"second"], mode="overwrite", metadata={"m": "2"})
        assert read_all(backend.open("k")) == b"second"
        head = backend.head("k")
        assert head is not None and head.metadata.get("m") == "2"

    def test_failed_source_leaves_no_object(self, backend: Backend) -> None:
        with pytest.raises((Boom, StorageError)):
            backend.put("partial/obj", _failing_chunks(5))
        assert backend.head("partial/obj") is None
        assert [i.key for i in backend.list("partial/")] == []
        # and the key is still free for a real create
        backend.put("partial/obj", [b"ok"])
        assert read_all(backend.open("partial/obj")) == b"ok"

    def test_list_sorted_lazy_prefix(self, backend: Backend) -> None:
        keys = [
            "wal/0000000100000000/000000010000000000000002",
            "wal/0000000100000000/000000010000000000000001",
            "wal/0000000100000000/000000010000000000000001.partial",
            "wal/0000000200000000/000000020000000000000001",
            "wal/history/00000002.history",
            "walx",
            "repository.json",
        ]
        for k in keys:
            backend.put(k, [k.encode()])
        assert [i.key for i in backend.list("wal/")] == sorted(
            k for k in keys if k.startswith("wal/")
        )
        assert [i.key for i in backend.list("")] == sorted(keys)
        assert [i.key for i in backend.list("wal/00000001")] == sorted(keys[:3])
        assert [i.key for i in backend.list("wal/0000000100000000/000000010000000000000001")] == [
            keys[1],
            keys[2],
        ]
        assert list(backend.list("nothing/")) == []
        it = backend.list("wal/")
        first = next(iter(it))
        assert first.key == sorted(keys)[1]

    def test_list_many_pages(self, backend: Backend) -> None:
        n = 1100  # more than one page for S3 (1000) style stores
        names = [f"many/{i:05d}" for i in range(n)]
        for k in names:
            backend.put(k, [b"."])
        assert [i.key for i in backend.list("many/")] == names

    def test_delete_batch_absent_ok(self, backend: Backend) -> None:
        for i in range(5):
            backend.put(f"d/{i}", [b"x"])
        backend.delete([f"d/{i}" for i in range(3)] + ["d/absent"])
        assert [i.key for i in backend.list("d/")] == ["d/3", "d/4"]
        backend.delete([])

    def test_concurrent_create_exactly_one_wins(self, backend: Backend) -> None:
        results: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(4)

        def writer(n: int) -> None:
            barrier.wait()
            try:
                backend.put("race", [f"writer-{n}".encode() * 1000])
                outcome = f"won-{n}"
            except AlreadyExists:
                outcome = "lost"
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [r for r in results if r.startswith("won")]
        assert len(winners) == 1, results
        n = winners[0].split("-")[1]
        assert read_all(backend.open("race")) == f"writer-{n}".encode() * 1000

    def test_stream_is_chunked(self, backend: Backend) -> None:
        data = os.urandom(5 * 1024 * 1024)
        backend.put("big", [data])
        stream = backend.open("big")
        sizes = [len(c) for c in stream]
        stream.close()
        assert sum(sizes) == len(data)
        assert max(sizes) <= 4 * 1024 * 1024
