"""Part objects of a base backup: files laid end to end, through the WAL codec.

A *job* is a list of files one worker copies in order into parts of
``part_size`` raw bytes: many small files share a part, a large file (a job of
its own) spans several. Each part is one envelope (``backup-part``): its raw
bytes are hashed while they are compressed into a bounded spool (memory up to
:data:`SPOOL_BUDGET` shared by the workers, then a temp file), because the envelope header, which
holds the raw size and digest, precedes the body; then
:func:`walship.codec.objects.put_object` stores it (encrypting it when
configured; cloud backends upload it in multipart pieces) with a create-only
put. Part numbers are taken from one counter as parts start, so they have no
gaps.

Each file is read once, exactly the size seen at the walk: a file that shrank
is padded with zeros, one that grew is cut at that size (WAL replay repairs
both); one that disappeared before it was opened is left out (pg_basebackup
does the same). With data checksums, the pages of relation files are checked
as they are read (walship/pg/checksum.py); a failing page is read once more
before it counts as corrupt (a write may have been in progress), and the
second read is what the backup keeps.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time

from ..codec import compress, objects
from ..errors import AlreadyExists, WalshipError
from ..manifest import KIND_PART, FileEntry, PartEntry, part_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from ..config import Config
    from ..storage.base import Backend
    from .files import Source

READ = 1 << 20
#: compressed bytes the workers together hold in memory before their spools move to
#: temp files (each worker gets an equal share, at least 1 MiB)
SPOOL_BUDGET = 16 << 20
MiB = 1 << 20


def effective_part_size(setting: int) -> int:
    """Parts are a whole number of MiB (so file offsets stay page-aligned)."""
    return max(MiB, setting // MiB * MiB)


def plan(files: list[Source], part_size: int) -> list[list[Source]]:
    """Jobs: each large file alone (largest first), then bundles of small files."""
    big = sorted((f for f in files if f.size >= part_size), key=lambda f: -f.size)
    jobs: list[list[Source]] = [[f] for f in big]
    bundle: list[Source] = []
    held = 0
    for f in files:
        if f.size >= part_size:
            continue
        if bundle and held + f.size > part_size:
            jobs.append(bundle)
            bundle, held = [], 0
        bundle.append(f)
        held += f.size
    if bundle:
        jobs.append(bundle)
    return jobs


class Checker:
    """Page checksum verification of relation files (when the cluster has data checksums)."""

    def __init__(self, start_lsn: int, block_size: int) -> None:
        from ..pg import checksum

        self._mod = checksum
        self.start_lsn = start_lsn
        self.block_size = block_size

    def applies(self, relpath: str) -> bool:
        return bool(self._mod.is_checksummed(relpath))

    def first_block(self, relpath: str) -> int:
        return int(self._mod.first_block(relpath, self.block_size))

    def failed(self, data: bytes | bytearray, first_blkno: int) -> list[int]:
        return list(
            self._mod.failed_blocks(bytes(data), first_blkno, self.start_lsn, self.block_size)
        )


class Progress:
    """Bytes copied so far (shared by the workers)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n


