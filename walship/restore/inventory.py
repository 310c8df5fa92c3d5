"""Read what a repository holds for restore planning: one listing, a few small objects.

Requests: ``repository.json`` (1 GET), ``retention/state.json`` (1 GET, what
``walship delete`` removed on purpose), one paginated listing of ``wal/``
(every segment, .partial, .backup and .history key), one GET per ``.history``
and per ``.backup`` object (small; read concurrently), one listing of
``basebackups/`` and one GET per walship backup manifest (parsed without its
file list), plus whatever the segment index
(:func:`walship.index.load.load_summaries`) reads. No request per segment or
per backup part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from .. import repository
from ..codec import objects
from ..errors import ContainerNotFound, NotFound, WalshipError
from ..index import load as segment_index
from ..pg import FileKind, classify, parse_segment_name, segment_file_name
from ..pg.history import parse_history
from ..pg.records import read_segments, scan_segment
from ..pg.types import SegmentSummary, WalEvent
from . import removed
from .backups import SOURCES, Backup, BackupSource, dedupe
from .planner import Inventory

if TYPE_CHECKING:
    from ..config import Config
    from ..storage.base import Backend, ObjectInfo

T = TypeVar("T")
READERS = 8


class Listing:
    """The ``wal/`` listing, split by kind."""

    def __init__(self) -> None:
        self.segments: list[tuple[str, str]] = []  # (name, key)
        self.partials: list[tuple[str, str]] = []
        self.histories: list[tuple[str, str]] = []
        self.backups: list[tuple[str, str]] = []
        self.other: list[str] = []  # keys under wal/ that are not archive files
        self.infos: list[ObjectInfo] = []
        #: listings of the other backup sources' prefixes (``basebackups/``), by prefix
        self.prefixes: dict[str, list[ObjectInfo]] = {}


def list_wal(backend: Backend) -> Listing:
    out = Listing()
    for info in backend.list(repository.WAL_PREFIX):
        out.infos.append(info)
        name = repository.name_of(info.key)
        if name is None:
            out.other.append(info.key)
            continue
        kind = classify(name)
        bucket = {
            FileKind.SEGMENT: out.segments,
            FileKind.PARTIAL: out.partials,
            FileKind.HISTORY: out.histories,
            FileKind.BACKUP: out.backups,
        }[kind]
        bucket.append((name, info.key))
    return out


def read_object(cfg: Config, backend: Backend, key: str) -> bytes:
    """Read and verify one (small) object's raw bytes."""
    with objects.open_object(cfg, backend, key) as obj:
        return b"".join(obj.raw)


def parallel(func: Callable[[str], T], keys: Sequence[str]) -> list[T | BaseException]:
    """``func`` over ``keys`` on a few threads; exceptions are returned, not raised."""

    def guarded(key: str) -> T | BaseException:
        try:
            return func(key)
        except WalshipError as exc:
            return exc
        except Exception as exc:  # a bad object must not hide the others
            return exc

    if len(keys) <= 1:
        return [guarded(k) for k in keys]
    with ThreadPoolExecutor(max_workers=min(READERS, len(keys))) as pool:
        return list(pool.map(guarded, keys))


def _message(exc: BaseException) -> str:
    if isinstance(exc, WalshipError):
        return exc.one_line()
    return f"{type(exc).__name__}: {exc}"


def load_summaries(cfg: Config, backend: Backend) -> dict[tuple[int, int], SegmentSummary]:
    """Segment summaries from the segment index, by (timeline, segment number)."""
    try:
        summaries = segment_index.load_summaries(cfg, backend)
    except NotFound:
        return {}
    return {(s.tli, s.segno): s for s in summaries}


def load_inventory(
    cfg: Config,
    backend: Backend,
    *,
    summaries: bool = True,
    sources: Sequence[BackupSource] = SOURCES,
    listing: Listing | None = None,
) -> tuple[Inventory, Listing]:
    """Build the planner's :class:`Inventory` of ``backend``.

    Raises :class:`~walship.errors.RepositoryNotFound` when there is no
    repository (no directory, bucket or container, or no ``repository.json``):
    an absent repository is never reported as an empty one.
    """
    try:
        identity = repository.read_identity(backend)
    except ContainerNotFound as exc:
        raise repository.repository_missing(backend, exc) from None
    lst = listing if listing is not None else list_wal(backend)
    if identity is None:
        if lst.segments or lst.partials:
            raise WalshipError(
                f"{backend.url}/{repository.IDENTITY_KEY} is missing but the repository holds WAL",
                hint="restore repository.json (it records the WAL segment size)",
            )
        raise repository.repository_missing(backend)
    seg_size = identity.wal_segment_size
    sysid = identity.system_identifier

    segments: dict[int, list[int]] = {}
    for name, _key in lst.segments:
        seg = parse_segment_name(name, seg_size)
        segments.setdefault(seg.tli, []).append(seg.segno)
    for segs in segments.values():
        segs.sort()
    partials: dict[int, list[int]] = {}
    for name, _key in lst.partials:
        seg = parse_segment_name(name, seg_size)
        partials.setdefault(seg.tli, []).append(seg.segno)

    histories: dict[int, Any] = {}
    history_errors: dict[int, str] = {}
    hist_keys = [key for _, key in lst.histories]
    for (name, _key), res in zip(
        lst.histories, parallel(lambda k: read_object(cfg, backend, k), hist_keys), strict=True
    ):
        tli = int(name[:8], 16)
        if isinstance(res, BaseException):
            history_errors[tli] = _message(res)
            continue
        try:
            histories[tli] = parse_history(res.decode("utf-8"), tli)
        except (WalshipError, UnicodeDecodeError) as exc:
            history_errors[tli] = _message(exc)

    backups: list[Backup] = []
    backup_errors: dict[str, str] = {}
    for source in sources:
        if source.prefix == repository.WAL_PREFIX:
            keys = [i.key for i in lst.infos if source.wants(i.key)]
        else:
            if source.prefix not in lst.prefixes:
                lst.prefixes[source.prefix] = list(backend.list(source.prefix))
            keys = [i.key for i in lst.prefixes[source.prefix] if source.wants(i.key)]

        def parse_one(key: str, source: BackupSource = source) -> Backup:
            return source.parse(key, read_object(cfg, backend, key))

        for key, parsed in zip(keys, parallel(parse_one, keys), strict=True):
            if isinstance(parsed, BaseException):
                backup_errors[key] = _message(parsed)
            else:
                backups.append(parsed)

    summary_map = load_summaries(cfg, backend) if summaries else None
    retention_state, retention_error = None, None
    try:
        retention_state = removed.load(cfg, backend)
    except WalshipError as exc:
        retention_error = exc.one_line()
    names = {name for name, _ in lst.segments}
    inv = Inventory(
        seg_size=seg_size,
        segments=segments,
        partials=partials,
        histories=histories,
        history_errors=history_errors,
        backups=dedupe(backups),
        backup_errors=backup_errors,
        summaries=summary_map,
        system_identifier=sysid,
        url=backend.url,
        load_events=lambda s: full_events(cfg, backend, s, names),
        retention=retention_state,
        retention_error=retention_error,
    )
    return inv, lst


