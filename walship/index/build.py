"""The segment index: per-segment WAL summaries stored in the repository.

Planning a restore needs to know which segment holds the first commit after a
time, a given xid or a named restore point, without downloading the archive.
``walship index`` (and, with ``index_on_push``, every ``walship push``) reads
segments with :mod:`walship.walreader` and stores what it found::

    index/<TLI+log, 16 hex>/<segment>        one "loose" object per segment
    index/packs/<TLI 8 hex>/<bucket 8 hex>.<digest 16 hex>
                                             sparse entries of up to
                                             PACK_SEGMENTS segments

Every object is an envelope (compressed, encrypted like the WAL it describes).
A loose object holds a JSON entry (the SegmentSummary fields, the events that
are not commits/aborts, the xact_* statistics and the bytes needed to join a
record that crosses into the next segment) followed by the segment's
commit/abort events in compact columns. A pack holds only JSON entries, so
loading a summary of every segment costs one listing of ``index/`` plus one
GET per pack (and one per loose object not yet packed).

Summaries returned by :func:`load_summaries` are *sparse*: ``events`` leaves
out the commit/abort records (``XACT_END_KINDS``), which are described by the
``xact_*`` fields; :func:`load_events` reads one segment's full list. The one
exception is the event of a record that starts in the segment and ends in the
next: it is always in ``events`` (whatever its kind) once joined.

Index objects are derived data: they can be deleted and rebuilt
(``walship index --rebuild``) at any time.
"""

from __future__ import annotations

import array
import base64
import hashlib
import json
import struct
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import log
from .archive import layout, objects
from .errors import AlreadyExists, ContainerNotFound, IntegrityError, InvalidWalError, NotFound
from .wal import FileKind, classify, parse_segment_name
from .walreader import Continuation, SegmentScan, Spill, join, read_segments, scan_segment
from .waltypes import XACT_END_KINDS, SegmentSummary, WalEvent

if TYPE_CHECKING:
    from .config import Config
    from .storage.base import Backend

INDEX_PREFIX = "index/"
PACK_PREFIX = "index/packs/"
PACK_SEGMENTS = 1024
FORMAT = 1
OBJECT_KIND = "wal-index"
PACK_KIND = "wal-index-pack"
READERS = 8
#: how many following segments ``walship index`` reads to finish one spanning record
MAX_SPAN_SEGMENTS = 64

_XACT_CODES = ("commit", "abort", "commit_prepared", "abort_prepared")
_XACT_CODE = {k: i for i, k in enumerate(_XACT_CODES)}
_SUMMARY_FIELDS = tuple(f for f in SegmentSummary._fields if f not in ("events", "sparse"))


def entry_key(name: str) -> str:
    """Key of a segment's (or .partial's) loose index object."""
    kind = classify(name)
    if kind not in (FileKind.SEGMENT, FileKind.PARTIAL):
        raise InvalidWalError(f"{name} is not a WAL segment name")
    return f"{INDEX_PREFIX}{name[:16]}/{name}"


def _name_of(key: str) -> str | None:
    if not key.startswith(INDEX_PREFIX) or key.startswith(PACK_PREFIX):
        return None
    name = key.rsplit("/", 1)[-1]
    try:
        return name if entry_key(name) == key else None
    except InvalidWalError:
        return None


# --- entries ---------------------------------------------------------------------


class Entry:
    """What the index knows about one segment (internal)."""

    __slots__ = ("cont", "resolved", "spill", "summary", "sysid")

    def __init__(
        self,
        summary: SegmentSummary,
        spill: Spill | None,
        cont: Continuation | None,
        resolved: bool,
        sysid: int | None = None,
    ) -> None:
        self.summary = summary  # sparse
        self.spill = spill
        self.cont = cont
        self.resolved = resolved  # the spilled record (if any) is in summary.events / stats
        self.sysid = sysid

    @property
    def name(self) -> str:
        return self.summary.name

    @property
    def partial(self) -> bool:
        return self.summary.name.endswith(".partial")


