"""Writing the segment index: the push hook and ``walship index`` (backfill, join, pack)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING

from .. import log, repository
from ..codec import objects
from ..errors import AlreadyExists, IntegrityError, InvalidWalError, NotFound
from ..pg import FileKind, classify, parse_segment_name, segment_file_name
from ..pg.records import SegmentScan, read_segments, scan_segment
from .entries import (
    FORMAT,
    OBJECT_KIND,
    PACK_KIND,
    PACK_PREFIX,
    PACK_SEGMENTS,
    Entry,
    encode_loose,
    entry_from_scan,
    entry_json,
    entry_key,
)
from .load import State, join_all, list_keys, load_state, order, resolve

if TYPE_CHECKING:
    from ..config import Config
    from ..storage.base import Backend

#: how many following segments ``walship index`` reads to finish one spanning record
MAX_SPAN_SEGMENTS = 64


def write_scan(
    cfg: Config, backend: Backend, scan: SegmentScan, *, overwrite: bool = False
) -> bool:
    """Store a scan as the segment's loose index object; False if one already exists."""
    entry, xact = entry_from_scan(scan)
    raw = encode_loose(entry, xact)
    name = entry.name
    digest = hashlib.sha256(raw).hexdigest()
    header = objects.new_header(name, OBJECT_KIND, len(raw), digest, cfg, index_format=FORMAT)
    try:
        objects.put_object(
            cfg,
            backend,
            entry_key(name),
            header,
            [raw],
            mode="overwrite" if overwrite else "create",
        )
    except AlreadyExists:
        return False
    return True


# --- push-time indexing -------------------------------------------------------------


