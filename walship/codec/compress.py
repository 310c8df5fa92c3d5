"""Streaming compression: ``zstd`` (zstandard) or ``none``.

Both directions work on bounded chunks; decompression output is bounded per
read (a highly compressible chunk never expands into one huge buffer).
"""

from __future__ import annotations

import io
from collections.abc import Generator, Iterable, Iterator
from typing import Any

from ..errors import IntegrityError

CHUNK = 1 << 20
KINDS = ("zstd", "none")


def compress_stream(
    kind: str, chunks: Iterable[bytes], level: int, threads: int
) -> Generator[bytes, None, None]:
    if kind == "none":
        yield from chunks
        return
    if kind != "zstd":
        raise ValueError(f"unknown compression {kind!r}")
    import zstandard

    cobj = zstandard.ZstdCompressor(level=level, threads=threads).compressobj()
    for chunk in chunks:
        out = cobj.compress(chunk)
        if out:
            yield out
    yield cobj.flush()


class _IterReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._it = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def decompress_stream(kind: str, chunks: Iterator[bytes], where: str) -> Iterator[bytes]:
    if kind == "none":
        yield from chunks
        return
    if kind != "zstd":
        raise IntegrityError(
            f"{where}: unknown compression {kind!r}", hint="upgrade walship to read this object"
        )
    import zstandard

    source: Any = _IterReader(chunks)
    reader = zstandard.ZstdDecompressor().stream_reader(
        source, read_size=CHUNK, read_across_frames=False
    )
    try:
        while True:
            try:
                data = reader.read(CHUNK)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"{where}: corrupt compressed data ({exc})") from None
            if not data:
                return
            yield data
    finally:
        reader.close()  # type: ignore[no-untyped-call]