def full_events(
    cfg: Config, backend: Backend, summary: SegmentSummary, names: set[str]
) -> tuple[WalEvent, ...]:
    """Every event of one segment: from the index (one GET), else by re-reading the segment."""
    try:
        return segment_index.load_events(cfg, backend, summary)
    except NotFound:
        return segment_events(cfg, backend, summary, names)


def segment_events(
    cfg: Config, backend: Backend, summary: SegmentSummary, names: set[str]
) -> tuple[WalEvent, ...]:
    """Every event of one segment, for a sparse index summary (commits only counted).

    Re-reads the segment with :mod:`walship.pg.records`; when a record runs
    on into the next segment, that one is read too so the record is complete.
    """
    files = [(summary.name, read_object(cfg, backend, repository.key_for(summary.name)))]
    scan = scan_segment(files[0][1], summary.name)
    if scan.spill is not None:
        tail = _next_segment(summary)
        nxt = [n for n in sorted(names, reverse=True) if n[8:] == tail]
        nxt.sort(key=lambda n: int(n[:8], 16) != summary.tli)  # same timeline first
        if nxt:
            files.append((nxt[0], read_object(cfg, backend, repository.key_for(nxt[0]))))
            scan = next(iter(read_segments(files)))
    return scan.summary.events


def _next_segment(summary: SegmentSummary) -> str:
    return segment_file_name(summary.tli, summary.segno + 1, summary.seg_size)[8:]


class DeepResult:
    def __init__(self) -> None:
        self.objects = 0
        self.raw_bytes = 0
        self.problems: list[Any] = []


def deep_check(cfg: Config, backend: Backend, lst: Listing, inv: Inventory) -> DeepResult:
    """Re-read every archive object: decode (decrypt), check size and SHA-256.

    The parts of walship backups too: each must decode and carry the digest
    its backup's manifest records.

    Also checks that each object holds the file its key names and, where the
    segment index has a digest for a segment, that it matches the object.
    """
    from .verify import ERROR, Problem

    result = DeepResult()
    entries = [*lst.segments, *lst.partials, *lst.histories, *lst.backups]
    by_key = {key: name for name, key in entries}

    def read(key: str) -> tuple[str, int, str]:
        with objects.open_object(cfg, backend, key) as obj:
            size = 0
            for chunk in obj.raw:
                size += len(chunk)
            return str(obj.header.get("raw_sha256")), size, str(obj.header.get("name"))

    keys = [key for _, key in entries]
    parts = {k: (b.name, sha) for b in inv.backups for k, _size, sha in b.parts}
    keys += sorted(parts)
    for key, res in zip(keys, parallel(read, keys), strict=True):
        if key in parts:
            backup, want = parts[key]
            result.objects += 1
            leaf = key.rsplit("/", 1)[-1]
            if isinstance(res, BaseException):
                result.problems.append(
                    Problem(ERROR, "integrity", f"backup {backup}: {_message(res)}", (backup,))
                )
            elif res[0] != want:
                result.problems.append(
                    Problem(
                        ERROR,
                        "integrity",
                        f"backup {backup}: {leaf} holds other bytes than its manifest "
                        "records (digest mismatch)",
                        (backup,),
                    )
                )
            else:
                result.raw_bytes += res[1]
            continue
        name = by_key[key]
        result.objects += 1
        if isinstance(res, BaseException):
            result.problems.append(Problem(ERROR, "integrity", f"{name}: {_message(res)}", (name,)))
            continue
        digest, size, held = res
        if held != name:
            result.problems.append(
                Problem(ERROR, "integrity", f"{name}: object holds {held}, not {name}", (name,))
            )
        result.raw_bytes += size
        if inv.summaries and classify(name) == FileKind.SEGMENT:
            seg = parse_segment_name(name, inv.seg_size)
            summary = inv.summaries.get((seg.tli, seg.segno))
            if summary is not None and summary.sha256 and summary.sha256 != digest:
                result.problems.append(
                    Problem(
                        ERROR,
                        "index",
                        f"{name}: the segment index was built from different content "
                        "(digest mismatch); rebuild it with walship index",
                        (name,),
                    )
                )
    return result
