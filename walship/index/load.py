"""Reading the segment index: one listing of ``index/``, every pack, the loose objects."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..codec import objects
from ..errors import ContainerNotFound, IntegrityError, InvalidWalError, NotFound
from ..pg.records import join
from ..pg.types import XACT_END_KINDS, SegmentSummary, WalEvent
from .entries import (
    FORMAT,
    INDEX_PREFIX,
    PACK_PREFIX,
    Entry,
    decode_loose,
    entry_from,
    entry_key,
    name_of,
)

if TYPE_CHECKING:
    from ..config import Config
    from ..storage.base import Backend

READERS = 8


def read_raw(cfg: Config, backend: Backend, key: str) -> bytes:
    with objects.open_object(cfg, backend, key) as obj:
        return b"".join(obj.raw)


# --- loading ------------------------------------------------------------------------


def list_keys(backend: Backend, prefix: str) -> list[str]:
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
    raw = read_raw(cfg, backend, key)
    try:
        doc = json.loads(raw)
        if doc.get("v") != FORMAT:
            raise IntegrityError(
                f"{backend.url}/{key}: index pack format {doc.get('v')!r} is not known",
                hint="upgrade walship, or rebuild with 'walship index --rebuild'",
            )
        return [entry_from(d) for d in doc["entries"]]
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


def parallel_map(fn: Any, items: list[Any]) -> list[Any]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(READERS, len(items))) as pool:
        return list(pool.map(fn, items))


class State:
    """Everything the index holds (for loading and for ``walship index``)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.packs: dict[tuple[int, int], list[tuple[str, set[str]]]] = {}  # bucket -> packs
        self.loose: dict[str, str] = {}  # name -> key


def load_state(cfg: Config, backend: Backend, tli: int | None, read_loose: bool) -> State:
    state = State()
    keys = list_keys(backend, INDEX_PREFIX)
    pack_keys = [
        k for k in keys if k.startswith(PACK_PREFIX) and (tli is None or _pack_tli(k) == tli)
    ]
    for key in keys:
        name = name_of(key)
        if name is not None and (tli is None or int(name[:8], 16) == tli):
            state.loose[name] = key
    for key, entries in zip(
        pack_keys, parallel_map(lambda k: _read_pack(cfg, backend, k), pack_keys), strict=True
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
                raw = read_raw(cfg, backend, key)
            except NotFound:
                return None  # deleted since the listing
            return decode_loose(raw, f"{backend.url}/{key}", details=False)[0]

        for entry in parallel_map(read, todo):
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


def order(e: Entry) -> tuple[int, int, int]:
    return (e.summary.tli, e.summary.segno, 1 if e.partial else 0)


def _successors(by_segno: dict[int, list[Entry]], e: Entry) -> list[Entry]:
    """Candidates holding the continuation of ``e``'s spilled record, best first."""
    s = e.summary
    cands = [x for x in by_segno.get(s.segno + 1, []) if x.summary.tli >= s.tli]
    return sorted(cands, key=lambda x: (x.summary.tli != s.tli, order(x)))


def resolve(e: Entry, event: WalEvent | None) -> Entry:
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


def join_all(entries: dict[str, Entry]) -> None:
    """Resolve spilled records whose continuation is in the index."""
    by_segno: dict[int, list[Entry]] = {}
    for x in entries.values():
        by_segno.setdefault(x.summary.segno, []).append(x)
    for name in sorted(entries, key=lambda n: order(entries[n])):
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
            entries[name] = resolve(e, event)
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
    state = load_state(cfg, backend, tli, read_loose=True)
    join_all(state.entries)
    out = [e.summary for e in state.entries.values() if include_partial or not e.partial]
    out.sort(key=lambda s: (s.tli, s.segno, s.name))
    return out


def load_events(cfg: Config, backend: Backend, summary: SegmentSummary) -> tuple[WalEvent, ...]:
    """All events of one segment (its commit/abort records too), in LSN order.

    One GET of the segment's loose index object. Raises NotFound when the
    index has no object for it.
    """
    key = entry_key(summary.name)
    raw = read_raw(cfg, backend, key)
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
