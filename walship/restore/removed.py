"""What ``walship delete`` removed on purpose: ``retention/state.json`` (docs/retention.md).

``walship delete --confirm`` writes this small object (create-or-overwrite,
in the repository's object format) *before* it deletes any WAL, so that a
crash never leaves a gap the repository cannot explain. It holds, per
timeline, the segment ranges retention deleted on purpose (merged with those
of earlier runs) and the oldest point that stays restorable to any later
moment. ``walship verify`` reports a gap inside such a range as info, not an
error; ``walship plan-restore`` explains a target inside one. Every other gap
stays an error.

The format is JSON: ``{"format": 1, "kind": "retention-state", "updated": ISO,
"removed": [{"timeline", "first", "last" (segment numbers), "first_name",
"last_name", "first_at", "last_at" (ISO times of the deletions), "policy"}],
"restorable": {"<tli>": {"backup", "lsn", "time"}}}``. Ranges merge when they
touch, so the object stays small (one range per stretch of deleted WAL).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import NotFound, WalshipError
from ..pg import format_lsn, segment_file_name

if TYPE_CHECKING:
    from ..config import Config
    from ..storage.base import Backend

STATE_KEY = "retention/state.json"
KIND_STATE = "retention-state"
FORMAT = 1


@dataclass(frozen=True)
class Removed:
    """Segments ``first``..``last`` (inclusive) of ``timeline``, deleted by retention."""

    timeline: int
    first: int
    last: int
    first_at: str  # ISO UTC of the first deletion that contributed
    last_at: str  # ... and of the latest
    policy: str = ""

    def when(self) -> str:
        a, b = _day(self.first_at), _day(self.last_at)
        return a if a == b else f"{a} .. {b}"


@dataclass
class Restorable:
    backup: str
    lsn: int
    time: str | None  # ISO UTC, when known


@dataclass
class State:
    removed: list[Removed] = field(default_factory=list)
    restorable: dict[int, Restorable] = field(default_factory=dict)
    updated: str = ""

    def __post_init__(self) -> None:
        self._index()

    def _index(self) -> None:
        self._by_tli: dict[int, list[Removed]] = {}
        for r in sorted(self.removed, key=lambda r: (r.timeline, r.first)):
            self._by_tli.setdefault(r.timeline, []).append(r)
        self._firsts = {t: [r.first for r in rs] for t, rs in self._by_tli.items()}

    def find(self, tli: int, segno: int) -> Removed | None:
        """The removed range holding segment ``segno`` of timeline ``tli``."""
        firsts = self._firsts.get(tli)
        if not firsts:
            return None
        i = bisect.bisect_right(firsts, segno) - 1
        if i < 0:
            return None
        r = self._by_tli[tli][i]
        return r if r.last >= segno else None

    def split(self, tli: int, first: int, last: int) -> tuple[list[Removed], list[tuple[int, int]]]:
        """Segments ``first``..``last`` of ``tli`` (missing from the archive) as the
        retention records covering parts of them (each clipped to the run) and the
        runs no record explains: the real gaps."""
        covered: list[Removed] = []
        gaps: list[tuple[int, int]] = []
        at = first
        firsts = self._firsts.get(tli, [])
        i = max(0, bisect.bisect_right(firsts, first) - 1)
        for r in self._by_tli.get(tli, [])[i:]:
            if r.first > last:
                break
            if r.last < at:
                continue
            if r.first > at:
                gaps.append((at, r.first - 1))
            lo, hi = max(r.first, at), min(r.last, last)
            covered.append(Removed(tli, lo, hi, r.first_at, r.last_at, r.policy))
            at = hi + 1
            if at > last:
                break
        if at <= last:
            gaps.append((at, last))
        return covered, gaps

    def add(self, ranges: Iterable[tuple[int, int, int]], at: str, policy: str) -> None:
        """Merge (timeline, first, last) ranges deleted ``at`` into the state."""
        new = [Removed(t, lo, hi, at, at, policy) for t, lo, hi in ranges]
        merged: list[Removed] = []
        for r in sorted([*self.removed, *new], key=lambda r: (r.timeline, r.first)):
            prev = merged[-1] if merged else None
            if prev is not None and prev.timeline == r.timeline and r.first <= prev.last + 1:
                merged[-1] = Removed(
                    r.timeline,
                    prev.first,
                    max(prev.last, r.last),
                    min(prev.first_at, r.first_at),
                    max(prev.last_at, r.last_at),
                    r.policy if r.last_at >= prev.last_at else prev.policy,
                )
            else:
                merged.append(r)
        self.removed = merged
        self.updated = at
        self._index()

    def to_json(self, seg_size: int) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT,
            "kind": KIND_STATE,
            "updated": self.updated,
            "removed": [
                {
                    "timeline": r.timeline,
                    "first": r.first,
                    "last": r.last,
                    "first_name": segment_file_name(r.timeline, r.first, seg_size),
                    "last_name": segment_file_name(r.timeline, r.last, seg_size),
                    "first_at": r.first_at,
                    "last_at": r.last_at,
                    "policy": r.policy,
                }
                for r in self.removed
            ],
            "restorable": {
                str(t): {
                    "backup": p.backup,
                    "lsn": format_lsn(p.lsn),
                    "lsn_int": p.lsn,
                    "time": p.time,
                }
                for t, p in sorted(self.restorable.items())
            },
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def parse(raw: bytes) -> State:
    try:
        doc = json.loads(raw.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("kind") != KIND_STATE:
            raise ValueError("not a retention state")
        if int(doc.get("format", 0)) > FORMAT:
            raise ValueError(f"format {doc.get('format')} is newer than this walship's")
        removed = [
            Removed(
                int(r["timeline"]),
                int(r["first"]),
                int(r["last"]),
                str(r["first_at"]),
                str(r["last_at"]),
                str(r.get("policy", "")),
            )
            for r in doc.get("removed", [])
        ]
        restorable = {
            int(t): Restorable(str(p["backup"]), int(p["lsn_int"]), p.get("time"))
            for t, p in doc.get("restorable", {}).items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WalshipError(
            f"{STATE_KEY} is unusable: {exc}",
            hint="it records the WAL walship delete removed on purpose; restore it from a "
            "copy, or remove it (verify then reports those ranges as gaps)",
        ) from None
    return State(removed, restorable, str(doc.get("updated", "")))


def load(cfg: Config, backend: Backend) -> State | None:
    """The stored state; None when no delete ever removed WAL. WalshipError when unusable."""
    from ..codec import objects

    try:
        with objects.open_object(cfg, backend, STATE_KEY) as obj:
            raw = b"".join(obj.raw)
    except NotFound:
        return None
    return parse(raw)


def store(cfg: Config, backend: Backend, state: State, seg_size: int) -> None:
    from ..codec import objects
    from ..storage.base import OVERWRITE

    body = state.to_json(seg_size)
    header = objects.new_header(
        "state.json", KIND_STATE, len(body), hashlib.sha256(body).hexdigest(), cfg
    )
    objects.put_object(cfg, backend, STATE_KEY, header, [body], mode=OVERWRITE)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def iso_of_us(us: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us / 1_000_000))


def _day(iso: str) -> str:
    return iso.replace("T", " ").removesuffix("Z") + " UTC" if iso else "an unknown date"
