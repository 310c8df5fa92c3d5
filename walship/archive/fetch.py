"""``walship fetch NAME DEST``: restore one file (PostgreSQL's restore_command).

The output appears at DEST only complete and verified (size, SHA-256, name,
cluster): it is written to a temporary file beside DEST, fsynced and renamed.
Only an authoritative "absent" from the store, in a repository that exists
(its ``repository.json`` is there: checked only when the file is absent),
becomes :class:`~walship.errors.NotFound`; every other failure, a missing
repository included, is a real error, whose exit code fetch_error_exit decides
(walship/commands/fetch.py, ``error_exit``; docs/exit-codes.md).
"""

from __future__ import annotations

import os
import struct
import time

from ..errors import ContainerNotFound, ForeignClusterError, IntegrityError, NotFound, WalshipError
from ..pg import FileKind, classify, parse_long_header

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..codec.envelope import Background
    from ..config import Config
    from ..storage.base import Backend


def control_system_identifier(pgdata: str) -> int | None:
    """System identifier from ``global/pg_control`` (first 8 bytes), if present."""
    try:
        with open(os.path.join(pgdata, "global", "pg_control"), "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    if len(head) != 8:
        return None
    value: int = struct.unpack("<Q", head)[0]
    return value


#: bytes written between early writeback requests (see :class:`_Writeback`)
WRITEBACK_EVERY = 4 << 20


class _Writeback:
    """Starts writing the output to disk while the rest is still being decoded.

    Every :data:`WRITEBACK_EVERY` bytes, if none is running, an ``fdatasync``
    starts in a helper thread; the final ``fsync`` (always done, before the
    rename) then has little left to wait for. Durability is unchanged; the
    disk works in parallel with decompression and hashing.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = 0
        self.syncs: list[Background] = []

    def wrote(self, n: int) -> None:
        self.pending += n
        if self.pending < WRITEBACK_EVERY or (self.syncs and self.syncs[-1].running):
            return
        self.pending = 0
        from ..codec.envelope import Background

        self.syncs.append(Background(os.fdatasync, self.fd))

    def join(self) -> None:
        """Wait for the helpers; raise an error they met.

        A write-back error is reported once per open file, so the final fsync
        may not see an error an early fdatasync already consumed.
        """
        for sync in self.syncs:
            sync.wait()


class FetchResult:
    __slots__ = ("name", "raw_size", "seconds")

    def __init__(self, name: str, raw_size: int, seconds: float) -> None:
        self.name = name
        self.raw_size = raw_size
        self.seconds = seconds


def fetch(cfg: Config, backend: Backend, name: str, dest: str) -> FetchResult:
    # here, not at the top: a read-ahead claim (archive/prefetch.py) imports this
    # module for control_system_identifier only, on every spooled segment
    from .. import repository
    from ..codec import objects

    started = time.monotonic()
    kind = classify(name)
    key = repository.key_for(name)
    dest = os.path.abspath(dest)
    directory = os.path.dirname(dest)
    if not os.path.isdir(directory):
        raise WalshipError(f"destination directory {directory} does not exist")
    pgdata = cfg.pgdata or os.getcwd()
    where = f"{backend.url}/{key}"

    try:
        obj = objects.open_object(cfg, backend, key)
    except NotFound:
        # "absent" (exit 1) ends recovery: say it only when the repository is really there
        repository.require_identity(backend)
        raise
    except ContainerNotFound as exc:
        raise repository.repository_missing(backend, exc) from None
    tmp = f"{dest}.walship-tmp-{os.getpid()}"
    size = 0
    try:
        if obj.header.get("name") != name:
            raise IntegrityError(
                f"{where} holds {obj.header.get('name')!r}, not {name!r}",
                hint="the object was copied or renamed inside the repository",
            )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as out:
            writeback = _Writeback(fd)
            try:
                first = True
                for chunk in obj.raw:
                    if first and kind in (FileKind.SEGMENT, FileKind.PARTIAL):
                        _check_segment(cfg, backend, name, chunk, obj.header, pgdata, where)
                    first = False
                    out.write(chunk)
                    out.flush()
                    writeback.wrote(len(chunk))
                    size += len(chunk)
            finally:
                writeback.join()  # raises a write-back error, before the rename
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        tmp = ""
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise WalshipError(f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        obj.close()
        if tmp:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    return FetchResult(name, size, time.monotonic() - started)


def _check_segment(
    cfg: Config,
    backend: Backend,
    name: str,
    first_chunk: bytes,
    header: dict[str, object],
    pgdata: str,
    where: str,
) -> None:
    page = parse_long_header(first_chunk)
    if page.seg_size != header.get("raw_size"):
        raise IntegrityError(f"{where}: segment size does not match its page header")
    control = control_system_identifier(pgdata)
    if control is not None:
        if control != page.system_identifier:
            raise ForeignClusterError(
                f"{name} in {backend.url} is from database system {page.system_identifier}, "
                f"but the data directory {pgdata} is system {control}",
                hint="restore_command points at another cluster's repository",
            )
        return
    from .. import repository

    repo = repository.read_identity(backend)
    if repo is not None:
        repository.check_identity(
            backend,
            repo,
            repository.Identity(page.system_identifier, page.seg_size, page.pg_version),
        )
