"""Restore a walship base backup into a directory (``walship backup-fetch``).

What is written, in this order (docs/backups.md, "Restoring a backup"):

1. Checks that write nothing: the target directory is missing or empty, every
   tablespace location likewise, every part the manifest lists is stored at
   every path in the manifest stays inside its directory.
2. ``DIR`` (mode 0700) and the marker file :data:`MARKER`; the directories
   of the manifest (empty ones too); ``pg_tblspc/<oid>`` symbolic links to
   the tablespace's original path or its relocation (``--tablespace-map``),
   as ``pg_basebackup -Fp`` does, so no ``tablespace_map`` file is written.
3. The parts, on ``workers`` threads: each part is decoded once, as a stream
   (decryption, decompression, its size), and its bytes are written at their
   offsets into the files the manifest places there. Every file's SHA-256 is
   checked (while writing for a file held in one part; by reading it back
   for a file split across parts), which covers every byte written: the
   part's own SHA-256 is left out. A file gets its mode and mtime and is
   fsync'ed once complete (so both are durable with its bytes); its
   writeback starts while decoding goes on. Memory is bounded by the
   decoder's chunks per worker, whatever the backup's size.
4. Modes and mtimes of empty files and directories, which are then fsync'ed; a PostgreSQL-format
   ``backup_manifest`` (:mod:`walship.pg.backup_manifest`) so that
   ``pg_verifybackup`` accepts the copy; the caller's recovery settings.
5. Last, ``global/pg_control`` (written meanwhile as
   ``global/pg_control.walship-partial``) is renamed into place, then
   ``backup_label`` is written and the marker removed.

A restore that stops anywhere before step 5 (an error, kill -9, a full disk)
leaves a directory that PostgreSQL refuses to start (no ``global/pg_control``)
and that holds the marker saying why; it never looks like a good copy.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import log
from ..codec import objects
from ..errors import IntegrityError, NotFound, UsageError, WalshipError
from ..manifest import FileEntry, Manifest, backup_prefix, part_key

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ..config import Config
    from ..storage.base import Backend

#: present in DIR while a restore is under way (removed last)
MARKER = "walship-restore-incomplete"
PG_CONTROL = "global/pg_control"
PG_CONTROL_HELD = PG_CONTROL + ".walship-partial"
BACKUP_LABEL = "backup_label"
TABLESPACE_MAP = "tablespace_map"
PG_MANIFEST = "backup_manifest"
#: files written from the manifest's own fields or the recovery settings, never from
#: its file list (a backup of a standby holds standby.signal)
SPECIAL = (
    BACKUP_LABEL,
    TABLESPACE_MAP,
    PG_MANIFEST,
    MARKER,
    "recovery.signal",
    "standby.signal",
)
READ_BACK = 1 << 20


@dataclass
class Result:
    name: str
    root: str
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    tablespaces: dict[int, str] = field(default_factory=dict)
    pg_manifest: bool = False


def parse_tablespace_map(items: Iterable[str]) -> dict[str, str]:
    """``--tablespace-map OID=DIR`` / ``NAME=DIR`` flags -> {OID or NAME: absolute DIR}."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise UsageError(
                f"--tablespace-map {item!r} is not OID=DIR or NAME=DIR",
                hint="e.g. --tablespace-map 16385=/srv/ts1",
            )
        if key in out:
            raise UsageError(f"--tablespace-map names tablespace {key} twice")
        out[key] = os.path.abspath(path)
    return out


def _is_empty_dir(path: str) -> bool | None:
    """True: an empty directory; False: exists and is not; None: missing."""
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return False


