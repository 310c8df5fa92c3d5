"""The hot-path pipeline: push reads a file once (bounded memory); fetch writes back early."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from walship.codec import envelope


def _file(tmp_path: Path, size: int) -> tuple[str, bytes]:
    # half compressible, half random: several chunks, a real compressed body
    data = (b"walship " * (size // 16))[: size // 2] + os.urandom(size - size // 2)
    path = tmp_path / "f"
    path.write_bytes(data)
    return str(path), data


def _decoded(size: int, sha: str, body: list[bytes]) -> bytes:
    """What an object stored with this compressed body decodes to (digest checked)."""
    header = {
        "name": "x",
        "kind": "segment",
        "compression": "zstd",
        "raw_size": size,
        "raw_sha256": sha,
    }
    stored = b"".join(envelope.encode(header, iter(()), compressed=body))
    _, raw = envelope.decode(iter([stored]), "test")
    return b"".join(raw)


@pytest.fixture
def kept_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the background process: segments read whole, compressed in one call."""
    monkeypatch.setattr(envelope._buffers, "kept", True)


@pytest.mark.parametrize("kept", [False, True])
@pytest.mark.parametrize("threads", [0, 2])
@pytest.mark.parametrize("size", [0, 1, 8191, 8193, (3 << 20) + 5])
def test_one_pass_matches_two_passes(
    tmp_path: Path, size: int, threads: int, kept: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envelope._buffers, "kept", kept)
    path, data = _file(tmp_path, size)
    n, sha, first, body = envelope.file_digest_compressed(path, "zstd", 1, threads)
    assert (n, sha, first) == envelope.file_digest(path)
    assert sha == hashlib.sha256(data).hexdigest()
    assert body is not None
    assert _decoded(n, sha, body) == data


def test_pushes_at_once_never_share_a_read_buffer(tmp_path: Path, kept_buffers: None) -> None:
    """More pushes at once than cores: each gets its own file's digest and body
    (the whole-file buffers are shared between pushes, one at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    files = []
    for i in range(8):
        data = os.urandom(3 << 20) + bytes([i]) * (2 << 20)
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        files.append((str(path), data))

    def run(item: tuple[str, bytes]) -> bool:
        path, data = item
        for _ in range(3):
            n, sha, first, body = envelope.file_digest_compressed(path, "zstd", 1, 0, limit=8 << 20)
            assert body is not None and len(body) == 1
            if (sha, first, _decoded(n, sha, body)) != (
                hashlib.sha256(data).hexdigest(),
                data[:8192],
                data,
            ):
                return False
        return True

    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(run, files))


def test_over_the_limit_gives_no_body_but_the_right_digest(tmp_path: Path) -> None:
    path, data = _file(tmp_path, 5 << 20)
    n, sha, first, body = envelope.file_digest_compressed(path, "zstd", 1, 0, limit=1 << 20)
    assert body is None
    assert (n, sha, first) == (len(data), hashlib.sha256(data).hexdigest(), data[:8192])


def test_no_compression_streams_the_file_again(tmp_path: Path) -> None:
    path, _data = _file(tmp_path, 100_000)
    assert envelope.file_digest_compressed(path, "none", 1, 0) == (
        *envelope.file_digest(path),
        None,
    )


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        envelope.file_digest_compressed(str(tmp_path / "absent"), "zstd", 1, 0)


def test_fetch_writeback_errors_are_not_lost() -> None:
    """An fdatasync error in the early write-back helper surfaces before the rename."""
    from walship.archive import fetch

    r, w = os.pipe()  # fdatasync on a pipe fails (EINVAL)
    try:
        writeback = fetch._Writeback(w)
        writeback.wrote(fetch.WRITEBACK_EVERY)
        with pytest.raises(OSError):
            writeback.join()
    finally:
        os.close(r)
        os.close(w)


def test_hasher_hashes_every_chunk_in_order() -> None:
    chunks = [os.urandom(n) for n in (0, 1, 5000, 1 << 20, 3)] * 3
    hasher = envelope.Hasher(hashlib.sha256())
    for chunk in chunks:
        hasher.update(chunk)
    hasher.close()
    hasher.close()  # idempotent
    assert hasher.digest.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()
    with pytest.raises(ValueError):
        hasher.update(b"late")


def test_hasher_reports_its_error() -> None:
    class Broken:
        def update(self, data: bytes) -> None:
            raise RuntimeError("disk on fire")

    hasher = envelope.Hasher(Broken())
    hasher.update(b"x")
    with pytest.raises(RuntimeError, match="disk on fire"):
        hasher.update(b"y")
    with pytest.raises(RuntimeError, match="disk on fire"):
        hasher.close()


def test_ahead_yields_everything_in_order_and_raises_at_the_end() -> None:
    def source() -> Iterator[bytes]:
        yield from (bytes([i]) * (i + 1) for i in range(10))
        raise envelope.IntegrityError("truncated")

    ahead = envelope.Ahead(source())
    got = []
    with pytest.raises(envelope.IntegrityError, match="truncated"):
        for item in ahead:
            got.append(item)
    assert got == [bytes([i]) * (i + 1) for i in range(10)]
    with pytest.raises(StopIteration):
        next(ahead)


def test_ahead_close_stops_the_helper() -> None:
    produced = []

    def source() -> Iterator[bytes]:
        for i in range(1000):
            produced.append(i)
            yield b"x"

    ahead = envelope.Ahead(source(), depth=2)
    assert next(ahead) == b"x"
    ahead.close()
    time.sleep(0.05)
    assert len(produced) < 10  # it stopped instead of running to the end
    with pytest.raises(StopIteration):
        next(ahead)