def _ev_json(e: WalEvent) -> list[Any]:
    return [e.kind, e.lsn, e.end_lsn, e.xid, e.time, e.name, e.extra]


def _ev_from(v: list[Any]) -> WalEvent:
    return WalEvent(v[0], v[1], v[2], v[3], v[4], v[5], v[6])


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _entry_json(e: Entry, *, keep_cont: bool = True) -> dict[str, Any]:
    s = e.summary
    d: dict[str, Any] = {f: getattr(s, f) for f in _SUMMARY_FIELDS}
    d["events"] = [_ev_json(ev) for ev in s.events]
    d["resolved"] = e.resolved
    d["sysid"] = None if e.sysid is None else str(e.sysid)
    sp = e.spill
    d["spill"] = (
        None
        if sp is None
        else {
            "lsn": sp.lsn,
            "tot_len": sp.tot_len,
            "head_len": sp.head_len,
            "head": None if e.resolved else _b64(sp.head),
            "interesting": sp.interesting,
        }
    )
    c = e.cont
    d["cont"] = (
        None
        if c is None
        else {
            "rem_len": c.rem_len,
            "data": _b64(c.data) if keep_cont else None,
            "end_lsn": c.end_lsn,
            "overwrite": c.overwrite,
        }
    )
    return d


def _entry_from(d: dict[str, Any]) -> Entry:
    try:
        fields = {f: d[f] for f in _SUMMARY_FIELDS if f in d}
        summary = SegmentSummary(
            **fields, events=tuple(_ev_from(v) for v in d["events"]), sparse=True
        )
        sp = d.get("spill")
        spill = (
            None
            if sp is None
            else Spill(
                sp["lsn"], sp["tot_len"], sp["head_len"], _unb64(sp["head"]), sp["interesting"]
            )
        )
        c = d.get("cont")
        cont = (
            None
            if c is None
            else Continuation(c["rem_len"], _unb64(c["data"]), c["end_lsn"], c["overwrite"])
        )
        sysid = d.get("sysid")
        return Entry(
            summary, spill, cont, bool(d["resolved"]), None if sysid is None else int(sysid)
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise IntegrityError(f"index entry is malformed ({type(exc).__name__}: {exc})") from None


def entry_from_scan(scan: SegmentScan) -> tuple[Entry, list[WalEvent]]:
    """The sparse entry of a scan and its commit/abort events (the detail part)."""
    s = scan.summary
    spill_lsn = scan.spill.lsn if scan.spill is not None else None
    sparse: list[WalEvent] = []
    xact: list[WalEvent] = []
    for ev in s.events:
        if ev.kind in XACT_END_KINDS and ev.lsn != spill_lsn:
            xact.append(ev)
        else:
            sparse.append(ev)
    resolved = scan.spill is None or not s.pending
    summary = s._replace(events=tuple(sparse), sparse=True)
    return Entry(summary, scan.spill, scan.cont, resolved, scan.sysid), xact


# --- loose objects: JSON entry + commit/abort columns -------------------------------

_LEN = struct.Struct("<I")


def _arr(code: str, values: Iterable[int]) -> bytes:
    a = array.array(code, values)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def _unarr(code: str, data: bytes) -> list[int]:
    a = array.array(code)
    a.frombytes(data)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tolist()


def encode_loose(entry: Entry, xact: list[WalEvent]) -> bytes:
    """Raw bytes of a loose index object."""
    start = entry.summary.start_lsn
    n = len(xact)
    doc = _entry_json(entry)
    doc["v"] = FORMAT
    doc["xact_n"] = n
    doc["gids"] = {str(i): ev.name for i, ev in enumerate(xact) if ev.name is not None}
    head = json.dumps(doc, separators=(",", ":")).encode()
    offs = [ev.lsn - start for ev in xact]
    times = [ev.time or 0 for ev in xact]
    cols = [
        bytes(_XACT_CODE[ev.kind] for ev in xact),
        _arr("I", (b - a for a, b in zip([0, *offs], offs, strict=False))),
        _arr("I", (ev.end_lsn - ev.lsn for ev in xact)),
        _arr("I", (ev.xid or 0 for ev in xact)),
        _arr("q", (b - a for a, b in zip([0, *times], times, strict=False))),
    ]
    return _LEN.pack(len(head)) + head + b"".join(cols)


def decode_loose(raw: bytes, where: str, *, details: bool = True) -> tuple[Entry, list[WalEvent]]:
    """Entry and commit/abort events of a loose index object."""
    try:
        (hlen,) = _LEN.unpack_from(raw, 0)
        doc = json.loads(raw[4 : 4 + hlen])
        if doc.get("v") != FORMAT:
            raise IntegrityError(
                f"{where}: index format {doc.get('v')!r} is not known to this walship",
                hint="upgrade walship, or rebuild the index with 'walship index --rebuild'",
            )
        entry = _entry_from(doc)
        if not details:
            return entry, []
        n = int(doc["xact_n"])
        pos = 4 + hlen
        sizes = (n, 4 * n, 4 * n, 4 * n, 8 * n)
        if len(raw) != pos + sum(sizes):
            raise ValueError("column sizes do not match")
        cols: list[bytes] = []
        for size in sizes:
            cols.append(raw[pos : pos + size])
            pos += size
        kinds = cols[0]
        offs = _unarr("I", cols[1])
        lens = _unarr("I", cols[2])
        xids = _unarr("I", cols[3])
        dtimes = _unarr("q", cols[4])
        gids: dict[str, str] = doc.get("gids") or {}
    except IntegrityError:
        raise
    except (ValueError, KeyError, TypeError, struct.error, IndexError) as exc:
        raise IntegrityError(
            f"{where}: index object is malformed ({type(exc).__name__})",
            hint="rebuild the index with 'walship index --rebuild'",
        ) from None
    start = entry.summary.start_lsn
    events: list[WalEvent] = []
    lsn = start
    t = 0
    for i in range(n):
        lsn += offs[i]
        t += dtimes[i]
        events.append(
            WalEvent(_XACT_CODES[kinds[i]], lsn, lsn + lens[i], xids[i], t, gids.get(str(i)))
        )
    return entry, events


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


def _read_raw(cfg: Config, backend: Backend, key: str) -> bytes:
    with objects.open_object(cfg, backend, key) as obj:
        return b"".join(obj.raw)


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


# --- loading ------------------------------------------------------------------------


def _list(backend: Backend, prefix: str) -> list[str]:
    try:
        return [info.key for info in backend.list(prefix)]
    except ContainerNotFound:
        return []


def _pack_tli(key: str) -> int | None:
    parts = key[len(PACK_PREFIX) :].split("/")
    try:
        return int(parts[0], 16)
    except ValueError:
        return None


def _read_pack(cfg: Config, backend: Backend, key: str) -> list[Entry]:
    raw = _read_raw(cfg, backend, key)
    try:
        doc = json.loads(raw)
        if doc.get("v") != FORMAT:
            raise IntegrityError(
                f"{backend.url}/{key}: index pack format {doc.get('v')!r} is not known",
                hint="upgrade walship, or rebuild with 'walship index --rebuild'",
            )
        return [_entry_from(d) for d in doc["entries"]]
    except IntegrityError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(
            f"{backend.url}/{key}: index pack is malformed ({type(exc).__name__})",
            hint="rebuild the index with 'walship index --rebuild'",
        ) from None


def _better(a: Entry, b: Entry) -> Entry:
    """Of two entries for one name, the one to use."""
    if a.summary.sha256 != b.summary.sha256:
        return b  # the later source (loose after packs) is the newer computation
    if a.resolved != b.resolved:
        return a if a.resolved else b
    return a


def _map(fn: Any, items: list[Any]) -> list[Any]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(READERS, len(items))) as pool:
        return list(pool.map(fn, items))