def index_pushed_file(cfg: Config, backend: Backend, path: str, name: str, sha256: str) -> None:
    """Scan a just-archived segment and store its index object (push hook).

    Never raises: the segment is already safely archived, and a missing index
    entry is repaired by ``walship index``. Problems are logged as warnings.
    """
    started = time.monotonic()
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        scan = scan_segment(data, name, sha256=sha256)
        created = write_scan(cfg, backend, scan)
        if scan.summary.end_reason and not name.endswith(".partial"):
            log.warning(
                "index.early-end",
                f"{name}: valid WAL ends before the segment end: {scan.summary.end_reason}",
                hint="run 'walship verify' on this segment",
            )
        log.debug(
            "index.pushed",
            f"indexed {name}",
            created=created,
            events=len(scan.summary.events),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
    except Exception as exc:  # the push itself succeeded: never fail it
        message = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
        log.warning(
            "index.failed",
            f"{name} was archived but not indexed: {message}",
            hint="'walship index' adds the missing index entries",
        )


# --- walship index: backfill, join, pack ----------------------------------------------


class IndexReport:
    __slots__ = (
        "entries",
        "failed",
        "packs_deleted",
        "packs_written",
        "pending",
        "scanned",
        "seconds",
    )

    def __init__(self) -> None:
        self.scanned = 0
        self.failed: list[str] = []
        self.entries = 0
        self.pending: list[str] = []
        self.packs_written = 0
        self.packs_deleted = 0
        self.seconds = 0.0


def _wal_names(backend: Backend, tli: int | None) -> list[str]:
    names = []
    for key in list_keys(backend, repository.WAL_PREFIX):
        name = repository.name_of(key)
        if name is None:
            continue
        kind = classify(name)
        if kind in (FileKind.SEGMENT, FileKind.PARTIAL) and (
            tli is None or int(name[:8], 16) == tli
        ):
            names.append(name)
    return names


def _segment_bytes(cfg: Config, backend: Backend, name: str) -> tuple[bytes, str]:
    with objects.open_object(cfg, backend, repository.key_for(name)) as obj:
        data = b"".join(obj.raw)
        return data, str(obj.header["raw_sha256"])


def _segno(name: str, seg_size: int) -> int:
    return parse_segment_name(name, seg_size).segno


def update_index(
    cfg: Config, backend: Backend, *, tli: int | None = None, rebuild: bool = False
) -> IndexReport:
    """Index every archived segment that has no index entry, then refresh the packs."""
    started = time.monotonic()
    report = IndexReport()
    identity = repository.require_identity(backend)  # no repository: an error, not "0 indexed"
    seg_size = identity.wal_segment_size
    names = sorted(_wal_names(backend, tli))
    state = load_state(cfg, backend, tli, read_loose=False)
    todo = [n for n in names if rebuild or n not in state.loose]
    for name in todo:
        try:
            data, sha = _segment_bytes(cfg, backend, name)
            scan = scan_segment(data, name, sha256=sha)
        except (InvalidWalError, IntegrityError, NotFound) as exc:
            log.warning("index.skip", f"cannot index {name}: {exc.one_line()}")
            report.failed.append(name)
            continue
        write_scan(cfg, backend, scan, overwrite=rebuild)
        report.scanned += 1
        if scan.summary.end_reason and not name.endswith(".partial"):
            log.warning(
                "index.early-end",
                f"{name}: valid WAL ends before the segment end: {scan.summary.end_reason}",
            )
        log.debug("index.scanned", f"indexed {name}", events=len(scan.summary.events))
    if rebuild:  # packs are derived from the loose objects: recompute them all
        stale = [k for ks in state.packs.values() for k, _ in ks]
        backend.delete(stale)
        report.packs_deleted += len(stale)
    state = load_state(cfg, backend, tli, read_loose=True)
    join_all(state.entries)
    _resolve_by_reading(cfg, backend, state.entries, set(names), seg_size)
    _write_packs(cfg, backend, state, report)
    report.entries = len(state.entries)
    report.pending = sorted(n for n, e in state.entries.items() if e.summary.pending)
    report.seconds = time.monotonic() - started
    return report


def _resolve_by_reading(
    cfg: Config, backend: Backend, entries: dict[str, Entry], archived: set[str], seg_size: int
) -> None:
    """Finish pending records whose continuation bytes the index did not keep."""
    for name in sorted(entries, key=lambda n: order(entries[n])):
        e = entries[name]
        if e.resolved or e.spill is None or e.partial:
            continue
        chain: list[str] = [name]
        for k in range(1, MAX_SPAN_SEGMENTS + 1):
            nxt = _successor_name(name, k, seg_size)
            if nxt not in archived:
                chain = []
                break
            chain.append(nxt)
            succ = entries.get(nxt)
            if succ is None or succ.cont is None or succ.cont.end_lsn is not None:
                break
        if len(chain) < 2:
            continue
        try:
            files = [(n, _segment_bytes(cfg, backend, n)[0]) for n in chain]
            first = next(iter(read_segments(files)))
        except (InvalidWalError, IntegrityError, NotFound):
            continue
        if not first.summary.pending:
            tail = [ev for ev in first.summary.events if ev.lsn == e.spill.lsn]
            entries[name] = resolve(e, tail[0] if tail else None)


def _successor_name(name: str, k: int, seg_size: int) -> str:
    seg = parse_segment_name(name, seg_size)
    return segment_file_name(seg.tli, seg.segno + k, seg_size)


def _write_packs(cfg: Config, backend: Backend, state: State, report: IndexReport) -> None:
    buckets: dict[tuple[int, int], list[Entry]] = {}
    for e in state.entries.values():
        s = e.summary
        buckets.setdefault((s.tli, s.segno // PACK_SEGMENTS), []).append(e)
    new_packs: dict[tuple[int, int], list[tuple[str, set[str]]]] = {}
    by_segno: dict[int, list[Entry]] = {}
    for x in state.entries.values():
        by_segno.setdefault(x.summary.segno, []).append(x)
    for bucket, group in sorted(buckets.items()):
        group.sort(key=order)
        docs = [entry_json(e, keep_cont=_keep_cont(by_segno, e)) for e in group]
        body = json.dumps(
            {"v": FORMAT, "tli": bucket[0], "entries": docs}, sort_keys=True, separators=(",", ":")
        ).encode()
        digest = hashlib.sha256(body).hexdigest()
        key = f"{PACK_PREFIX}{bucket[0]:08X}/{bucket[1]:08X}.{digest[:16]}"
        existing = state.packs.get(bucket, [])
        names = {e.name for e in group}
        if [k for k, _ in existing] == [key]:
            new_packs[bucket] = existing
            continue
        header = objects.new_header(
            f"pack-{bucket[0]:08X}-{bucket[1]:08X}",
            PACK_KIND,
            len(body),
            digest,
            cfg,
            index_format=FORMAT,
        )
        try:
            objects.put_object(cfg, backend, key, header, [body])
            report.packs_written += 1
        except AlreadyExists:
            pass
        stale = [k for k, _ in existing if k != key]
        if stale:
            backend.delete(stale)
            report.packs_deleted += len(stale)
        new_packs[bucket] = [(key, names)]
    state.packs = new_packs


def _keep_cont(by_segno: dict[int, list[Entry]], e: Entry) -> bool:
    """Whether a pack must keep ``e``'s continuation bytes for a later join."""
    if e.cont is None or e.cont.data is None:
        return False
    s = e.summary
    preds = [o for o in by_segno.get(s.segno - 1, []) if o.summary.tli <= s.tli]
    # needed while a predecessor is unresolved, or before any predecessor is indexed
    return not preds or any(not o.resolved for o in preds)
