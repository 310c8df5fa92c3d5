"""Push and fetch rules, on the in-memory and local backends (library level)."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest
from helpers import SEG, SYSID, make_segment, segment_name

from walship import repository
from walship.archive import fetch, push
from walship.codec import envelope
from walship.config import Config
from walship.errors import (
    AlreadyExists,
    ConflictError,
    ContainerNotFound,
    ForeignClusterError,
    IntegrityError,
    InvalidWalError,
    NotFound,
    StorageError,
)
from walship.storage import memory
from walship.storage.base import CREATE, Backend, ObjectInfo, read_all
from walship.storage.local import LocalBackend

HISTORY = b'1\t0/5000260\tat restore point "rp2"\n'
BACKUP = (
    b"START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n"
    b"STOP WAL LOCATION: 0/3000138 (file 000000010000000000000003)\n"
)


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        name = f"pf-{request.node.name}"
        memory.reset(name)
        yield memory.MemoryBackend(name)
        memory.reset(name)
    else:
        yield LocalBackend(str(tmp_path / "repo"))


@pytest.fixture
def cfg() -> Config:
    return Config(repo="mem://unused")


def put_file(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_push_then_fetch_exact_bytes(backend: Backend, cfg: Config, tmp_path: Path) -> None:
    data = make_segment(3)
    name = segment_name(3)
    result = push.push(cfg, backend, put_file(tmp_path, name, data), name)
    assert not result.already
    assert result.stored_size < len(data)
    info = backend.head(repository.key_for(name))
    assert info is not None
    assert info.metadata[envelope.META_SHA256] == result.sha256
    identity = repository.read_identity(backend)
    assert identity is not None and identity.system_identifier == SYSID
    dest = tmp_path / "out"
    fetch.fetch(cfg, backend, name, str(dest))
    assert dest.read_bytes() == data


def test_relative_paths_resolve_against_cwd(
    backend: Backend, cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datadir = tmp_path / "data"
    (datadir / "pg_wal").mkdir(parents=True)
    name = segment_name(5)
    (datadir / "pg_wal" / name).write_bytes(make_segment(5))
    monkeypatch.chdir(datadir)
    push.push(cfg, backend, f"pg_wal/{name}", name)
    fetch.fetch(cfg, backend, name, "pg_wal/RECOVERYXLOG")
    assert (datadir / "pg_wal" / "RECOVERYXLOG").read_bytes() == make_segment(5)


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        (segment_name(3), make_segment(3, payload=b"a" * 100), make_segment(3, payload=b"b" * 100)),
        ("00000002.history", HISTORY, HISTORY.replace(b"rp2", b"rp3")),
        (
            segment_name(3) + ".partial",
            make_segment(3, payload=b"a" * 10),
            make_segment(3, payload=b"c" * 10),
        ),
        ("000000010000000000000003.00000028.backup", BACKUP, BACKUP + b"LABEL: other\n"),
    ],
)
def test_duplicate_and_conflict_rules(
    backend: Backend, cfg: Config, tmp_path: Path, name: str, first: bytes, second: bytes
) -> None:
    push.push(cfg, backend, put_file(tmp_path, name, first), name)
    key = repository.key_for(name)
    stored = read_all(backend.open(key))
    again = push.push(cfg, backend, put_file(tmp_path, name, first), name)
    assert again.already
    with pytest.raises(ConflictError) as info:
        push.push(cfg, backend, put_file(tmp_path, name, second), name)
    line = info.value.one_line()
    assert "different content" in line
    assert again.sha256 in line  # both digests named
    assert info.value.exit_code == 3
    assert read_all(backend.open(key)) == stored  # untouched
    out = tmp_path / "restored"
    fetch.fetch(cfg, backend, name, str(out))
    assert out.read_bytes() == first


class PhantomExists(memory.MemoryBackend):
    """A store that answers "already exists" for ``key`` while holding no object
    under it, ``times`` times (what Azure's 409/412 about a lease looked like
    once mapped to AlreadyExists), then behaves."""

    def __init__(self, name: str, key: str, times: int) -> None:
        super().__init__(name)
        self.key = key
        self.left = times
        self.puts = 0

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        mode: str = CREATE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        if key == self.key:
            self.puts += 1
            if self.left:
                self.left -= 1
                for _ in chunks:
                    pass
                raise AlreadyExists(f"{self.url}/{key} already exists")
        return super().put(key, chunks, mode=mode, metadata=metadata)


@pytest.fixture
def phantom_name() -> Iterator[str]:
    name = "pf-phantom"
    memory.reset(name)
    yield name
    memory.reset(name)


def test_exists_without_an_object_is_not_a_conflict(
    phantom_name: str, cfg: Config, tmp_path: Path
) -> None:
    """push reports a conflict only after reading a stored digest that differs."""
    name = segment_name(3)
    backend = PhantomExists(phantom_name, repository.key_for(name), times=5)
    with pytest.raises(StorageError) as info:
        push.push(cfg, backend, put_file(tmp_path, name, make_segment(3)), name)
    assert not isinstance(info.value, ConflictError)
    assert info.value.exit_code == 1
    line = info.value.one_line()
    assert "None" not in line and "different content" not in line
    assert "not a conflict" in line and name in line
    assert backend.puts == 2  # tried the create once more, then gave up
    assert backend.head(repository.key_for(name)) is None


def test_exists_then_gone_is_created_on_the_second_try(
    phantom_name: str, cfg: Config, tmp_path: Path
) -> None:
    name = segment_name(3)
    data = make_segment(3)
    backend = PhantomExists(phantom_name, repository.key_for(name), times=1)
    result = push.push(cfg, backend, put_file(tmp_path, name, data), name)
    assert not result.already and backend.puts == 2
    out = tmp_path / "out"
    fetch.fetch(cfg, backend, name, str(out))
    assert out.read_bytes() == data


def test_identity_exists_without_an_object_is_a_clear_error(
    phantom_name: str, cfg: Config, tmp_path: Path
) -> None:
    name = segment_name(3)
    backend = PhantomExists(phantom_name, repository.IDENTITY_KEY, times=5)
    with pytest.raises(StorageError) as info:
        push.push(cfg, backend, put_file(tmp_path, name, make_segment(3)), name)
    assert repository.IDENTITY_KEY in info.value.one_line()


def test_concurrent_pushes_exactly_one_wins(backend: Backend, cfg: Config, tmp_path: Path) -> None:
    name = segment_name(7)
    sources = [
        put_file(tmp_path, f"{name}-{i}", make_segment(7, payload=bytes([i]) * 5000))
        for i in range(4)
    ]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(sources))
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        try:
            r = push.push(cfg, backend, sources[i], name)
            outcome = f"ok-{i}" if not r.already else "dup"
        except ConflictError:
            outcome = "conflict"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(sources))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o.startswith("ok")]
    assert len(winners) == 1, outcomes
    assert outcomes.count("conflict") == len(sources) - 1
    winner = int(winners[0].split("-")[1])
    out = tmp_path / "out"
    fetch.fetch(cfg, backend, name, str(out))
    assert out.read_bytes() == Path(sources[winner]).read_bytes()


def test_refuses_non_wal_and_mismatches(backend: Backend, cfg: Config, tmp_path: Path) -> None:
    name = segment_name(3)
    with pytest.raises(InvalidWalError, match="supported PostgreSQL"):
        push.push(cfg, backend, put_file(tmp_path, name, b"x" * SEG), name)
    with pytest.raises(InvalidWalError, match="truncated"):
        push.push(cfg, backend, put_file(tmp_path, name, make_segment(3)[: SEG // 2]), name)
    with pytest.raises(InvalidWalError, match="does not match the file name"):
        push.push(cfg, backend, put_file(tmp_path, name, make_segment(4)), name)
    with pytest.raises(InvalidWalError, match="history"):
        push.push(
            cfg, backend, put_file(tmp_path, "00000002.history", b"junk\n"), "00000002.history"
        )
    with pytest.raises(InvalidWalError):
        push.push(cfg, backend, put_file(tmp_path, "x", make_segment(3)), "RECOVERYXLOG")
    try:
        stored = list(backend.list(""))
    except ContainerNotFound:
        stored = []  # a local repository is created by its first successful push only
    assert stored == []


def test_foreign_cluster_refused(backend: Backend, cfg: Config, tmp_path: Path) -> None:
    push.push(cfg, backend, put_file(tmp_path, segment_name(3), make_segment(3)), segment_name(3))
    other = make_segment(4, sysid=42)
    with pytest.raises(ForeignClusterError, match="belongs to system"):
        push.push(cfg, backend, put_file(tmp_path, segment_name(4), other), segment_name(4))
    other_size = make_segment(4, seg_size=32 << 20)
    name4 = segment_name(4, seg_size=32 << 20)
    with pytest.raises(ForeignClusterError, match="segment size"):
        push.push(cfg, backend, put_file(tmp_path, name4, other_size), name4)


def test_fetch_absent_is_not_found(backend: Backend, cfg: Config, tmp_path: Path) -> None:
    push.push(cfg, backend, put_file(tmp_path, segment_name(3), make_segment(3)), segment_name(3))
    with pytest.raises(NotFound):
        fetch.fetch(cfg, backend, segment_name(4), str(tmp_path / "out"))
    with pytest.raises(NotFound):
        fetch.fetch(cfg, backend, "00000002.history", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def _corrupt(backend: Backend, key: str, mutate: object) -> None:
    data = read_all(backend.open(key))
    info = backend.head(key)
    assert info is not None and callable(mutate)
    backend.put(key, [mutate(data)], mode="overwrite", metadata=info.metadata)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[: len(d) // 2],  # truncated
        lambda d: d[:-40] + bytes(b ^ 0xFF for b in d[-40:-20]) + d[-20:],  # flipped body bytes
        lambda d: d[:20] + b"!" + d[21:],  # header damaged
        lambda d: b"not a walship object at all",
    ],
    ids=["truncated", "body-flip", "header-flip", "garbage"],
)
def test_fetch_corrupt_object_fails_and_leaves_nothing(
    backend: Backend, cfg: Config, tmp_path: Path, mutate: object
) -> None:
    name = segment_name(3)
    push.push(cfg, backend, put_file(tmp_path, name, make_segment(3)), name)
    _corrupt(backend, repository.key_for(name), mutate)
    dest = tmp_path / "out" / "RECOVERYXLOG"
    dest.parent.mkdir()
    with pytest.raises(IntegrityError):
        fetch.fetch(cfg, backend, name, str(dest))
    assert os.listdir(dest.parent) == []  # no DEST, no temp file


def test_fetch_refuses_object_stored_under_another_name(
    backend: Backend, cfg: Config, tmp_path: Path
) -> None:
    push.push(cfg, backend, put_file(tmp_path, segment_name(3), make_segment(3)), segment_name(3))
    data = read_all(backend.open(repository.key_for(segment_name(3))))
    backend.put(repository.key_for(segment_name(9)), [data])
    with pytest.raises(IntegrityError, match="not '000000010000000000000009'"):
        fetch.fetch(cfg, backend, segment_name(9), str(tmp_path / "out"))


def test_fetch_refuses_wal_of_another_cluster_than_pgdata(backend: Backend, tmp_path: Path) -> None:
    pgdata = tmp_path / "data"
    (pgdata / "global").mkdir(parents=True)
    (pgdata / "global" / "pg_control").write_bytes(struct.pack("<Q", 99) + b"\0" * 100)
    cfg = Config(repo="mem://unused", pgdata=str(pgdata))
    name = segment_name(3)
    push.push(cfg, backend, put_file(tmp_path, name, make_segment(3)), name)
    with pytest.raises(ForeignClusterError, match="another cluster"):
        fetch.fetch(cfg, backend, name, str(tmp_path / "out"))
    (pgdata / "global" / "pg_control").write_bytes(struct.pack("<Q", SYSID) + b"\0" * 100)
    fetch.fetch(cfg, backend, name, str(tmp_path / "out"))


def test_compression_none_and_mixed_repository(backend: Backend, tmp_path: Path) -> None:
    plain = Config(repo="mem://unused", compression="none")
    zstd = Config(repo="mem://unused", compression_level=3)
    push.push(plain, backend, put_file(tmp_path, segment_name(3), make_segment(3)), segment_name(3))
    push.push(zstd, backend, put_file(tmp_path, segment_name(4), make_segment(4)), segment_name(4))
    info3 = backend.head(repository.key_for(segment_name(3)))
    info4 = backend.head(repository.key_for(segment_name(4)))
    assert info3 is not None and info4 is not None
    assert info3.size > SEG > info4.size
    for segno in (3, 4):
        out = tmp_path / f"out{segno}"
        fetch.fetch(zstd, backend, segment_name(segno), str(out))
        assert out.read_bytes() == make_segment(segno)
