"""``walship push SOURCE NAME``: archive one file (PostgreSQL's archive_command).

Rules (docs/push-fetch.md): the name must be one of the four archive file
kinds; WAL contents must match the name and the repository's cluster; the
object is created with a conditional put, so an existing object is never
replaced. If the name is taken, the same raw content is success and different
content is a ConflictError naming both digests.

A conflict (exit 3) is only ever reported after reading a stored digest that
differs from the file's. When the store answers "already exists" but holds no
object under the name (it went away in between, or the answer was about
something else, such as a lease), the create is tried once more; a second such
answer is a StorageError (exit 1), never a conflict.
"""

from __future__ import annotations

import os
import time

from .. import log, repository
from ..codec import envelope, objects
from ..errors import AlreadyExists, ConflictError, InvalidWalError, StorageError, WalshipError
from ..pg import FileKind, check_segment_header, classify, parse_long_header

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..config import Config
    from ..storage.base import Backend

MAX_TEXT_FILE = 1 << 20


class ConfirmedIdentities:
    """Repository identities a long-lived process confirmed lately (the background
    process's pushes ahead): each push checks the cluster against
    ``repository.json``, one GET, which for a small object costs about as much
    as the PUT (docs/benchmarks.md, "Draining a backlog"). A confirmation
    holds for :attr:`TTL` seconds: ``repository.json`` is create-only, so within
    that time only a repository removed and re-made by another cluster could
    answer differently, and the next check after it sees that.
    """

    TTL = 10.0

    def __init__(self) -> None:
        self._until: dict[tuple[int, int], float] = {}

    def fresh(self, mine: repository.Identity) -> bool:
        key = (mine.system_identifier, mine.wal_segment_size)
        return self._until.get(key, 0.0) > time.monotonic()

    def confirm(self, mine: repository.Identity) -> None:
        key = (mine.system_identifier, mine.wal_segment_size)
        self._until = {key: time.monotonic() + self.TTL}  # one cluster per repository


class PushResult:
    __slots__ = (
        "already",
        "key",
        "name",
        "raw_size",
        "seconds",
        "sha256",
        "stored_size",
        "system_identifier",
    )

    def __init__(self, name: str, key: str, raw_size: int, sha256: str) -> None:
        self.name = name
        self.key = key
        self.raw_size = raw_size
        self.sha256 = sha256
        self.stored_size = 0
        self.already = False
        self.seconds = 0.0
        self.system_identifier = "-"


def _digest(path: str, cfg: Config) -> tuple[int, str, bytes, list[bytes] | None]:
    """Size, SHA-256, first 8 KiB and (usually) the compressed body, in one read."""
    try:
        return envelope.file_digest_compressed(
            path, cfg.compression, cfg.compression_level, cfg.compression_threads
        )
    except FileNotFoundError:
        raise WalshipError(
            f"source file {path} does not exist",
            hint="archive_command must pass %p (path) and %f (name): walship push %p %f",
        ) from None
    except IsADirectoryError:
        raise WalshipError(f"source {path} is a directory, not a WAL file") from None
    except PermissionError:
        raise WalshipError(f"source file {path} is not readable by this user") from None


def _handed_over(pieces: list[bytes]) -> Iterator[bytes]:
    """The pieces in order, each dropped from ``pieces`` as it is handed on."""
    pieces.reverse()
    while pieces:
        yield pieces.pop()


class Prepared:
    """A file read, checked and compressed for :func:`store`: the CPU half of a push.

    The background process prepares a file before it needs the repository, so
    that its first pushes compress while the storage SDK is still loading.
    """

    __slots__ = ("body", "header", "identity", "kind", "name", "path", "result", "started")

    def __init__(
        self,
        name: str,
        kind: str,
        path: str,
        body: list[bytes] | None,
        identity: repository.Identity | None,
        result: PushResult,
        header: dict[str, object],
        started: float,
    ) -> None:
        self.name = name
        self.kind = kind
        self.path = path
        self.body = body
        self.identity = identity
        self.result = result
        self.header = header
        self.started = started