class Context:
    """What every worker of one backup shares."""

    def __init__(
        self,
        cfg: Config,
        backend: Backend,
        name: str,
        part_size: int,
        progress: Progress,
        checker: Checker | None,
        workers: int = 1,
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.name = name
        self.part_size = part_size
        self.progress = progress
        self.checker = checker
        self.spool_memory = max(MiB, SPOOL_BUDGET // max(1, workers))
        self.failed = threading.Event()  # another worker failed: stop early
        self._next = 0
        self._lock = threading.Lock()
        self.vanished: list[str] = []
        self.checksum_failures: list[dict[str, object]] = []

    def next_part(self) -> int:
        with self._lock:
            index = self._next
            self._next += 1
            return index

    def note_vanished(self, path: str) -> None:
        with self._lock:
            self.vanished.append(path)

    def note_corrupt(self, path: str, block: int) -> None:
        with self._lock:
            self.checksum_failures.append({"path": path, "block": block})


class JobResult:
    def __init__(self) -> None:
        self.files: list[FileEntry] = []
        self.parts: list[PartEntry] = []


class _Aborted(Exception):
    pass


def run_job(ctx: Context, job: list[Source]) -> JobResult:
    """Copy the files of ``job`` into as many parts as they need."""
    result = JobResult()
    stream = _file_stream(ctx, job, result)
    pending: list[tuple[FileEntry, bytes]] = []
    try:
        while True:
            if not pending:
                item = next(stream, None)
                if item is None:
                    break
                pending.append(item)
            result.parts.append(_write_part(ctx, stream, pending))
    finally:
        stream.close()
    return result


def _write_part(
    ctx: Context, stream: Iterator[tuple[FileEntry, bytes]], pending: list[tuple[FileEntry, bytes]]
) -> PartEntry:
    index = ctx.next_part()
    digest = hashlib.sha256()
    state = {"size": 0}

    def raw() -> Iterator[bytes]:
        room = ctx.part_size
        while room > 0:
            if not pending:
                item = next(stream, None)
                if item is None:
                    return
                pending.append(item)
            entry, data = pending.pop()
            if len(data) > room:
                pending.append((entry, data[room:]))
                data = data[:room]
            offset = state["size"]
            last = entry.chunks[-1] if entry.chunks else None
            if last is not None and last[0] == index and last[1] + last[2] == offset:
                entry.chunks[-1] = (index, last[1], last[2] + len(data))
            else:
                entry.chunks.append((index, offset, len(data)))
            digest.update(data)
            state["size"] += len(data)
            room -= len(data)
            yield data

    cfg = ctx.cfg
    with tempfile.SpooledTemporaryFile(max_size=ctx.spool_memory, prefix="walship-part-") as spool:
        for piece in compress.compress_stream(
            cfg.compression, raw(), cfg.compression_level, cfg.compression_threads
        ):
            spool.write(piece)
        spool.seek(0)
        key = part_key(ctx.name, index)
        header = objects.new_header(
            f"{ctx.name}/part-{index:06d}",
            KIND_PART,
            state["size"],
            digest.hexdigest(),
            cfg,
            backup=ctx.name,
        )
        try:
            info = objects.put_object(
                cfg, ctx.backend, key, header, [], compressed=_read_spool(spool)
            )
        except AlreadyExists:
            raise WalshipError(
                f"{ctx.backend.url}/{key} already exists: another backup-push is writing "
                f"backup {ctx.name}",
                hint="run one backup-push at a time per repository, then try again",
            ) from None
    return PartEntry(index, state["size"], info.size, digest.hexdigest())


def _read_spool(spool: object) -> Iterator[bytes]:
    read: Callable[[int], bytes] = spool.read  # type: ignore[attr-defined]
    while True:
        data = read(READ)
        if not data:
            return
        yield data


def _file_stream(
    ctx: Context, job: list[Source], result: JobResult
) -> Generator[tuple[FileEntry, bytes], None, None]:
    """``(entry, bytes)`` of each file in turn; each entry is complete once its bytes are."""
    for src in job:
        if ctx.failed.is_set():
            raise _Aborted
        try:
            fh = open(src.abspath, "rb", buffering=0)
        except FileNotFoundError:
            ctx.note_vanished(src.path)
            continue
        except PermissionError:
            raise WalshipError(
                f"cannot read {src.abspath}: permission denied",
                hint="run backup-push as the user that owns the data directory (usually postgres)",
            ) from None
        entry = FileEntry(src.path, src.size, src.mode, src.mtime, "", [], src.tablespace)
        result.files.append(entry)
        digest = hashlib.sha256()
        checker = ctx.checker if ctx.checker is not None and ctx.checker.applies(src.path) else None
        first = checker.first_block(src.path) if checker is not None else 0
        with fh:
            offset = 0
            while offset < src.size:
                if ctx.failed.is_set():
                    raise _Aborted
                want = min(READ, src.size - offset)
                data = fh.read(want)
                if len(data) < want:
                    data += _rest(fh, want - len(data))
                if checker is not None:
                    data = _verify(ctx, checker, fh, src.path, data, offset, first)
                digest.update(data)
                ctx.progress.add(len(data))
                offset += len(data)
                yield entry, data
        entry.sha256 = digest.hexdigest()


def _rest(fh: object, n: int) -> bytes:
    """The rest of a short read: more reads until end of file, then zeros."""
    out = b""
    read: Callable[[int], bytes] = fh.read  # type: ignore[attr-defined]
    while len(out) < n:
        data = read(n - len(out))
        if not data:
            return out + bytes(n - len(out))
        out += data
    return out


def _verify(
    ctx: Context,
    checker: Checker,
    fh: object,
    path: str,
    data: bytes,
    offset: int,
    first: int,
) -> bytes:
    bs = checker.block_size
    whole = len(data) // bs * bs
    if whole == 0:
        return data
    base = first + offset // bs
    failed = checker.failed(data[:whole] if whole != len(data) else data, base)
    if not failed:
        return data
    fd: int = fh.fileno()  # type: ignore[attr-defined]
    buf = bytearray(data)
    for block in failed:
        at = (block - base) * bs
        again = os.pread(fd, bs, offset + at)
        if len(again) < bs:
            continue  # the relation was truncated meanwhile: WAL replay truncates it too
        buf[at : at + bs] = again
        if checker.failed(again, block):
            ctx.note_corrupt(path, block)
    return bytes(buf)
