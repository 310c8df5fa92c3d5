"""Cutting a one-shot chunk stream into upload parts (shared by remote backends).

No SDK and no tenacity here. A part is held so that a retry can send it
again: in memory up to :data:`SPOOL_OVER` bytes, in a temporary file beyond
that, so memory stays about one part whatever the object size.

Part sizes grow: ``base * 2 ** (index // 1000)`` (capped), so the first 1000
parts use ``base``, the next 1000 twice that, and so on. With a 16 MiB base
an object up to 15.6 GiB uses 16 MiB parts only, and 10,000 parts cover
more than 5 TiB (S3's object size limit) without a huge fixed part size.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO

SPOOL_OVER = 64 << 20
GROW_EVERY = 1000


def part_size(base: int, index: int, cap: int) -> int:
    """Size of the part with 0-based ``index``."""
    return int(min(cap, base * (2 ** (index // GROW_EVERY))))


def capacity(base: int, parts: int, cap: int) -> int:
    """Bytes that ``parts`` parts of the growing scheme can hold."""
    return sum(part_size(base, i, cap) for i in range(parts))


class Part:
    """One buffered part: ``data`` (bytes) or a spooled file, plus its MD5."""

    __slots__ = ("_file", "data", "size")

    def __init__(self, data: bytes | None, file: BinaryIO | None, size: int) -> None:
        self.data = data
        self._file = file
        self.size = size

    def body(self) -> bytes | BinaryIO:
        """The part's content, rewound: call once per attempt."""
        if self.data is not None:
            return self.data
        assert self._file is not None
        self._file.seek(0)
        return self._file

    def iter_bytes(self, step: int = 1 << 20) -> Iterator[bytes]:
        if self.data is not None:
            view = memoryview(self.data)
            for i in range(0, len(view), step):
                yield bytes(view[i : i + step])
            return
        assert self._file is not None
        self._file.seek(0)
        while True:
            block = self._file.read(step)
            if not block:
                return
            yield block

    def md5_hex(self) -> str:
        h = hashlib.md5(usedforsecurity=False)
        for block in self.iter_bytes():
            h.update(block)
        return h.hexdigest()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.data = None


class PartReader:
    """Read parts of requested sizes from a chunk iterable consumed once."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._leftover = b""
        self.exhausted = False
        self.total = 0

    def read(self, size: int) -> Part:
        """The next part of up to ``size`` bytes (short only at the end)."""
        pieces: list[bytes] = []
        have = 0
        spool: BinaryIO | None = None
        if size > SPOOL_OVER:
            spool = tempfile.TemporaryFile(prefix="walship-part-")
        try:
            while have < size:
                if self._leftover:
                    chunk, self._leftover = self._leftover, b""
                else:
                    try:
                        chunk = next(self._it)
                    except StopIteration:
                        self.exhausted = True
                        break
                if not chunk:
                    continue
                room = size - have
                if len(chunk) > room:
                    chunk, self._leftover = chunk[:room], chunk[room:]
                if spool is not None:
                    spool.write(chunk)
                else:
                    pieces.append(bytes(chunk))
                have += len(chunk)
            if have == size and not self._leftover and not self.exhausted:
                # peek: is there more? (so a source of exactly one part is a single PUT)
                try:
                    while not self._leftover:
                        self._leftover = bytes(next(self._it))
                except StopIteration:
                    self.exhausted = True
        except BaseException:
            if spool is not None:
                spool.close()
            raise
        self.total += have
        if spool is not None:
            return Part(None, spool, have)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        return Part(data, None, have)


def md5_of(parts_md5_hex: list[str]) -> str:
    """S3's ETag of a multipart object made of parts with these MD5s."""
    h = hashlib.md5(usedforsecurity=False)
    for hx in parts_md5_hex:
        h.update(bytes.fromhex(hx))
    return f"{h.hexdigest()}-{len(parts_md5_hex)}"


def as_stream(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)