def prepare(cfg: Config, source: str, name: str) -> Prepared:
    """Read, check and compress ``source`` (archived as ``name``); no storage I/O."""
    started = time.monotonic()
    kind = classify(name)
    path = os.path.abspath(source)
    size, sha256, first, body = _digest(path, cfg)
    extra: dict[str, object] = {}
    mine = None
    if kind in (FileKind.SEGMENT, FileKind.PARTIAL):
        try:
            page = parse_long_header(first)
        except InvalidWalError as exc:  # name the file: the message goes to the server log
            raise InvalidWalError(f"{name}: {exc.message}", hint=exc.hint) from None
        check_segment_header(name, page)
        if size != page.seg_size:
            raise InvalidWalError(
                f"{name}: file is {size} bytes but its header says segments are "
                f"{page.seg_size} bytes",
                hint="the file is truncated or not a complete WAL segment",
            )
        mine = repository.Identity(page.system_identifier, page.seg_size, page.pg_version)
        extra["system_identifier"] = str(page.system_identifier)
        extra["pg_version"] = page.pg_version
    else:
        if size > MAX_TEXT_FILE:
            raise InvalidWalError(f"{name}: {size} bytes is too large for a {kind} file")
        from ..pg.history import check_text_file  # here: segments, nearly every push, skip it

        with open(path, "rb") as fh:
            check_text_file(name, kind, fh.read())

    result = PushResult(name, repository.key_for(name), size, sha256)
    result.system_identifier = str(extra.get("system_identifier", "-"))
    header = objects.new_header(name, kind, size, sha256, cfg, **extra)
    return Prepared(name, kind, path, body, mine, result, header, started)


def push(
    cfg: Config,
    backend: Backend,
    source: str,
    name: str,
    identities: ConfirmedIdentities | None = None,
) -> PushResult:
    return store(cfg, backend, prepare(cfg, source, name), identities)


def store(
    cfg: Config,
    backend: Backend,
    prepared: Prepared,
    identities: ConfirmedIdentities | None = None,
) -> PushResult:
    """The storage half of a push: identity check, conditional create, comparison."""
    name, result = prepared.name, prepared.result
    key = result.key
    mine = prepared.identity
    if mine is not None and (identities is None or not identities.fresh(mine)):
        repository.ensure_identity(backend, mine)
        if identities is not None:
            identities.confirm(mine)
    body, prepared.body = prepared.body, None  # handed over once (a retry compresses again)
    for attempt in (1, 2):
        try:
            chunks = envelope.file_chunks(prepared.path, result.raw_size)
            # handed over, not kept: while the store holds the object's bytes (a
            # remote backend joins them into one request body) this list does not
            # hold a second copy. A second attempt compresses the file again.
            compressed = _handed_over(body) if body is not None and attempt == 1 else None
            info = objects.put_object(
                cfg, backend, key, prepared.header, chunks, compressed=compressed
            )
            result.stored_size = info.size
            break
        except AlreadyExists:
            existing = objects.stored_digest(cfg, backend, key)
        if existing == result.sha256:
            result.already = True
            break
        if existing is not None:
            raise ConflictError(
                f"{name} is already archived with different content; refusing to overwrite "
                f"(archived sha256 {existing}, new sha256 {result.sha256})",
                hint="another cluster or a cloned server may be writing to this repository; "
                "investigate before changing anything",
            )
        # "exists" but nothing to compare with: the object went away in between
        # (try the create once more), or the store's answer was not about it
        if attempt == 1:
            log.warning(
                "push.recheck",
                f"the store said {name} exists but holds no object under that name; "
                "trying the create once more",
                key=key,
            )
            continue
        raise StorageError(
            f"{backend.url}/{key}: the store answered 'already exists' for {name} twice but "
            "holds no object under that name; this is not a conflict and nothing was "
            "overwritten",
            hint="the store's answer was about something else (a lease, an operation in "
            "progress): check the object in the store (docs/storage.md, 'Error mapping'); "
            "PostgreSQL retries archive_command",
        )
    if (
        cfg.index_on_push
        and prepared.kind in (FileKind.SEGMENT, FileKind.PARTIAL)
        and not result.already
    ):
        from ..index.build import index_pushed_file  # only when enabled: keeps push light

        index_pushed_file(cfg, backend, prepared.path, name, result.sha256)
    result.seconds = time.monotonic() - prepared.started
    return result


def log_result(result: PushResult) -> None:
    if result.already:
        log.info(
            "push.duplicate",
            f"{result.name} was already archived with identical content",
            sha256=result.sha256,
        )
    else:
        log.info(
            "push.done",
            f"pushed {result.name}",
            raw_size=result.raw_size,
            stored_size=result.stored_size,
            ms=round(result.seconds * 1000, 1),
        )
