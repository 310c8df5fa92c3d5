"""The segment index's object keys, entries and their encoding (no I/O).

See :mod:`walship.index` for the layout of ``index/``.
"""

from __future__ import annotations

import array
import base64
import json
import struct
import sys
from collections.abc import Iterable
from typing import Any

from ..errors import IntegrityError, InvalidWalError
from ..pg import FileKind, classify
from ..pg.records import Continuation, SegmentScan, Spill
from ..pg.types import XACT_END_KINDS, SegmentSummary, WalEvent

INDEX_PREFIX = "index/"
PACK_PREFIX = "index/packs/"
PACK_SEGMENTS = 1024
FORMAT = 1
OBJECT_KIND = "wal-index"
PACK_KIND = "wal-index-pack"

_XACT_CODES = ("commit", "abort", "commit_prepared", "abort_prepared")
_XACT_CODE = {k: i for i, k in enumerate(_XACT_CODES)}
_SUMMARY_FIELDS = tuple(f for f in SegmentSummary._fields if f not in ("events", "sparse"))


def entry_key(name: str) -> str:
    """Key of a segment's (or .partial's) loose index object."""
    kind = classify(name)
    if kind not in (FileKind.SEGMENT, FileKind.PARTIAL):
        raise InvalidWalError(f"{name} is not a WAL segment name")
    return f"{INDEX_PREFIX}{name[:16]}/{name}"


def name_of(key: str) -> str | None:
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


def entry_json(e: Entry, *, keep_cont: bool = True) -> dict[str, Any]:
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


def entry_from(d: dict[str, Any]) -> Entry:
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
    doc = entry_json(entry)
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
        entry = entry_from(doc)
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