class _State:
    """Everything the index holds (for loading and for ``walship index``)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.packs: dict[tuple[int, int], list[tuple[str, set[str]]]] = {}  # bucket -> packs
        self.loose: dict[str, str] = {}  # name -> key


def _load_state(cfg: Config, backend: Backend, tli: int | None, read_loose: bool) -> _State:
    state = _State()
    keys = _list(backend, INDEX_PREFIX)
    pack_keys = [
        k for k in keys if k.startswith(PACK_PREFIX) and (tli is None or _pack_tli(k) == tli)
    ]
    for key in keys:
        name = _name_of(key)
        if name is not None and (tli is None or int(name[:8], 16) == tli):
            state.loose[name] = key
    for key, entries in zip(
        pack_keys, _map(lambda k: _read_pack(cfg, backend, k), pack_keys), strict=True
    ):
        names: set[str] = set()
        for e in entries:
            names.add(e.name)
            old = state.entries.get(e.name)
            state.entries[e.name] = e if old is None else _better(old, e)
        bucket = _bucket_of(key)
        if bucket is not None:
            state.packs.setdefault(bucket, []).append((key, names))
    if read_loose:
        todo = [(n, k) for n, k in sorted(state.loose.items()) if n not in state.entries]

        def read(item: tuple[str, str]) -> Entry | None:
            _name, key = item
            try:
                raw = _read_raw(cfg, backend, key)
            except NotFound:
                return None  # deleted since the listing
            return decode_loose(raw, f"{backend.url}/{key}", details=False)[0]

        for entry in _map(read, todo):
            if entry is not None:
                state.entries[entry.name] = entry
    return state


def _bucket_of(key: str) -> tuple[int, int] | None:
    rest = key[len(PACK_PREFIX) :]
    try:
        tli_hex, leaf = rest.split("/")
        return int(tli_hex, 16), int(leaf.split(".")[0], 16)
    except ValueError:
        return None


def _order(e: Entry) -> tuple[int, int, int]:
    return (e.summary.tli, e.summary.segno, 1 if e.partial else 0)


def _successors(by_segno: dict[int, list[Entry]], e: Entry) -> list[Entry]:
    """Candidates holding the continuation of ``e``'s spilled record, best first."""
    s = e.summary
    cands = [x for x in by_segno.get(s.segno + 1, []) if x.summary.tli >= s.tli]
    return sorted(cands, key=lambda x: (x.summary.tli != s.tli, _order(x)))


