"""Cutting a one-shot chunk stream into upload parts (shared by remote backends).

No SDK and no tenacity here. A part is held so that a retry can send it
again: in memory up to :data:`SPOOL_OVER` bytes, in a temporary file beyond
that, so memory stays about one part whatever the object size, and never
more than :data:`SPOOL_OVER` plus a few MiB: backends send a spooled part
from its file (:meth:`Part.body`, :meth:`Part.stream`), never as one bytes
object, and its MD5 is computed while it is spooled.

Part sizes grow: ``base * 2 ** (index // 1000)`` (capped), so the first 1000
parts use ``base``, the next 1000 twice that, and so on. With a 16 MiB base
an object up to 15.6 GiB uses 16 MiB parts only, and 10,000 parts cover
more than 5 TiB (S3's object size limit) without a huge fixed part size.
"""

from __future__ import annotations

import hashlib
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

    __slots__ = ("_file", "_md5", "data", "size")

    def __init__(
        self, data: bytes | None, file: BinaryIO | None, size: int, md5: bytes | None = None
    ) -> None:
        self.data = data
        self._file = file
        self.size = size
        self._md5 = md5

    def body(self) -> bytes | BinaryIO:
        """The part's content, rewound: call once per attempt."""
        if self.data is not None:
            return self.data
        assert self._file is not None
        self._file.seek(0)
        return self._file

    def stream(self, start: int = 0, head: bytes = b"", tail: bytes = b"") -> PartBody:
        """A request body of ``head``, the part from ``start`` on, and ``tail``."""
        return PartBody(self, start, head, tail)

    def iter_bytes(self, step: int = 1 << 20, start: int = 0) -> Iterator[bytes]:
        """The part from byte ``start`` on, in blocks of at most ``step`` bytes."""
        if self.data is not None:
            view = memoryview(self.data)
            for i in range(start, len(view), step):
                yield bytes(view[i : i + step])
            return
        assert self._file is not None
        self._file.seek(start)
        while True:
            block = self._file.read(step)
            if not block:
                return
            yield block

    def md5(self) -> bytes:
        """The part's MD5 digest (of a spooled part: computed while it was spooled)."""
        if self._md5 is None:
            h = hashlib.md5(usedforsecurity=False)
            for block in self.iter_bytes():
                h.update(block)
            self._md5 = h.digest()
        return self._md5

    def md5_hex(self) -> str:
        return self.md5().hex()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.data = None


class PartBody:
    """An HTTP request body over a part, sent from the part's file in bounded blocks.

    ``len()`` is its size, so requests sends a Content-Length (never chunked
    encoding). Every iteration starts again from the beginning: a client that
    sends the same body twice (google-auth after refreshing a token on a 401,
    a redirect) sends all of it both times. One iteration at a time.
    """

    __slots__ = ("_head", "_part", "_start", "_tail")

    def __init__(self, part: Part, start: int, head: bytes, tail: bytes) -> None:
        if not 0 <= start <= part.size:
            raise ValueError(f"start {start} outside a part of {part.size} bytes")
        self._part = part
        self._start = start
        self._head = head
        self._tail = tail

    def __len__(self) -> int:
        return len(self._head) + self._part.size - self._start + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        if self._head:
            yield self._head
        yield from self._part.iter_bytes(start=self._start)
        if self._tail:
            yield self._tail


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
        digest = hashlib.md5(usedforsecurity=False)
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
                    digest.update(chunk)
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
            spool.flush()
            return Part(None, spool, have, digest.digest())
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        return Part(data, None, have)


def md5_of(parts_md5_hex: list[str]) -> str:
    """S3's ETag of a multipart object made of parts with these MD5s."""
    h = hashlib.md5(usedforsecurity=False)
    for hx in parts_md5_hex:
        h.update(bytes.fromhex(hx))
    return f"{h.hexdigest()}-{len(parts_md5_hex)}"
