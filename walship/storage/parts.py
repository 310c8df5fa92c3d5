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

import bisect
import hashlib
import io
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

SPOOL_OVER = 64 << 20
GROW_EVERY = 1000


def part_size(base: int, index: int, cap: int) -> int:
    """Size of the part with 0-based ``index``."""
    return int(min(cap, base * (2 ** (index // GROW_EVERY))))


def capacity(base: int, parts: int, cap: int) -> int:
    """Bytes that ``parts`` parts of the growing scheme can hold."""
    return sum(part_size(base, i, cap) for i in range(parts))


class Part:
    """One buffered part: in-memory pieces or a spooled file, plus its MD5.

    The pieces are kept as they came (an object's header and its body, say):
    joining them would copy the whole part once more, into fresh pages (~4 ms
    and 7 MiB per mixed WAL segment, docs/benchmarks.md). :meth:`body` reads
    them in place; :attr:`data` joins them for an SDK that wants one bytes.
    """

    __slots__ = ("_file", "_md5", "_pieces", "size")

    def __init__(
        self,
        pieces: list[bytes] | None,
        file: BinaryIO | None,
        size: int,
        md5: bytes | None = None,
    ) -> None:
        self._pieces = pieces
        self._file = file
        self.size = size
        self._md5 = md5

    @property
    def in_memory(self) -> bool:
        return self._pieces is not None

    @property
    def data(self) -> bytes | None:
        """The in-memory part as one bytes (joined once), or None when spooled."""
        if self._pieces is None:
            return None
        if len(self._pieces) != 1:
            self._pieces = [b"".join(self._pieces)]
        return self._pieces[0]

    def body(self) -> bytes | BinaryIO:
        """The part's content, rewound: call once per attempt. A part of several
        pieces is a seekable reader over them (with ``len()``), not a join."""
        if self._pieces is not None:
            if len(self._pieces) == 1:
                return self._pieces[0]
            return PiecesReader(self._pieces)  # type: ignore[return-value]  # a binary file
        assert self._file is not None
        self._file.seek(0)
        return self._file

    def stream(self, start: int = 0, head: bytes = b"", tail: bytes = b"") -> PartBody:
        """A request body of ``head``, the part from ``start`` on, and ``tail``."""
        return PartBody(self, start, head, tail)

    def iter_bytes(self, step: int = 1 << 20, start: int = 0) -> Iterator[bytes]:
        """The part from byte ``start`` on, in blocks of at most ``step`` bytes."""
        if self._pieces is not None:
            reader = PiecesReader(self._pieces)
            reader.seek(start)
            while block := reader.read(step):
                yield block
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
            for block in self._pieces if self._pieces is not None else self.iter_bytes():
                h.update(block)
            self._md5 = h.digest()
        return self._md5

    def md5_hex(self) -> str:
        return self.md5().hex()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._pieces = None


class PiecesReader(io.RawIOBase):
    """A read-only, seekable file over a list of bytes, read in place.

    What an SDK gets for a part of several pieces: botocore sizes a body by
    ``len()`` (or seek and tell), hashes it by reading it and sends it in
    blocks, so a reader serves it as well as one bytes would, without a copy
    of the whole part.
    """

    def __init__(self, pieces: list[bytes]) -> None:
        super().__init__()
        self._views = [memoryview(p) for p in pieces]
        self._starts: list[int] = []
        total = 0
        for view in self._views:
            self._starts.append(total)
            total += len(view)
        self._size = total
        self._pos = 0

    def __len__(self) -> int:
        return self._size - self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        left = self._size - self._pos
        n = left if size is None or size < 0 else min(size, left)
        out: list[memoryview] = []
        while n > 0:
            index = bisect.bisect_right(self._starts, self._pos) - 1  # the piece at _pos
            view = self._views[index]
            offset = self._pos - self._starts[index]
            take = min(n, len(view) - offset)
            out.append(view[offset : offset + take])
            self._pos += take
            n -= take
        if len(out) == 1:
            return out[0].tobytes()
        return b"".join(out)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


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
        return Part(pieces, None, have)


def md5_of(parts_md5_hex: list[str]) -> str:
    """S3's ETag of a multipart object made of parts with these MD5s."""
    h = hashlib.md5(usedforsecurity=False)
    for hx in parts_md5_hex:
        h.update(bytes.fromhex(hx))
    return f"{h.hexdigest()}-{len(parts_md5_hex)}"