def _resolve(e: Entry, event: WalEvent | None) -> Entry:
    """``e`` with its spilled record's event (None: not of interest) added."""
    s = e.summary
    events = s.events + ((event,) if event is not None else ())
    switch = s.switch or (event is not None and event.kind == "switch")
    summary = s._replace(events=events, pending=False, switch=switch)
    if event is not None and event.kind in XACT_END_KINDS:
        t, x = event.time, event.xid
        summary = summary._replace(xact_count=s.xact_count + 1)
        if t is not None:
            summary = summary._replace(
                xact_time_min=t if s.xact_time_min is None else min(t, s.xact_time_min),
                xact_time_max=t if s.xact_time_max is None else max(t, s.xact_time_max),
                xact_first_time=t if s.xact_first_time is None else s.xact_first_time,
                xact_last_time=t,
            )
        if x is not None:
            summary = summary._replace(
                xid_min=x if s.xid_min is None else min(x, s.xid_min),
                xid_max=x if s.xid_max is None else max(x, s.xid_max),
            )
    return Entry(summary, e.spill, e.cont, True, e.sysid)


def _join_all(entries: dict[str, Entry]) -> None:
    """Resolve spilled records whose continuation is in the index."""
    by_segno: dict[int, list[Entry]] = {}
    for x in entries.values():
        by_segno.setdefault(x.summary.segno, []).append(x)
    for name in sorted(entries, key=lambda n: _order(entries[n])):
        e = entries[name]
        if e.resolved or e.spill is None:
            continue
        for succ in _successors(by_segno, e):
            if succ.cont is None or succ.cont.data is None:
                continue
            if succ.summary.first_prev not in (None, e.spill.lsn):
                continue
            try:
                event = join(e.spill, succ.cont, e.summary.pg_version or 0)
            except InvalidWalError:
                continue
            entries[name] = _resolve(e, event)
            break


