"""Restore planning: which backup, which timelines, which segments, where recovery stops.

Pure: an :class:`Inventory` (what the repository holds) and a :class:`Target`
in, a :class:`Plan` out; no I/O. It follows PostgreSQL's recovery rules
(xlogrecovery.c, timeline.c; docs/planning.md and the WAL reference 1.3,
3.3-3.5, 5.6):

* Timelines: ``latest`` probes ``<TLI+1>.history``, ``+2``, ... from the
  backup's timeline and stops at the first missing one; ``current`` is the
  backup's timeline; a number must have a history file (unless 1). The
  backup's checkpoint (and its end) must lie on the backup's timeline in the
  target timeline's history, else PostgreSQL refuses ("requested timeline is
  not a child of this server's history").
* Segments: from the segment holding the backup's START WAL LOCATION, each
  segment is read from the newest timeline of the path whose first segment
  is not after it. That exact file must be archived: PostgreSQL would fall
  back to an older timeline's file of the same number, which holds the other
  branch's WAL, so it counts as missing.
* Stop rules (recovery_target_inclusive = on): time -- before the first
  commit/abort in LSN order whose time is later than the target; xid -- after
  the commit/abort of that xid; name -- after the first restore point of that
  name; lsn -- after the first record starting at or after the LSN;
  immediate -- at consistency. With recovery_target_inclusive = off: time --
  before the first commit/abort whose time is the target's or later; xid --
  before its commit/abort; lsn -- before the first record starting at or
  after the LSN (name and immediate ignore the setting, as PostgreSQL does).
  Reaching the end of the archived WAL before the target is a FATAL
  (PostgreSQL 13+).
* Backup choice: the deciding event is the first matching one in the target
  timeline's *whole* history, not the first after a backup's start. A backup
  serves the target only if the stop point lies at or after its consistency
  point (STOP WAL LOCATION): a deciding event before its START WAL LOCATION
  means its files already hold later changes (PostgreSQL would silently stop
  at a later match, or FATAL), one inside its window makes PostgreSQL stop
  with FATAL. The newest backup that serves is chosen. Where WAL before a
  backup's start is not archived or not indexed, a time target is decided
  from the backup's START TIME (commits before START WAL LOCATION are older
  than it; it is recorded in whole seconds, hence the one second margin) and
  the plan says so (``Plan.caution``); a name target is assumed unique there,
  said the same way.

Time, xid and name targets need segment summaries (the segment index,
``walship index``); lsn, immediate and latest do not.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from ..pg import format_lsn, segment_file_name, segno_of_end_lsn, segno_of_lsn
from ..pg.history import HistoryEntry
from ..pg.types import RESTORE_POINT, XACT_END_KINDS, SegmentSummary, WalEvent
from .backups import Backup

if TYPE_CHECKING:
    from .removed import Removed, State

INF_LSN = 0xFFFF_FFFF_FFFF_FFFF

# --- verdicts ------------------------------------------------------------------

REACHABLE = "reachable"
NO_BACKUP = "no-backup"
GAP = "gap"
ARCHIVE_ENDS = "archive-ends"
TIMELINE = "timeline"
UNKNOWN_NAME = "unknown-restore-point"
NEEDS_INDEX = "needs-index"
#: no repository at the configured location (walship.errors.RepositoryNotFound); no plan
NO_REPOSITORY = "no-repository"

#: verdict -> exit code of ``walship plan-restore`` (docs/exit-codes.md)
EXIT_CODES: dict[str, int] = {
    REACHABLE: 0,
    NO_BACKUP: 10,
    GAP: 11,
    ARCHIVE_ENDS: 12,
    TIMELINE: 13,
    UNKNOWN_NAME: 14,
    NEEDS_INDEX: 15,
    NO_REPOSITORY: 16,
}

TARGET_KINDS = ("time", "lsn", "xid", "name", "immediate", "latest")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_time(us: int | None) -> str | None:
    """µs since the epoch -> PostgreSQL-pasteable UTC text (``2026-11-23 14:30:00.5+00``)."""
    if us is None:
        return None
    dt = EPOCH + timedelta(microseconds=us)
    text = dt.strftime("%Y-%m-%d %H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    return text + "+00"


_WHAT = {
    "commit": "commit",
    "abort": "abort",
    "commit_prepared": "COMMIT PREPARED",
    "abort_prepared": "ROLLBACK PREPARED",
    "restore_point": "restore point",
}


def describe_event(ev: WalEvent) -> str:
    """``commit of xid 734 at 0/50001B8 (2026-11-23 23:47:35.69+00)``."""
    what = _WHAT.get(ev.kind, ev.kind)
    text = f'restore point "{ev.name}"' if ev.kind == "restore_point" else f"{what} of xid {ev.xid}"
    text += f" at {format_lsn(ev.lsn)}"
    if ev.time is not None:
        text += f" ({format_time(ev.time)})"
    return text


# --- inputs ----------------------------------------------------------------------


@dataclass
class Inventory:
    """What a repository holds, as far as restores go (built by inventory.py)."""

    seg_size: int
    #: TLI -> sorted segment numbers of the full segments archived on it
    segments: dict[int, list[int]]
    partials: dict[int, list[int]] = field(default_factory=dict)
    #: TLI -> parsed history (only TLIs with a readable TLI.history)
    histories: dict[int, list[HistoryEntry]] = field(default_factory=dict)
    #: TLI -> why its history file could not be used
    history_errors: dict[int, str] = field(default_factory=dict)
    backups: list[Backup] = field(default_factory=list)
    #: backup object key -> why it could not be used
    backup_errors: dict[str, str] = field(default_factory=dict)
    #: (TLI, segno) -> summary; None when no segment index is available at all
    summaries: dict[tuple[int, int], SegmentSummary] | None = None
    system_identifier: int | None = None
    url: str = ""
    #: full events of a sparse summary (one whose commits/aborts are only counted);
    #: supplied by inventory.py, None when they cannot be had
    load_events: Callable[[SegmentSummary], Sequence[WalEvent]] | None = None
    #: what walship delete removed on purpose (retention/state.json), None if nothing
    retention: State | None = None
    #: why retention/state.json could not be used
    retention_error: str | None = None

    def __post_init__(self) -> None:
        self._sets = {tli: set(segs) for tli, segs in self.segments.items()}
        self._events: dict[tuple[int, int], tuple[WalEvent, ...]] = {}
        self.events_loaded = 0

    def events_of(self, summary: SegmentSummary) -> tuple[WalEvent, ...] | None:
        """All events of a segment (loading a sparse summary's); None if unavailable."""
        if not summary.sparse or not self.has(summary.tli, summary.segno):
            return summary.events  # (a segment no longer archived is not read)
        key = (summary.tli, summary.segno)
        cached = self._events.get(key)
        if cached is None:
            if self.load_events is None:
                return None
            cached = tuple(self.load_events(summary))
            self._events[key] = cached
            self.events_loaded += 1
        return cached

    def has(self, tli: int, segno: int) -> bool:
        segs = self._sets.get(tli)
        return segs is not None and segno in segs

    def has_partial(self, tli: int, segno: int) -> bool:
        return segno in self.partials.get(tli, ())

    def seg_name(self, tli: int, segno: int) -> str:
        return segment_file_name(tli, segno, self.seg_size)

    def history_present(self, tli: int) -> bool:
        """Whether ``TLI.history`` is in the archive (what PostgreSQL probes)."""
        return tli in self.histories or tli in self.history_errors

    def timelines(self) -> list[int]:
        tlis = set(self.segments) | set(self.partials) | set(self.histories)
        tlis |= set(self.history_errors) | {1}
        for b in self.backups:
            tlis |= {b.start_tli, b.stop_tli}
        return sorted(tlis)


#: target kinds recovery_target_inclusive applies to
INCLUSIVE_KINDS = ("time", "lsn", "xid")


class Target(NamedTuple):
    kind: str  # one of TARGET_KINDS
    value: int | str | None = None  # µs (time), LSN (lsn), xid, name
    inclusive: bool = True  # recovery_target_inclusive (time, lsn and xid only)

    def describe(self) -> str:
        text = self._describe()
        if not self.inclusive and self.kind in INCLUSIVE_KINDS:
            text += " (exclusive)"
        return text

    def _describe(self) -> str:
        if self.kind == "time":
            assert isinstance(self.value, int)
            return f"time {format_time(self.value)}"
        if self.kind == "lsn":
            assert isinstance(self.value, int)
            return f"LSN {format_lsn(self.value)}"
        if self.kind == "xid":
            return f"xid {self.value}"
        if self.kind == "name":
            return f'restore point "{self.value}"'
        if self.kind == "immediate":
            return "consistency (immediate)"
        return "end of the archived WAL (latest)"


# --- timelines -------------------------------------------------------------------


class Step(NamedTuple):
    """One timeline of a path: WAL at ``begin <= lsn < end`` is read from ``tli``."""

    tli: int
    begin: int
    end: int  # switch point to the next step; INF_LSN for the target timeline


class Path:
    """A target timeline and its ancestry, oldest first (reference 1.3)."""

    def __init__(self, steps: Sequence[Step], seg_size: int) -> None:
        self.steps = tuple(steps)
        self.seg_size = seg_size
        self.target_tli = self.steps[-1].tli
        self.begin_segs = [s.begin // seg_size for s in self.steps]

    def tlis(self) -> list[int]:
        return [s.tli for s in self.steps]

    def tli_of_lsn(self, lsn: int) -> int | None:
        for s in self.steps:
            if s.begin <= lsn < s.end:
                return s.tli
        return None

    def step_of_segment(self, segno: int) -> int:
        """Index of the step whose file PostgreSQL reads for segment ``segno``."""
        for i in range(len(self.steps) - 1, -1, -1):
            if self.begin_segs[i] <= segno:
                return i
        return 0

    def segment_span(self, i: int) -> tuple[int, int]:
        """Segments read from step ``i``: [lo, hi] (empty when lo > hi)."""
        lo = self.begin_segs[i]
        hi = self.begin_segs[i + 1] - 1 if i + 1 < len(self.steps) else INF_LSN
        return lo, hi

    def switches(self) -> list[tuple[int, int, int]]:
        """(from TLI, to TLI, switch point) for each switch on the path."""
        return [(a.tli, b.tli, a.end) for a, b in itertools.pairwise(self.steps)]

    def describe(self) -> str:
        out = str(self.steps[0].tli)
        for _, to, lsn in self.switches():
            out += f" -> {to} at {format_lsn(lsn)}"
        return out


def timeline_path(inv: Inventory, tli: int) -> Path | None:
    """The path to ``tli`` from its history file; None if it has no (usable) history."""
    if tli == 1 and 1 not in inv.histories:
        return Path([Step(1, 0, INF_LSN)], inv.seg_size)
    history = inv.histories.get(tli)
    if history is None:
        return None
    steps: list[Step] = []
    begin = 0
    for entry in history:
        steps.append(Step(entry.parent_tli, begin, entry.switchpoint))
        begin = entry.switchpoint
    steps.append(Step(tli, begin, INF_LSN))
    return Path(steps, inv.seg_size)


def newest_timeline(inv: Inventory, start: int) -> int:
    """``recovery_target_timeline = latest``: probe start+1, +2, ... (findNewestTimeLine)."""
    tli = start
    while inv.history_present(tli + 1):
        tli += 1
    return tli


def last_segment_on_path(inv: Inventory, path: Path) -> int | None:
    """Highest segment number archived on the timeline the path reads it from."""
    best: int | None = None
    for i, step in enumerate(path.steps):
        lo, hi = path.segment_span(i)
        segs = inv.segments.get(step.tli)
        if not segs or lo > hi:
            continue
        j = bisect.bisect_right(segs, hi) - 1
        if j >= 0 and segs[j] >= lo:
            best = segs[j] if best is None else max(best, segs[j])
    return best


class PathScan:
    """The segments of a path from ``first`` on: what is missing, unindexed, and the events."""

    def __init__(self, inv: Inventory, path: Path, first: int) -> None:
        self.path = path
        self.first = first
        last = last_segment_on_path(inv, path)
        self.last = first - 1 if last is None or last < first else last
        self.missing: list[int] = []
        self.unindexed: list[int] = []
        self.events: list[WalEvent] = []
        self.event_lsns: list[int] = []
        self.seg_end: dict[int, int] = {}  # segno -> end of the valid WAL read in it
        self.seg_tli: dict[int, int] = {}
        #: segments whose summary only counts commits/aborts: (segno, summary, step end)
        self.sparse: list[tuple[int, SegmentSummary, int]] = []
        self.sparse_segnos: list[int] = []
        summaries = inv.summaries
        i = path.step_of_segment(first)
        for segno in range(first, self.last + 1):
            while i + 1 < len(path.steps) and path.begin_segs[i + 1] <= segno:
                i += 1
            tli = path.steps[i].tli
            self.seg_tli[segno] = tli
            if not inv.has(tli, segno):
                self.missing.append(segno)
                continue
            if summaries is None:
                continue
            summary = summaries.get((tli, segno))
            if summary is None or (summary.pending and segno < self.last):
                self.unindexed.append(segno)
                continue
            self.seg_end[segno] = summary.end_lsn
            end = path.steps[i].end
            if summary.sparse:
                self.sparse.append((segno, summary, end))
                self.sparse_segnos.append(segno)
            for ev in summary.events:
                if ev.lsn < end:
                    self.events.append(ev)
                    self.event_lsns.append(ev.lsn)

    def first_missing(self, start: int) -> int | None:
        j = bisect.bisect_left(self.missing, start)
        return self.missing[j] if j < len(self.missing) else None

    def first_unindexed(self, start: int, stop: int) -> int | None:
        j = bisect.bisect_left(self.unindexed, start)
        if j < len(self.unindexed) and self.unindexed[j] <= stop:
            return self.unindexed[j]
        return None

    def tli_for(self, segno: int) -> int:
        return self.seg_tli.get(segno) or self.path.steps[self.path.step_of_segment(segno)].tli


# --- the plan --------------------------------------------------------------------


class SegmentRange(NamedTuple):
    tli: int
    first: int
    last: int

    def size(self) -> int:
        return self.last - self.first + 1


class StopPoint(NamedTuple):
    how: str  # "before" | "after" | "consistency" | "end"
    lsn: int  # where replay stops (start of the stop record for "before")
    end_lsn: int  # WAL that must be read to get there
    tli: int | None
    event: WalEvent | None = None


class Window(NamedTuple):
    """What can be recovered on one timeline of the path from the chosen backup."""

    tli: int
    from_lsn: int
    to_lsn: int
    first_time: int | None  # earliest commit/abort time in the window
    last_time: int | None  # latest commit/abort time in the window


@dataclass
class Plan:
    verdict: str
    reason: str
    target: Target
    timeline_request: str
    backup: Backup | None = None
    path: Path | None = None
    segments: list[SegmentRange] = field(default_factory=list)
    missing: str | None = None  # first missing segment file name
    stop: StopPoint | None = None
    windows: list[Window] = field(default_factory=list)
    earliest: tuple[int, int | None] | None = None  # (lsn, time) of the oldest usable backup
    latest: tuple[int, int | None] | None = None  # (end lsn, last commit time) of the archive
    settings: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    hint: str | None = None
    #: the backup was chosen without seeing all of the WAL before its start: why, and how
    caution: str | None = None
    #: first segment before a backup's start that is archived but not indexed (indexing
    #: it lets the planner decide from the WAL instead of the backup's START TIME)
    unindexed: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def reachable(self) -> bool:
        return self.verdict == REACHABLE

    def segment_count(self) -> int:
        return sum(r.size() for r in self.segments)


class _Outcome(NamedTuple):
    #: "ok"; "toonew" (the deciding event precedes the backup's start); "after" (it lies
    #: inside the backup's window, before consistency); "notfound"; or a verdict
    kind: str
    reason: str
    stop: StopPoint | None = None
    end_seg: int | None = None
    missing: int | None = None
    hint: str | None = None
    caution: str | None = None
    unindexed: int | None = None  # an archived, unindexed segment before the backup's start


#: segment 1 holds the first WAL of every cluster (initdb's first checkpoint)
FIRST_SEGNO = 1
#: START TIME is recorded in whole seconds, after the checkpoint that gives START WAL
#: LOCATION: every commit before that location is older than START TIME + 1 s
START_TIME_MARGIN_US = 1_000_000


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _predicate(target: Target) -> tuple[Callable[[WalEvent], bool], str] | None:
    """Which events stop recovery, and whether it stops before or after them."""
    value = target.value
    if target.kind == "time":
        assert isinstance(value, int)
        # inclusive: stop before the first later commit; exclusive: also before one at t
        t = value if target.inclusive else value - 1
        return (lambda ev: ev.kind in XACT_END_KINDS and ev.time is not None and ev.time > t), (
            "before"
        )
    if target.kind == "xid":
        assert isinstance(value, int)
        x = value & 0xFFFFFFFF
        return (
            lambda ev: ev.kind in XACT_END_KINDS and ev.xid is not None and ev.xid & 0xFFFFFFFF == x
        ), ("after" if target.inclusive else "before")
    if target.kind == "name":
        n = value
        return (lambda ev: ev.kind == RESTORE_POINT and ev.name == n), "after"
    return None


def _stats_may_match(target: Target, summary: SegmentSummary) -> bool:
    """Whether a sparse summary's commit/abort statistics allow a matching record."""
    if summary.xact_count == 0:
        return False
    if target.kind == "time":
        t_max = summary.xact_time_max
        if t_max is None or not isinstance(target.value, int):
            return True
        return t_max > target.value if target.inclusive else t_max >= target.value
    if target.kind == "xid":
        lo, hi = summary.xid_min, summary.xid_max
        if lo is None or hi is None or not isinstance(target.value, int):
            return True
        return lo <= (target.value & 0xFFFFFFFF) <= hi
    return False


class _PathData:
    """A scan of one path plus the events matching the target (shared by its backups)."""

    def __init__(self, inv: Inventory, path: Path, first: int, target: Target) -> None:
        self.inv = inv
        self.scan = PathScan(inv, path, first)
        self.target = target
        pred = _predicate(target)
        self.how = "after"
        self.test: Callable[[WalEvent], bool] | None = None
        self.matches: list[int] = []  # indexes into scan.events
        if pred is not None:
            self.test, self.how = pred
            self.matches = [i for i, ev in enumerate(self.scan.events) if self.test(ev)]
        self.match_lsns = [self.scan.events[i].lsn for i in self.matches]
        # sparse segments that may hold a matching commit/abort
        self.candidates = [
            (segno, summary, end)
            for segno, summary, end in self.scan.sparse
            if self.test is not None and _stats_may_match(target, summary)
        ]
        self.candidate_segnos = [c[0] for c in self.candidates]

    def first_match(self, start_lsn: int, last_seg: int) -> tuple[WalEvent | None, int | None]:
        """First matching event at or after ``start_lsn`` up to ``last_seg``.

        Returns (event, None), or (None, segno) when a sparse segment that may
        match has no loadable events.
        """
        j = bisect.bisect_left(self.match_lsns, start_lsn)
        found = self.scan.events[self.matches[j]] if j < len(self.matches) else None
        if found is not None and segno_of_lsn(found.lsn, self.inv.seg_size) > last_seg:
            found = None
        limit = last_seg if found is None else segno_of_lsn(found.lsn, self.inv.seg_size)
        k = bisect.bisect_left(self.candidate_segnos, segno_of_lsn(start_lsn, self.inv.seg_size))
        assert self.test is not None or not self.candidates
        while k < len(self.candidates) and self.candidates[k][0] <= limit:
            segno, summary, end = self.candidates[k]
            events = self.inv.events_of(summary)
            if events is None:
                return None, segno
            assert self.test is not None
            hit = next(
                (
                    ev
                    for ev in events
                    if start_lsn <= ev.lsn < end and ev.kind in XACT_END_KINDS and self.test(ev)
                ),
                None,
            )
            if hit is not None:
                if found is None or hit.lsn < found.lsn:
                    found = hit
                break
            k += 1
        return found, None

    def first_match_before(self, lsn: int) -> tuple[WalEvent | None, int | None]:
        """First visible matching event before ``lsn``, and the first segment before
        ``lsn`` that may hold one but whose events cannot be loaded (or None)."""
        found: WalEvent | None = None
        if self.match_lsns and self.match_lsns[0] < lsn:
            found = self.scan.events[self.matches[0]]
        limit = segno_of_lsn(lsn if found is None else found.lsn, self.inv.seg_size)
        blind: int | None = None
        for segno, summary, end in self.candidates:
            if segno > limit:
                break
            events = self.inv.events_of(summary)
            if events is None:
                blind = segno if blind is None else blind
                continue
            assert self.test is not None
            hit = next(
                (
                    ev
                    for ev in events
                    if ev.lsn < min(lsn, end) and ev.kind in XACT_END_KINDS and self.test(ev)
                ),
                None,
            )
            if hit is not None:
                if found is None or hit.lsn < found.lsn:
                    found = hit
                break
        return found, blind

    def unseen_before(self, segno: int) -> tuple[int | None, int | None]:
        """(first segment before ``segno`` that is not archived, first one archived but
        not indexed): the WAL before a backup the planner cannot read."""
        scan = self.scan
        missing = FIRST_SEGNO if scan.first > FIRST_SEGNO and segno > FIRST_SEGNO else None
        if missing is None and scan.missing and scan.missing[0] < segno:
            missing = scan.missing[0]
        unindexed = scan.unindexed[0] if scan.unindexed and scan.unindexed[0] < segno else None
        return missing, unindexed


def first_segment_on_path(inv: Inventory, path: Path) -> int | None:
    """Lowest segment number archived on the timeline the path reads it from."""
    for i, step in enumerate(path.steps):
        lo, hi = path.segment_span(i)
        segs = inv.segments.get(step.tli)
        if not segs or lo > hi:
            continue
        j = bisect.bisect_left(segs, lo)
        if j < len(segs) and segs[j] <= hi:
            return segs[j]
    return None


def _evaluate(inv: Inventory, data: _PathData, b: Backup, target: Target) -> _Outcome:
    scan, path, seg = data.scan, data.scan.path, inv.seg_size
    start_seg = segno_of_lsn(b.start_lsn, seg)
    consistent_seg = segno_of_end_lsn(b.stop_lsn, seg)
    missing = scan.first_missing(start_seg)
    if missing is None and scan.last < consistent_seg:
        # the archive ends inside the backup's own WAL (or before it starts)
        missing = max(scan.last + 1, start_seg)
    later_exists = missing is not None and missing < scan.last

    def gap(reason: str) -> _Outcome:
        assert missing is not None
        return _Outcome(GAP, reason, missing=missing)

    if missing is not None and missing <= consistent_seg:
        return gap(f"backup {b.name} is incomplete: its WAL is missing")
    contiguous_last = scan.last if missing is None else missing - 1
    end_lsn = scan.seg_end.get(contiguous_last, (contiguous_last + 1) * seg)

    def past_end(what: str) -> _Outcome:
        if later_exists:
            return gap(f"recovery would stop at the gap before {what}")
        return _Outcome(
            ARCHIVE_ENDS,
            f"the archive ends at {format_lsn(end_lsn)} on timeline "
            f"{scan.tli_for(contiguous_last)} before {what}",
        )

    if target.kind == "immediate":
        stop = StopPoint("consistency", b.stop_lsn, b.stop_lsn, path.tli_of_lsn(b.stop_lsn - 1))
        return _Outcome("ok", "", stop, consistent_seg)
    if target.kind == "latest":
        if later_exists:
            return gap("recovery would stop at the gap; later archived WAL is unreachable")
        stop = StopPoint("end", end_lsn, end_lsn, scan.tli_for(contiguous_last))
        return _Outcome("ok", "", stop, contiguous_last)
    if target.kind == "lsn":
        x = target.value
        assert isinstance(x, int)
        if x < b.start_lsn:
            return _Outcome(
                "toonew", f"{b.name} starts at {format_lsn(b.start_lsn)}, after the target"
            )
        if x < b.stop_lsn:
            return _Outcome(
                "after",
                f"the target lies inside the window of {b.name} ({format_lsn(b.start_lsn)} .. "
                f"{format_lsn(b.stop_lsn)}), before it is consistent",
            )
        need = segno_of_lsn(x, seg)
        seg_end = scan.seg_end.get(need)
        if seg_end is not None and x >= seg_end:
            need += 1  # no record starts at or after x in that segment
        if need > contiguous_last:
            return past_end(f"LSN {format_lsn(x)}")
        how = "after" if target.inclusive else "before"
        stop = StopPoint(how, x, x, path.tli_of_lsn(x))
        return _Outcome("ok", "", stop, need)

    # time, xid, name: the first matching event from the backup's start
    if inv.summaries is None:
        return _Outcome(
            NEEDS_INDEX,
            f"a {target.kind} target needs the segment index, and this repository has none",
            hint="run walship index",
        )
    # the first matching event of the whole history decides, not the first after the start
    early, blind_early = data.first_match_before(b.start_lsn)
    if early is not None:
        return _Outcome(
            "toonew",
            f"recovery stops at the {describe_event(early)}, before {b.name} starts at "
            f"{format_lsn(b.start_lsn)}",
        )
    caution: str | None = None
    miss_before, unidx_before = data.unseen_before(start_seg)
    if blind_early is not None and (unidx_before is None or blind_early < unidx_before):
        unidx_before = blind_early
    if miss_before is not None or unidx_before is not None:
        unseen = _unseen_text(inv, data, b, miss_before, unidx_before)
        if target.kind == "time":
            assert isinstance(target.value, int)
            if b.start_time is None or target.value < b.start_time + START_TIME_MARGIN_US:
                when = (
                    f"its START TIME {format_time(b.start_time)} is not a second before the target"
                    if b.start_time is not None
                    else "its START TIME has no usable time zone"
                )
                return _Outcome(
                    "toonew",
                    f"{unseen}, and {when}: {b.name} may already hold commits made after "
                    "the target",
                    unindexed=unidx_before,
                )
            caution = (
                f"{unseen}; {b.name} was chosen because it started at "
                f"{format_time(b.start_time)}, more than a second before the target, so "
                "every commit in that WAL is older than the target"
            )
        elif target.kind == "name":
            caution = (
                f"{unseen}; a restore point named {target.value!r} there would stop recovery "
                f"before {b.name} starts, which the planner cannot check"
            )
    ev, blind = data.first_match(b.start_lsn, contiguous_last)
    if ev is None and target.kind == "xid" and unidx_before is not None:
        # the xid may have ended in the unindexed WAL before the start
        name = inv.seg_name(scan.tli_for(unidx_before), unidx_before)
        return _Outcome(
            NEEDS_INDEX, f"segment {name} is not in the segment index yet", hint="run walship index"
        )
    scan_to = contiguous_last if ev is None else segno_of_lsn(ev.lsn, seg)
    unindexed = scan.first_unindexed(start_seg, scan_to)
    if blind is not None and (unindexed is None or blind < unindexed):
        unindexed = blind
    if unindexed is not None:
        name = inv.seg_name(scan.tli_for(unindexed), unindexed)
        return _Outcome(
            NEEDS_INDEX,
            f"segment {name} is not in the segment index yet",
            hint="run walship index",
        )
    if ev is None:
        if later_exists:
            return gap(f"recovery would stop at the gap before reaching {target.describe()}")
        return _Outcome("notfound", "")
    if data.how == "before":
        stop = StopPoint("before", ev.lsn, ev.end_lsn, path.tli_of_lsn(ev.lsn), ev)
        consistent = ev.lsn >= b.stop_lsn
    else:
        stop = StopPoint("after", ev.end_lsn, ev.end_lsn, path.tli_of_lsn(ev.lsn), ev)
        consistent = ev.end_lsn >= b.stop_lsn
    if not consistent:
        return _Outcome(
            "after",
            f"recovery stops at the {describe_event(ev)}, inside the window of {b.name} "
            f"({format_lsn(b.start_lsn)} .. {format_lsn(b.stop_lsn)}), before it is consistent",
        )
    need = segno_of_end_lsn(ev.end_lsn, seg)
    if need > contiguous_last:
        return past_end(target.describe())
    # an xid ends once: found after the start, the WAL before it cannot hold its end
    unindexed = None if target.kind == "xid" else unidx_before
    return _Outcome("ok", "", stop, need, caution=caution, unindexed=unindexed)


def _unseen_text(
    inv: Inventory, data: _PathData, b: Backup, missing: int | None, unindexed: int | None
) -> str:
    """What of the WAL before backup ``b`` the planner cannot read."""
    scan = data.scan
    if missing is not None and missing < scan.first:
        first = inv.seg_name(scan.tli_for(scan.first), scan.first)
        text = f"the WAL before {first} is not in the repository"
    elif missing is not None:
        text = f"segment {inv.seg_name(scan.tli_for(missing), missing)} is missing"
    else:
        assert unindexed is not None
        text = f"segment {inv.seg_name(scan.tli_for(unindexed), unindexed)} is not indexed"
    return f"{text} (before {b.name} starts), so the planner cannot see the commits there"


def _required_ranges(scan: PathScan, first: int, last: int) -> list[SegmentRange]:
    out: list[SegmentRange] = []
    for segno in range(first, last + 1):
        tli = scan.tli_for(segno)
        if out and out[-1].tli == tli and out[-1].last == segno - 1:
            out[-1] = out[-1]._replace(last=segno)
        else:
            out.append(SegmentRange(tli, segno, segno))
    return out


def _windows(inv: Inventory, scan: PathScan, b: Backup, missing: int | None) -> list[Window]:
    contiguous_last = scan.last if missing is None else missing - 1
    if contiguous_last < scan.first:
        return []
    end = scan.seg_end.get(contiguous_last, (contiguous_last + 1) * inv.seg_size)
    out: list[Window] = []
    for step in scan.path.steps:
        lo, hi = max(step.begin, b.stop_lsn), min(step.end, end)
        if lo >= hi:
            continue
        times: list[int] = []
        i = bisect.bisect_left(scan.event_lsns, lo)
        k = bisect.bisect_left(scan.event_lsns, hi)
        times += [
            ev.time for ev in scan.events[i:k] if ev.kind in XACT_END_KINDS and ev.time is not None
        ]
        lo_seg, hi_seg = segno_of_lsn(lo, inv.seg_size), segno_of_end_lsn(hi, inv.seg_size)
        a = bisect.bisect_left(scan.sparse_segnos, lo_seg)
        z = bisect.bisect_right(scan.sparse_segnos, hi_seg)
        for _segno, summary, _end in scan.sparse[a:z]:
            inside = lo <= summary.start_lsn and summary.start_lsn + inv.seg_size <= hi
            events = None if inside else inv.events_of(summary)
            if events is None:
                times += [t for t in (summary.xact_time_min, summary.xact_time_max) if t]
            else:
                times += [
                    ev.time
                    for ev in events
                    if lo <= ev.lsn < hi and ev.kind in XACT_END_KINDS and ev.time is not None
                ]
        first_t = min(times) if times else None
        last_t = max(times) if times else None
        out.append(Window(step.tli, lo, hi, first_t, last_t))
    return out


def _settings(target: Target, tli: int, restore_command: str, action: str) -> dict[str, str]:
    """The recovery settings (the rules are :func:`walship.pg.recovery.settings`)."""
    from ..pg import recovery

    v = target.value
    text: str | None = None
    if target.kind == "time":
        assert isinstance(v, int)
        text = format_time(v)
    elif target.kind == "lsn":
        assert isinstance(v, int)
        text = format_lsn(v)
    elif target.kind in ("xid", "name"):
        text = str(v)
    return recovery.settings(
        target.kind,
        text,
        restore_command=restore_command,
        timeline=str(tli),
        inclusive=target.inclusive,
        action=action,
    )


def parse_timeline(text: str) -> str | int:
    """``--timeline``: latest | current | a positive number (ValueError otherwise)."""
    t = text.strip().lower()
    if t in ("latest", "current"):
        return t
    n = int(t, 16) if t.startswith("0x") else int(t)
    if not 1 <= n <= 0xFFFFFFFF:
        raise ValueError(text)
    return n


def plan(
    inv: Inventory,
    target: Target,
    *,
    timeline: str | int = "latest",
    backup: str | None = None,
    restore_command: str = "walship fetch %f %p",
    action: str = "pause",
) -> Plan:
    """The restore plan for ``target`` (see the module docstring for the rules)."""
    request = str(timeline)
    candidates = [b for b in inv.backups if backup is None or b.matches(backup)]
    candidates.sort(key=lambda b: (b.stop_lsn, b.start_lsn, b.name), reverse=True)
    result = Plan(verdict=NO_BACKUP, reason="", target=target, timeline_request=request)
    if not candidates:
        result.reason = (
            "no base backup in the repository"
            if backup is None
            else f"no base backup named {backup!r}"
        )
        result.hint = (
            "take a base backup with `walship backup-push` (or pg_basebackup with archiving "
            "through walship, which archives a .backup file)"
            if backup is None
            else "list backups with `walship backup-list`"
        )
        return result

    paths: dict[int, Path | None] = {}
    datas: dict[int, _PathData] = {}
    first_seg = min(segno_of_lsn(b.start_lsn, inv.seg_size) for b in candidates)
    outcomes: list[tuple[Backup, _Outcome, Path | None]] = []
    for b in candidates:
        tli = b.start_tli if timeline in ("current", "latest") else timeline
        assert isinstance(tli, int)
        if timeline == "latest":
            tli = newest_timeline(inv, b.start_tli)
        if tli not in paths:
            paths[tli] = timeline_path(inv, tli)
        path = paths[tli]
        if path is None:
            why = inv.history_errors.get(tli)
            reason = (
                f"timeline {tli}'s history file is unusable: {why}"
                if why
                else f"timeline {tli} does not exist (no {tli:08X}.history in the archive)"
            )
            outcomes.append((b, _Outcome(TIMELINE, reason), None))
            continue
        if (
            path.tli_of_lsn(b.checkpoint_lsn) != b.start_tli
            or path.tli_of_lsn(max(b.stop_lsn - 1, 0)) != b.stop_tli
        ):
            fork = next((s for s in path.steps if s.tli == b.start_tli), None)
            detail = (
                f"timeline {tli} left timeline {b.start_tli} at {format_lsn(fork.end)}"
                if fork is not None
                else f"timeline {b.start_tli} is not in timeline {tli}'s history"
            )
            outcomes.append(
                (
                    b,
                    _Outcome(
                        TIMELINE,
                        f"backup {b.name} (timeline {b.start_tli}, checkpoint "
                        f"{format_lsn(b.checkpoint_lsn)}) is not on timeline {tli}'s path: "
                        f"{detail}",
                        hint="choose the timeline containing the backup with --timeline",
                    ),
                    path,
                )
            )
            continue
        if tli not in datas:
            # from the first archived segment: the whole history decides (docs/planning.md)
            on_path = first_segment_on_path(inv, path)
            first = first_seg if on_path is None else min(first_seg, on_path)
            datas[tli] = _PathData(inv, path, first, target)
        out = _evaluate(inv, datas[tli], b, target)
        outcomes.append((b, out, path))
        if out.kind == "ok":
            break

    unindexed = next((o.unindexed for _, o, _ in outcomes if o.unindexed is not None), None)
    if unindexed is not None:
        first_path = next(p for _, o, p in outcomes if o.unindexed is not None)
        assert first_path is not None
        tli_u = datas[first_path.target_tli].scan.tli_for(unindexed)
        result.unindexed = inv.seg_name(tli_u, unindexed)
    chosen = next(((b, o, p) for b, o, p in outcomes if o.kind == "ok"), None)
    if chosen is not None:
        b, out, path = chosen
        assert path is not None and out.stop is not None and out.end_seg is not None
        data = datas[path.target_tli]
        start_seg = segno_of_lsn(b.start_lsn, inv.seg_size)
        missing = data.scan.first_missing(start_seg)
        result.verdict = REACHABLE
        result.reason = f"{target.describe()} is reachable from backup {b.name}"
        result.backup, result.path, result.stop = b, path, out.stop
        result.segments = _required_ranges(data.scan, start_seg, out.end_seg)
        result.settings = _settings(target, path.target_tli, restore_command, action)
        result.caution = out.caution
        _fill_window(inv, result, data, b, missing, candidates, paths)
        if target.kind == "latest" and out.stop.tli is not None:
            result.notes.append(
                f"recovery replays all archived WAL up to {format_lsn(out.stop.lsn)}"
            )
        if timeline == "latest" and path.target_tli != b.start_tli:
            result.notes.append(
                f"recovery_target_timeline is set to {path.target_tli} explicitly, which is "
                "what 'latest' chooses today; a timeline archived later would change 'latest'"
            )
        return result

    return _failure(inv, result, target, outcomes, datas, candidates, paths)


def _fill_window(
    inv: Inventory,
    result: Plan,
    data: _PathData,
    b: Backup,
    missing: int | None,
    candidates: list[Backup],
    paths: dict[int, Path | None],
) -> None:
    scan = data.scan
    result.windows = _windows(inv, scan, b, missing)
    contiguous_last = scan.last if missing is None else missing - 1
    end = scan.seg_end.get(contiguous_last, (contiguous_last + 1) * inv.seg_size)
    last_time = max((w.last_time for w in result.windows if w.last_time is not None), default=None)
    result.latest = (end, last_time)
    path = scan.path
    usable = []
    for c in candidates:
        c_seg = segno_of_lsn(c.start_lsn, inv.seg_size)
        gap = scan.first_missing(c_seg)
        if (
            path.tli_of_lsn(c.checkpoint_lsn) == c.start_tli
            and path.tli_of_lsn(max(c.stop_lsn - 1, 0)) == c.stop_tli
            and (gap is None or gap > segno_of_end_lsn(c.stop_lsn, inv.seg_size))
        ):
            usable.append(c)
    if usable:
        oldest = min(usable, key=lambda c: c.stop_lsn)
        result.earliest = (oldest.stop_lsn, oldest.stop_time)


def _failure(
    inv: Inventory,
    result: Plan,
    target: Target,
    outcomes: list[tuple[Backup, _Outcome, Path | None]],
    datas: dict[int, _PathData],
    candidates: list[Backup],
    paths: dict[int, Path | None],
) -> Plan:
    trivial = {"toonew", "after", "notfound", TIMELINE}
    main = next(((b, o, p) for b, o, p in outcomes if o.kind not in trivial), None)
    if main is not None:
        b, out, path = main
        result.verdict = out.kind
        result.backup, result.path = b, path
        result.reason = out.reason
        result.hint = out.hint
        if out.missing is not None and path is not None:
            scan = datas[path.target_tli].scan
            tli = scan.tli_for(out.missing)
            result.missing = inv.seg_name(tli, out.missing)
            result.reason += f"; first missing segment {result.missing}"
            if inv.has_partial(tli, out.missing):
                result.notes.append(
                    f"only {result.missing}.partial is archived; PostgreSQL never reads "
                    ".partial files"
                )
            result.hint = result.hint or "restore the missing segment into the repository"
            _explain_removed(inv, result, tli, out.missing, path.target_tli)
        if out.kind == ARCHIVE_ENDS and path is not None:
            _latest(inv, result, datas[path.target_tli], b)
        return result

    notfound = [(b, o, p) for b, o, p in outcomes if o.kind == "notfound"]
    # backups the target precedes, or lies inside the window of
    after = [(b, o, p) for b, o, p in outcomes if o.kind in ("toonew", "after")]
    if notfound:
        b, out, path = notfound[-1]  # the oldest backup scanned the most WAL
        assert path is not None
        data = datas[path.target_tli]
        result.backup, result.path = b, path
        where = _find_anywhere(inv, target, path)
        if target.kind == "name" and where is None and not after:
            result.verdict = UNKNOWN_NAME
            result.reason = f'no restore point named "{target.value}" in the archived WAL'
            result.hint = "list restore points with walship wal-show"
            return result
        if where is not None and not where[2] and not after:
            tli, lsn, _ = where
            result.verdict = TIMELINE
            result.reason = (
                f"{target.describe()} is on timeline {tli} at {format_lsn(lsn)}, which is not "
                f"on the path of timeline {path.target_tli} ({path.describe()})"
            )
            result.hint = f"use --timeline {tli}"
            return result
        if where is not None and not after:
            tli, lsn, _ = where
            segno = segno_of_lsn(lsn, inv.seg_size)
            if not inv.has(tli, segno):
                # known from the index, but the segment itself is gone
                result.verdict = GAP
                result.missing = inv.seg_name(tli, segno)
                result.reason = (
                    f"{target.describe()} is in segment {result.missing}, which was archived "
                    "and indexed but is missing from the repository"
                )
                result.hint = "restore the missing segment into the repository"
                _explain_removed(inv, result, tli, segno, path.target_tli)
                return result
        if after:
            return _no_backup(result, target, after)
        if where is not None:
            result.verdict = NO_BACKUP
            result.backup = None
            oldest = min(candidates, key=lambda c: (c.stop_lsn, c.start_lsn))
            result.reason = (
                f"no backup is consistent before {target.describe()} (at "
                f"{format_lsn(where[1])} on timeline {where[0]}): the oldest backup, "
                f"{_consistent(oldest)}"
            )
            return result
        result.verdict = ARCHIVE_ENDS
        what = "commit after the target time" if target.kind == "time" else target.describe()
        result.reason = (
            f"the archived WAL on timeline {path.target_tli}'s path ends before any {what}"
            if target.kind == "time"
            else f"{what} does not occur in the archived WAL after backup {b.name}"
        )
        _latest(inv, result, data, b)
        return result
    if after:
        return _no_backup(result, target, after)
    # every backup is off the requested path
    b, out, path = outcomes[0]
    result.verdict = TIMELINE
    result.backup, result.path = b, path
    result.reason = out.reason
    result.hint = out.hint
    return result


def _explain_removed(inv: Inventory, result: Plan, tli: int, segno: int, target: int) -> None:
    """A missing segment ``walship delete`` removed on purpose: say so, and where the
    oldest restorable point of the timeline is (retention/state.json)."""
    state = inv.retention
    why = state.find(tli, segno) if state is not None else None
    if state is None or why is None:
        return
    result.reason += f" (removed by retention on {why.when()}: {why.policy or 'walship delete'})"
    point = state.restorable.get(target)
    if point is not None:
        when = f" ({point.time.replace('T', ' ').removesuffix('Z')} UTC)" if point.time else ""
        result.hint = (
            f"the oldest restorable point on timeline {target} is {format_lsn(point.lsn)}{when}, "
            f"the consistency point of backup {point.backup}: choose a later target, or "
            "--immediate to restore an older backup to its consistency point"
        )
    else:
        result.hint = (
            "choose a later target, or --immediate to restore an older backup to its "
            "consistency point"
        )


def _consistent(b: Backup) -> str:
    when = f" ({format_time(b.stop_time)})" if b.stop_time is not None else ""
    return f"{b.name}, became consistent at {format_lsn(b.stop_lsn)}{when}"


def _no_backup(
    result: Plan, target: Target, after: list[tuple[Backup, _Outcome, Path | None]]
) -> Plan:
    """Every backup is too new for the target, or has it inside its window."""
    oldest, out, _ = min(after, key=lambda o: (o[0].stop_lsn, o[0].start_lsn))
    result.verdict = NO_BACKUP
    result.backup = None
    result.reason = (
        f"no backup is consistent before {target.describe()}: the oldest backup, "
        f"{_consistent(oldest)}; {out.reason}"
    )
    result.hint = "restore from an older base backup if you have one, or choose a later target"
    return result


def _latest(inv: Inventory, result: Plan, data: _PathData, b: Backup) -> None:
    scan = data.scan
    missing = scan.first_missing(segno_of_lsn(b.start_lsn, inv.seg_size))
    result.windows = _windows(inv, scan, b, missing)
    contiguous_last = scan.last if missing is None else missing - 1
    end = scan.seg_end.get(contiguous_last, (contiguous_last + 1) * inv.seg_size)
    last_time = max((w.last_time for w in result.windows if w.last_time is not None), default=None)
    result.latest = (end, last_time)
    if last_time is not None:
        result.reason += (
            f"; latest reachable time: just before {format_time(last_time)} "
            "(the last commit in the archive on this path)"
        )
    result.hint = "choose an earlier target, or --latest to replay everything archived"


def _find_anywhere(inv: Inventory, target: Target, path: Path) -> tuple[int, int, bool] | None:
    """First occurrence of a name/xid target in any summary: (TLI, LSN, on the path?)."""
    pred = _predicate(target)
    if pred is None or inv.summaries is None or target.kind == "time":
        return None
    test = pred[0]
    found: tuple[int, int, bool] | None = None
    for (tli, segno), summary in sorted(inv.summaries.items()):
        events: Sequence[WalEvent] | None = summary.events
        if summary.sparse and _stats_may_match(target, summary):
            events = inv.events_of(summary) or summary.events
        for ev in events or ():
            if not test(ev):
                continue
            step = path.steps[path.step_of_segment(segno)]
            on_path = path.tli_of_lsn(ev.lsn) == tli or (step.tli == tli and ev.lsn < step.end)
            if found is None or (on_path and not found[2]):
                found = (tli, ev.lsn, on_path)
            if on_path:
                return found
    return found


# --- archive overview (wal-show) -------------------------------------------------


class TimelineInfo(NamedTuple):
    tli: int
    parent: int | None
    switchpoint: int | None  # where this timeline left its parent
    reason: str | None
    history: str  # "ok" | "missing" | "none needed" | error text
    ranges: list[tuple[int, int]]  # runs of archived segment numbers
    gaps: list[tuple[int, int]]  # runs of missing segment numbers between them, unexplained
    partials: list[int]
    first_time: int | None
    last_time: int | None
    restore_points: list[tuple[str, int, int | None]]  # (name, lsn, time)
    children: list[int]
    #: missing runs between the ranges that ``walship delete`` removed on purpose
    #: (retention/state.json): not gaps, though a restore cannot cross them either
    removed: tuple[Removed, ...] = ()


def _runs(segnos: Iterable[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for s in segnos:
        if runs and runs[-1][1] == s - 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return runs


def overview(inv: Inventory) -> list[TimelineInfo]:
    """Per timeline: parent and switch point, archived ranges, gaps, time span."""
    out: list[TimelineInfo] = []
    children: dict[int, list[int]] = {}
    for tli, entries in inv.histories.items():
        if entries:
            children.setdefault(entries[-1].parent_tli, []).append(tli)
    for tli in inv.timelines():
        history = inv.histories.get(tli)
        parent = history[-1].parent_tli if history else None
        switch = history[-1].switchpoint if history else None
        reason = history[-1].reason if history else None
        if tli in inv.history_errors:
            status = inv.history_errors[tli]
        elif history is not None:
            status = "ok"
        else:
            status = "none needed" if tli == 1 else "missing"
        segs = inv.segments.get(tli, [])
        ranges = _runs(segs)
        gaps = [(a[1] + 1, b[0] - 1) for a, b in itertools.pairwise(ranges)]
        removed: list[Removed] = []
        if inv.retention is not None and gaps:
            unexplained: list[tuple[int, int]] = []
            for a, b in gaps:
                covered, rest = inv.retention.split(tli, a, b)
                removed += covered
                unexplained += rest
            gaps = unexplained
        first_t: int | None = None
        last_t: int | None = None
        rps: list[tuple[str, int, int | None]] = []
        if inv.summaries is not None:
            for segno in segs:
                summary = inv.summaries.get((tli, segno))
                if summary is None:
                    continue
                events: Sequence[WalEvent] = summary.events
                if summary.sparse:
                    loaded = None
                    if switch is not None and summary.start_lsn < switch:
                        loaded = inv.events_of(summary)  # skip the parent's copied commits
                    if loaded is None:
                        times = [summary.xact_time_min, summary.xact_time_max]
                        for t in times:
                            if t is not None:
                                first_t = t if first_t is None else min(first_t, t)
                                last_t = t if last_t is None else max(last_t, t)
                    else:
                        events = loaded
                for ev in events:
                    if switch is not None and ev.lsn < switch:
                        continue  # copied from the parent timeline
                    if ev.kind in XACT_END_KINDS and ev.time is not None:
                        first_t = ev.time if first_t is None else min(first_t, ev.time)
                        last_t = ev.time if last_t is None else max(last_t, ev.time)
                    elif ev.kind == RESTORE_POINT and ev.name is not None:
                        rps.append((ev.name, ev.lsn, ev.time))
        out.append(
            TimelineInfo(
                tli,
                parent,
                switch,
                reason,
                status,
                ranges,
                gaps,
                list(inv.partials.get(tli, [])),
                first_t,
                last_t,
                rps,
                sorted(children.get(tli, [])),
                tuple(removed),
            )
        )
    return out


def to_jsonable(value: Any) -> Any:
    """Helper for reports: NamedTuples to dicts, recursively."""
    if hasattr(value, "_asdict"):
        return {k: to_jsonable(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def parse_time(text: str) -> int:
    """``--time``: ISO 8601 / PostgreSQL timestamptz text with a zone -> µs since the epoch.

    Accepts ``2026-11-23 14:30:00+00``, ``2026-11-23T14:30:00.25Z``,
    ``... +02:00``, ``... UTC``. A time without a zone is refused (ValueError):
    PostgreSQL would read it in the server's TimeZone, which walship cannot see.
    """
    raw = text.strip()
    body = raw
    for suffix in (" UTC", " GMT", " utc", " gmt", "UTC", "GMT"):
        if body.endswith(suffix) and not body.endswith("+" + suffix):
            body = body[: -len(suffix)].rstrip() + "+00:00"
            break
    try:
        dt = datetime.fromisoformat(body)
    except ValueError:
        raise ValueError(
            f"--time {raw!r} is not a timestamp: use ISO 8601 with a zone, e.g. "
            "'2026-11-23 14:30:00+00' or '2026-11-23T14:30:00Z'"
        ) from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(
            f"--time {raw!r} has no time zone: add an offset such as +00, +02:00 or Z "
            "(walship does not guess the server's TimeZone)"
        )
    return (dt - EPOCH) // timedelta(microseconds=1)