def check_target(root: str, what: str = "target directory") -> None:
    state = _is_empty_dir(root)
    if state is False:
        raise UsageError(
            f"{what} {root} is not empty (or not a directory); backup-fetch restores only "
            "into an empty or missing directory",
            hint="choose another directory or empty this one",
        )
    if state is None:
        # created with its missing parents (as pg_basebackup -D does): the nearest
        # existing ancestor must be a directory this user can write in
        parent = os.path.dirname(os.path.abspath(root)) or "/"
        while not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise UsageError(f"cannot create {what} {root}: {parent} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"cannot create {what} {root}: {parent} is not writable by this user")
    elif not os.access(root, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {root} is not writable by this user")


def resolve_tablespaces(manifest: Manifest, mapping: dict[str, str], root: str) -> dict[int, str]:
    """Where each tablespace goes: its relocation, else its original path."""
    by_key: dict[str, int] = {}
    for ts in manifest.tablespaces:
        by_key[str(ts.oid)] = ts.oid
        if ts.name:
            by_key.setdefault(ts.name, ts.oid)
    out: dict[int, str] = {ts.oid: ts.path for ts in manifest.tablespaces}
    moved: set[int] = set()
    for key, path in mapping.items():
        oid = by_key.get(key)
        if oid is None:
            known = ", ".join(
                f"{ts.oid}" + (f" ({ts.name})" if ts.name else "") for ts in manifest.tablespaces
            )
            raise UsageError(
                f"--tablespace-map {key}: backup {manifest.name} has no such tablespace "
                f"(it has: {known or 'none'})",
                hint="name a tablespace by its oid or name",
            )
        if oid in moved:
            raise UsageError(f"--tablespace-map relocates tablespace {oid} twice")
        moved.add(oid)
        out[oid] = path
    seen: dict[str, int] = {}
    real_root = os.path.realpath(root)
    for oid, path in sorted(out.items()):
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(
                f"tablespaces {seen[real]} and {oid} would both be restored into {path}",
                hint="relocate one with --tablespace-map OID=DIR",
            )
        seen[real] = oid
        if real == real_root or real.startswith(real_root + os.sep):
            raise UsageError(
                f"tablespace {oid} would be restored into {path}, inside the data directory",
                hint="relocate it outside the target with --tablespace-map OID=DIR",
            )
        how = "relocation" if oid in moved else "original path (relocate it with --tablespace-map)"
        check_target(path, f"tablespace {oid}'s directory ({how})")
    return out


def _check_path(path: str, manifest: Manifest) -> None:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in path:
        raise IntegrityError(
            f"backup {manifest.name}: manifest path {path!r} is not a plain relative path; "
            "refusing to restore it"
        )


class Restore:
    """One restore of ``manifest`` into ``root`` (see the module docstring)."""

    def __init__(
        self,
        cfg: Config,
        backend: Backend,
        manifest: Manifest,
        root: str,
        *,
        tablespaces: dict[str, str] | None = None,
        workers: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.m = manifest
        self.root = os.path.abspath(root)
        self.mapping = tablespaces or {}
        self.workers = workers if workers > 0 else (os.cpu_count() or 1)
        self.progress = progress
        self.locations: dict[int, str] = {}
        self._done = 0
        self._lock = threading.Lock()
        self._started = False
        self._stop = threading.Event()

    # --- 1. checks that write nothing -------------------------------------------------

    def preflight(self) -> None:
        check_target(self.root)
        self.locations = resolve_tablespaces(self.m, self.mapping, self.root)
        oids = set(self.locations)
        for path in [*(f.path for f in self.m.files), *(d.path for d in self.m.directories)]:
            _check_path(path, self.m)
            if path.startswith("pg_tblspc/"):
                oid = path.split("/")[1]
                if not oid.isdigit() or int(oid) not in oids:
                    raise IntegrityError(
                        f"backup {self.m.name}: {path} is under pg_tblspc/ but the "
                        "manifest lists no such tablespace"
                    )
        for f in self.m.files:
            if sum(n for _p, _o, n in f.chunks) != f.size:
                raise IntegrityError(
                    f"backup {self.m.name}: manifest entry {f.path} is malformed (its chunks "
                    f"do not add up to its size {f.size})"
                )
        # presence only: a listing's sizes are not comparable across backends (the local
        # one counts its metadata header); the parts' digests are checked while reading
        stored = {i.key for i in self.backend.list(backup_prefix(self.m.name))}
        indexes = {p.index for p in self.m.parts}
        for f in self.m.files:
            for p, _o, _n in f.chunks:
                if p not in indexes:
                    raise IntegrityError(
                        f"backup {self.m.name}: manifest places {f.path} in part {p}, "
                        "which it does not list"
                    )
        for part in self.m.parts:
            key = part_key(self.m.name, part.index)
            if key not in stored:
                raise IntegrityError(
                    f"backup {self.m.name} is damaged: {self.backend.url}/{key} is missing",
                    hint="restore another backup (walship backup-list); `walship verify` "
                    "checks them all",
                )

    # --- helpers ---------------------------------------------------------------------

    def _disk(self, path: str) -> str:
        """Where a manifest path is written (pg_control is held back until the end)."""
        if path == PG_CONTROL:
            path = PG_CONTROL_HELD
        return os.path.join(self.root, path)

    def _files(self) -> list[FileEntry]:
        return [f for f in self.m.files if f.path not in SPECIAL and f.path != PG_CONTROL_HELD]

    def _advance(self, n: int) -> None:
        with self._lock:
            self._done += n
            done = self._done
        if self.progress is not None:
            self.progress(done, self.m.raw_size)

    # --- 2. layout -------------------------------------------------------------------

    def _layout(self) -> None:
        if not os.path.exists(self.root):
            os.makedirs(self.root, 0o700)
        os.chmod(self.root, 0o700)
        self._started = True
        with open(os.path.join(self.root, MARKER), "w") as fh:
            fh.write(
                f"walship backup-fetch of backup {self.m.name} is under way or was "
                "interrupted: this directory is not a usable copy (global/pg_control is "
                "written last). Remove the directory and run backup-fetch again.\n"
            )
        if self.locations:
            os.makedirs(os.path.join(self.root, "pg_tblspc"), 0o700, exist_ok=True)
        for oid, location in sorted(self.locations.items()):
            if not os.path.exists(location):
                os.makedirs(location, 0o700)
            os.symlink(location, os.path.join(self.root, "pg_tblspc", str(oid)))
        dirs = sorted({d.path for d in self.m.directories} | self._parents())
        for d in dirs:
            path = os.path.join(self.root, d)
            if not os.path.isdir(path):
                os.makedirs(path, 0o700, exist_ok=True)

    def _parents(self) -> set[str]:
        out: set[str] = set()
        for f in self.m.files:
            parent = f.path.rpartition("/")[0]
            while parent and parent not in out:
                out.add(parent)
                parent = parent.rpartition("/")[0]
        return out

    # --- 3. the parts ----------------------------------------------------------------

    def _segments(self) -> dict[int, list[tuple[int, int, int, int]]]:
        """part -> [(offset in part, length, file number, offset in file)], by offset."""
        out: dict[int, list[tuple[int, int, int, int]]] = {p.index: [] for p in self.m.parts}
        for n, f in enumerate(self.m.files):
            if f.path in SPECIAL:
                continue
            at = 0
            for part, offset, length in f.chunks:
                if length > 0:
                    out[part].append((offset, length, n, at))
                at += length
        for segs in out.values():
            segs.sort()
        return out

    def _write_part(self, index: int, segs: list[tuple[int, int, int, int]]) -> None:
        key = part_key(self.m.name, index)
        where = f"{self.backend.url}/{key}"
        files = self.m.files
        pos = 0  # offset in the part's raw bytes
        si = 0
        fd = -1
        hasher: hashlib._Hash | None = None
        written = 0
        unreported = 0
        try:
            # every byte used is checked against its file's digest (inline for a file in
            # one part, read back for a file split across parts): the part's own
            # SHA-256 would hash it all a second time
            with objects.open_object(self.cfg, self.backend, key, check_digest=False) as obj:
                for chunk in obj.raw:
                    if self._stop.is_set():
                        return  # another worker failed, or Ctrl-C: its error is raised
                    view = memoryview(chunk)
                    cpos = 0
                    while cpos < len(view):
                        if fd < 0:
                            if si >= len(segs):
                                pos += len(view) - cpos
                                break  # bytes after the last file: read on for the digest
                            offset, length, n, _at = segs[si]
                            if pos < offset:
                                skip = min(offset - pos, len(view) - cpos)
                                pos += skip
                                cpos += skip
                                continue
                            if pos > offset:
                                raise IntegrityError(
                                    f"backup {self.m.name}: manifest entries overlap in {where}"
                                )
                            f = files[n]
                            fd = os.open(
                                self._disk(f.path), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600
                            )
                            hasher = hashlib.sha256() if len(f.chunks) == 1 else None
                            written = 0
                        offset, length, n, at = segs[si]
                        take = min(length - written, len(view) - cpos)
                        piece = view[cpos : cpos + take]
                        _pwrite_all(fd, piece, at + written)
                        _start_writeback(fd, at + written, take)
                        if hasher is not None:
                            hasher.update(piece)
                        written += take
                        cpos += take
                        pos += take
                        unreported += take
                        if written == length:
                            f = files[n]
                            if hasher is not None:  # the whole file: durable now, not at the end
                                _set_attributes(fd, f)  # (made durable by the same fsync)
                                os.fsync(fd)
                            os.close(fd)
                            fd = -1
                            si += 1
                            if hasher is not None and hasher.hexdigest() != f.sha256:
                                raise IntegrityError(
                                    f"backup {self.m.name}: {f.path} restored from {where} "
                                    "does not match its digest in the manifest"
                                )
                    if unreported >= 8 << 20:
                        self._advance(unreported)
                        unreported = 0
        except NotFound:
            raise IntegrityError(
                f"backup {self.m.name} is damaged: {where} is missing",
                hint="restore another backup (walship backup-list)",
            ) from None
        finally:
            if fd >= 0:
                os.close(fd)
        self._advance(unreported)
        if si < len(segs):
            raise IntegrityError(
                f"backup {self.m.name}: {where} ends before the bytes of "
                f"{files[segs[si][2]].path} (the part is shorter than its manifest says)"
            )

    def _write_parts(
        self, segments: dict[int, list[tuple[int, int, int, int]]], split: list[FileEntry]
    ) -> None:
        """Every part written, and every file split across parts read back.

        Parts go in index order: the parts of one file are consecutive, so a
        split file is complete early, and its read-back (its digest) is queued
        as soon as its last part is written, to run while later parts are
        decoded, instead of all read-backs after the last part. The first
        error (or Ctrl-C) stops the rest, as in :meth:`_pool`.
        """
        remaining: dict[int, int] = {}  # split file -> its parts not yet written
        waiting: dict[int, list[int]] = {}  # part -> split files it holds bytes of
        for n, f in enumerate(split):
            parts = {p for p, _o, length in f.chunks if length > 0}
            remaining[n] = len(parts)
            for p in parts:
                waiting.setdefault(p, []).append(n)
        lock = threading.Lock()
        failed: list[BaseException] = []
        futures: list[Future[None]] = []
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(segments))))

        def guarded(func: Callable[..., None], *args: object) -> None:
            self._guarded(failed, func, args)

        def part(index: int) -> None:
            self._write_part(index, segments[index])
            ready: list[int] = []
            with lock:
                for n in waiting.get(index, ()):
                    remaining[n] -= 1
                    if remaining[n] == 0:
                        ready.append(n)
                for n in ready:  # queued before this part's future is done
                    futures.append(pool.submit(guarded, self._check_read_back, split[n]))

        try:
            with lock:
                futures.extend(pool.submit(guarded, part, i) for i in sorted(segments))
            done = 0
            while True:
                with lock:
                    if done == len(futures):
                        break
                    future = futures[done]
                future.result()
                done += 1
        except BaseException:
            self._stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if failed:
            raise failed[0]
        for n, k in remaining.items():  # a chunk in no listed part: still never unchecked
            if k:
                self._check_read_back(split[n])

    def _check_read_back(self, f: FileEntry) -> None:
        h = hashlib.sha256()
        with open(self._disk(f.path), "rb") as fh:
            while block := fh.read(READ_BACK):
                h.update(block)
            _set_attributes(fh.fileno(), f)  # all its bytes are written: durable with them
            os.fsync(fh.fileno())
        if h.hexdigest() != f.sha256:
            raise IntegrityError(
                f"backup {self.m.name}: {f.path} does not match its digest in the manifest"
            )

    def _guarded(
        self, failed: list[BaseException], func: Callable[..., None], args: tuple[object, ...]
    ) -> None:
        """One job: skipped once stopped; its error stops the others and is kept."""
        if self._stop.is_set():
            return
        try:
            func(*args)
        except BaseException as exc:
            self._stop.set()
            failed.append(exc)

    def _pool(self, func: Callable[..., None], jobs: list[tuple[object, ...]]) -> None:
        """Run jobs on the workers; the first error (or Ctrl-C) stops the rest.

        Running jobs see :attr:`_stop` between chunks; queued ones are cancelled.
        """
        if not jobs:
            return
        failed: list[BaseException] = []

        def guarded(args: tuple[object, ...]) -> None:
            self._guarded(failed, func, args)

        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(jobs)))
        try:
            for future in [pool.submit(guarded, job) for job in jobs]:
                future.result()
        except BaseException:
            self._stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if failed:
            raise failed[0]

    # --- the whole restore -----------------------------------------------------------

    def run(
        self,
        *,
        pg_manifest: bool = True,
        finish: Callable[[str], None] | None = None,
    ) -> Result:
        """Restore; ``finish(root)`` writes the recovery settings before pg_control."""
        started = time.monotonic()
        self.preflight()
        try:
            return self._run(started, pg_manifest, finish)
        except KeyboardInterrupt:
            if self._started:
                log.warning(
                    "backup-fetch.interrupted",
                    f"{self.root} is incomplete (marked by {MARKER}, no global/pg_control): "
                    "remove it and run backup-fetch again",
                )
            raise
        except (WalshipError, OSError) as exc:
            if not self._started:
                if isinstance(exc, OSError):
                    raise WalshipError(
                        f"cannot restore into {self.root}: {_os_message(exc)}"
                    ) from None
                raise
            why = exc.one_line() if isinstance(exc, WalshipError) else _os_message(exc)
            raise WalshipError(
                f"backup-fetch of {self.m.name} failed: {why}",
                hint=f"{self.root} is incomplete (marked by {MARKER}, no global/pg_control): "
                "remove it and run backup-fetch again",
            ) from None

    def _run(
        self,
        started: float,
        pg_manifest: bool,
        finish: Callable[[str], None] | None,
    ) -> Result:
        self._layout()
        files = self._files()
        for f in files:
            if f.size == 0:
                os.close(
                    os.open(self._disk(f.path), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
                )
                if hashlib.sha256(b"").hexdigest() != f.sha256:
                    raise IntegrityError(
                        f"backup {self.m.name}: manifest entry {f.path} is empty but has "
                        "the digest of other bytes"
                    )
        self._write_parts(self._segments(), [f for f in files if len(f.chunks) > 1])
        self._attributes(files)
        self._sync(files)
        result = Result(self.m.name, self.root, len(files), self.m.raw_size)
        result.tablespaces = dict(self.locations)
        major = self.m.pg_version // 10000 if self.m.pg_version >= 10000 else self.m.pg_version
        if pg_manifest and major >= 13:  # PostgreSQL 12 has no backup manifests
            _write_new(os.path.join(self.root, PG_MANIFEST), self.pg_manifest(), 0o600)
            result.pg_manifest = True
        if finish is not None:
            finish(self.root)
        # last: pg_control into place, backup_label, then the marker goes
        if os.path.exists(self._disk(PG_CONTROL)):
            os.rename(self._disk(PG_CONTROL), os.path.join(self.root, PG_CONTROL))
            _fsync_dir(os.path.join(self.root, "global"))
        _write_new(
            os.path.join(self.root, BACKUP_LABEL),
            self.m.backup_label.encode(),
            0o600,
            mtime=_epoch(self.m.stop_time),
        )
        os.unlink(os.path.join(self.root, MARKER))
        _fsync_dir(self.root)
        result.seconds = time.monotonic() - started
        return result

    def _attributes(self, files: list[FileEntry]) -> None:
        """Modes and mtimes of the empty files and of the directories (fsynced next,
        by :meth:`_sync`); a file with bytes got its own before its fsync."""
        for f in files:
            if f.size == 0:
                path = self._disk(f.path)
                os.chmod(path, f.mode & 0o7777)
                os.utime(path, (f.mtime, f.mtime))
        for d in sorted(self.m.directories, key=lambda d: d.path, reverse=True):
            path = os.path.join(self.root, d.path)
            if d.path.count("/") == 1 and d.path.startswith("pg_tblspc/"):
                path = self.locations.get(int(d.path.split("/")[1]), path)
            os.chmod(path, d.mode & 0o7777)

    def _sync(self, files: list[FileEntry]) -> None:
        dirs = {self.root, *(os.path.join(self.root, d.path) for d in self.m.directories)}
        dirs |= {os.path.join(self.root, p) for p in self._parents()}
        dirs |= set(self.locations.values())

        def sync_file(path: str) -> None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        # files with bytes were fsync'ed as they were completed (_write_part,
        # _check_read_back); the empty ones and the directories remain
        self._pool(sync_file, [(self._disk(f.path),) for f in files if f.size == 0])
        self._pool(sync_file, [(d,) for d in sorted(dirs)])

    def pg_manifest(self) -> bytes:
        """The restored copy's PostgreSQL-format backup_manifest."""
        from ..pg import backup_manifest

        m = self.m
        return backup_manifest.render(
            self.pg_files(),
            [(m.timeline, m.start_lsn, m.stop_lsn)],
            pg_version=m.pg_version,
            system_identifier=m.system_identifier,
        )

    def pg_files(self) -> list[tuple[str, int, float, str]]:
        """The files of the restored copy for its PostgreSQL backup_manifest."""
        out = [(f.path, f.size, f.mtime, f.sha256) for f in self._files()]
        label = self.m.backup_label.encode()
        out.append((BACKUP_LABEL, len(label), _epoch(self.m.stop_time), _sha(label)))
        return out


_SYNC_FILE_RANGE: list[Callable[[int, int, int, int], int] | None] = []


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing these bytes to disk now (Linux ``sync_file_range``, as
    PostgreSQL's own ``pg_flush_data`` does), so the fsync at the end of each
    file has little left to wait for. Elsewhere, or on any failure, nothing."""
    if not _SYNC_FILE_RANGE:
        func: Callable[[int, int, int, int], int] | None = None
        try:
            import ctypes
            import ctypes.util

            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            native = libc.sync_file_range
            native.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            native.restype = ctypes.c_int
            func = native
        except (OSError, AttributeError):
            func = None
        _SYNC_FILE_RANGE.append(func)
    func = _SYNC_FILE_RANGE[0]
    if func is not None:
        func(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE: start, do not wait


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


def _write_new(path: str, data: bytes, mode: int, mtime: float | None = None) -> None:
    tmp = path + ".walship-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        _pwrite_all(fd, memoryview(data), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.rename(tmp, path)


def _set_attributes(fd: int, f: FileEntry) -> None:
    """The manifest's mode and mtime on a complete file, before its fsync."""
    os.fchmod(fd, f.mode & 0o7777)
    os.utime(fd, (f.mtime, f.mtime))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _epoch(iso: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def _os_message(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def append_text(path: str, text: str) -> None:
    """Append ``text`` to a file (created 0600 if missing) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        _pwrite_all_append(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all_append(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def pg_ctl_for(pg_version: int) -> str | None:
    """The pg_ctl of this major version (server_version_num), or None if not found.

    Debian/Ubuntu keep it off PATH in /usr/lib/postgresql/<major>/bin, RHEL in
    /usr/pgsql-<major>/bin; else pg_config's bindir or the pg_ctl on PATH, if their
    version is that major."""
    import shutil
    import subprocess

    major = pg_version // 10000 if pg_version >= 100000 else pg_version // 100
    for bindir in (f"/usr/lib/postgresql/{major}/bin", f"/usr/pgsql-{major}/bin"):
        path = os.path.join(bindir, "pg_ctl")
        if os.access(path, os.X_OK):
            return path

    def version_of(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip()

    def same_major(text: str) -> bool:  # "pg_ctl (PostgreSQL) 15.4 (Debian ...)"
        words = text.split()
        return len(words) >= 3 and words[2].split(".")[0] == str(major)

    pg_config = shutil.which("pg_config")
    if pg_config and same_major("x " + version_of([pg_config, "--version"])):
        path = os.path.join(version_of([pg_config, "--bindir"]), "pg_ctl")
        if os.access(path, os.X_OK):
            return path
    on_path = shutil.which("pg_ctl")
    if on_path and same_major(version_of([on_path, "--version"])):
        return os.path.abspath(on_path)
    return None


#: what a config file is called in messages
CONFIG_FILE_NAMES = {
    "config_file": "postgresql.conf",
    "hba_file": "pg_hba.conf",
    "ident_file": "pg_ident.conf",
}


def start_instructions(manifest: Manifest, root: str) -> list[str]:
    """How to start the restored server: the config files the backup lacks, pg_ctl."""
    import shlex

    lines = []
    for setting, path in manifest.outside_config_files():
        lines.append(
            f"note: {CONFIG_FILE_NAMES[setting]} was {path} on the backed-up host: not part "
            f"of the backup; copy it into {root} or start with -c {setting}={path}"
        )
    major = manifest.pg_version // 10000
    pg_ctl = pg_ctl_for(manifest.pg_version)
    where = "" if pg_ctl else f" (pg_ctl of PostgreSQL {major}: not found here)"
    lines.append(
        f"start the server as its OS user: {shlex.quote(pg_ctl or 'pg_ctl')} -D "
        f"{shlex.quote(root)} start{where}"
    )
    return lines