def load_summaries(
    cfg: Config, backend: Backend, *, tli: int | None = None, include_partial: bool = False
) -> list[SegmentSummary]:
    """Sparse summaries of every indexed segment, sorted by (tli, segno).

    Reads one listing of ``index/``, every pack and every loose object not
    in a pack. ``.partial`` files are left out unless ``include_partial``.
    Segments without an index entry are simply absent (``walship index``
    adds them); ``pending`` marks a summary whose last record continues into
    a segment the index does not have yet.
    """
    state = _load_state(cfg, backend, tli, read_loose=True)
    _join_all(state.entries)
    out = [e.summary for e in state.entries.values() if include_partial or not e.partial]
    out.sort(key=lambda s: (s.tli, s.segno, s.name))
    return out


def load_events(cfg: Config, backend: Backend, summary: SegmentSummary) -> tuple[WalEvent, ...]:
    """All events of one segment (its commit/abort records too), in LSN order.

    One GET of the segment's loose index object. Raises NotFound when the
    index has no object for it.
    """
    key = entry_key(summary.name)
    raw = _read_raw(cfg, backend, key)
    entry, xact = decode_loose(raw, f"{backend.url}/{key}")
    if summary.sha256 is not None and entry.summary.sha256 not in (None, summary.sha256):
        raise IntegrityError(
            f"{backend.url}/{key} describes other contents of {summary.name} than the summary",
            hint="rebuild the index with 'walship index --rebuild'",
        )
    merged = {ev.lsn: ev for ev in xact}
    for ev in summary.events:
        merged[ev.lsn] = ev
    return tuple(merged[lsn] for lsn in sorted(merged))


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
    for key in _list(backend, layout.WAL_PREFIX):
        name = layout.name_of(key)
        if name is None:
            continue
        kind = classify(name)
        if kind in (FileKind.SEGMENT, FileKind.PARTIAL) and (
            tli is None or int(name[:8], 16) == tli
        ):
            names.append(name)
    return names


def _segment_bytes(cfg: Config, backend: Backend, name: str) -> tuple[bytes, str]:
    with objects.open_object(cfg, backend, layout.key_for(name)) as obj:
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
    identity = layout.require_identity(backend)  # no repository: an error, not "0 indexed"
    seg_size = identity.wal_segment_size
    names = sorted(_wal_names(backend, tli))
    state = _load_state(cfg, backend, tli, read_loose=False)
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
    state = _load_state(cfg, backend, tli, read_loose=True)
    _join_all(state.entries)
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
    for name in sorted(entries, key=lambda n: _order(entries[n])):
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
            entries[name] = _resolve(e, tail[0] if tail else None)


def _successor_name(name: str, k: int, seg_size: int) -> str:
    from .wal import segment_file_name

    seg = parse_segment_name(name, seg_size)
    return segment_file_name(seg.tli, seg.segno + k, seg_size)


def _write_packs(cfg: Config, backend: Backend, state: _State, report: IndexReport) -> None:
    buckets: dict[tuple[int, int], list[Entry]] = {}
    for e in state.entries.values():
        s = e.summary
        buckets.setdefault((s.tli, s.segno // PACK_SEGMENTS), []).append(e)
    new_packs: dict[tuple[int, int], list[tuple[str, set[str]]]] = {}
    by_segno: dict[int, list[Entry]] = {}
    for x in state.entries.values():
        by_segno.setdefault(x.summary.segno, []).append(x)
    for bucket, group in sorted(buckets.items()):
        group.sort(key=_order)
        docs = [_entry_json(e, keep_cont=_keep_cont(by_segno, e)) for e in group]
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
