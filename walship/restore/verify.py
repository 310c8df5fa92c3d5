"""Archive verification: pure checks of an :class:`Inventory` (``walship verify``).

Checks (docs/planning.md):

* history files: readable; consistent with each other (the file of timeline
  N is copied verbatim into every descendant's file, so two files that claim
  timeline N's ancestry differently mean two servers chose the same timeline
  id: split brain); present for every timeline > 1 that has WAL, backups or
  descendants; no timeline number skipped (``latest`` probing would stop);
  no segment of a timeline before the point where that timeline began.
* WAL continuity: for every timeline, along its path, from the start of the
  oldest backup on that path (or the first archived segment when there is
  none) to the last archived segment: every segment PostgreSQL would ask for
  is there, on the exact timeline.
* backups: readable, their checkpoint on their own timeline, and every
  segment from their start to their consistency point present; for walship's
  own backups also every part their manifest lists
  (:func:`check_parts`; ``--deep`` re-reads the parts and compares digests).

* retention: a gap inside a range ``walship delete`` recorded as removed on
  purpose (``retention/state.json``, :mod:`walship.restore.removed`) is info,
  not an error; any other gap (after the recorded ranges, or inside a kept
  backup's own WAL, which :func:`check_backups` checks) stays an error.

Problems are errors (exit 20), warnings or info (reported, exit 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from ..manifest import split_key
from ..pg import format_lsn, segno_of_end_lsn, segno_of_lsn
from .planner import Inventory, Path, PathScan, last_segment_on_path, timeline_path

if TYPE_CHECKING:
    from ..storage.base import ObjectInfo
    from .removed import Removed

ERROR = "error"
WARNING = "warning"
#: reported, never a failure: e.g. WAL ``walship delete`` removed on purpose
INFO = "info"

#: ``walship verify`` exit code when it found an error
EXIT_PROBLEMS = 20


class Problem(NamedTuple):
    severity: str  # ERROR | WARNING | INFO
    kind: str  # history | split-brain | gap | backup | integrity | index | no-backup | retention
    message: str
    objects: tuple[str, ...] = ()  # archive file names concerned


def check(inv: Inventory) -> list[Problem]:
    problems: list[Problem] = []
    problems += check_histories(inv)
    problems += check_backups(inv)
    problems += check_continuity(inv)
    if inv.retention_error is not None:
        problems.append(Problem(ERROR, "retention", inv.retention_error, ()))
    reported = {name for p in problems for name in p.objects}
    problems += check_index(inv, reported)
    return problems


def check_histories(inv: Inventory) -> list[Problem]:
    out: list[Problem] = []
    for tli, why in sorted(inv.history_errors.items()):
        out.append(
            Problem(
                ERROR, "history", f"{tli:08X}.history is unusable: {why}", (f"{tli:08X}.history",)
            )
        )
    for tli, history in sorted(inv.histories.items()):
        name = f"{tli:08X}.history"
        last = 0
        for entry in history:
            if entry.switchpoint < last:
                out.append(
                    Problem(
                        ERROR,
                        "history",
                        f"{name}: switch points go backwards at timeline {entry.parent_tli}",
                        (name,),
                    )
                )
            last = entry.switchpoint
        for i, entry in enumerate(history):
            parent = entry.parent_tli
            if parent == 1:
                continue
            theirs = inv.histories.get(parent)
            if theirs is None:
                if parent not in inv.history_errors:
                    out.append(
                        Problem(
                            ERROR,
                            "history",
                            f"{parent:08X}.history is missing, but timeline {tli} descends from "
                            f"timeline {parent}",
                            (f"{parent:08X}.history",),
                        )
                    )
                continue
            mine = [(e.parent_tli, e.switchpoint) for e in history[:i]]
            claimed = [(e.parent_tli, e.switchpoint) for e in theirs]
            if mine != claimed:
                out.append(
                    Problem(
                        ERROR,
                        "split-brain",
                        f"split brain: {name} says timeline {parent} descends from "
                        f"{_ancestry(mine)}, but {parent:08X}.history says {_ancestry(claimed)}; "
                        "two servers used the same timeline id",
                        (name, f"{parent:08X}.history"),
                    )
                )
    needs_history: dict[int, str] = {}
    for tli in inv.segments:
        needs_history.setdefault(tli, "archived WAL")
    for tli in inv.partials:
        needs_history.setdefault(tli, "archived WAL")
    for b in inv.backups:
        needs_history.setdefault(b.start_tli, f"backup {b.name}")
    for tli, why in sorted(needs_history.items()):
        if tli > 1 and not inv.history_present(tli):
            out.append(
                Problem(
                    ERROR,
                    "history",
                    f"timeline {tli} has {why} but no {tli:08X}.history",
                    (f"{tli:08X}.history",),
                )
            )
    if inv.histories or inv.history_errors:
        top = max([*inv.histories, *inv.history_errors])
        for tli in range(2, top):
            if not inv.history_present(tli):
                out.append(
                    Problem(
                        ERROR,
                        "history",
                        f"{tli:08X}.history is missing although timeline {top} exists: "
                        f"recovery_target_timeline = 'latest' stops probing at timeline {tli - 1}",
                        (f"{tli:08X}.history",),
                    )
                )
    for tli, history in sorted(inv.histories.items()):
        if not history:
            continue
        begin_seg = segno_of_lsn(history[-1].switchpoint, inv.seg_size)
        early = [s for s in inv.segments.get(tli, []) if s < begin_seg]
        if early:
            names = tuple(inv.seg_name(tli, s) for s in early)
            out.append(
                Problem(
                    ERROR,
                    "split-brain",
                    f"{len(early)} segment(s) of timeline {tli} ({names[0]}...) precede its start "
                    f"at {format_lsn(history[-1].switchpoint)} per {tli:08X}.history: they belong "
                    "to another history of the same timeline id",
                    names,
                )
            )
    return out


def _ancestry(entries: list[tuple[int, int]]) -> str:
    if not entries:
        return "nothing (a first timeline)"
    return ", ".join(f"{p} until {format_lsn(lsn)}" for p, lsn in entries)


def _own_path(inv: Inventory, tli: int) -> Path | None:
    return timeline_path(inv, tli)


def check_backups(inv: Inventory) -> list[Problem]:
    out: list[Problem] = []
    for key, why in sorted(inv.backup_errors.items()):
        name = key.rsplit("/", 1)[-1]
        out.append(Problem(ERROR, "backup", f"backup file {name} is unusable: {why}", (name,)))
    if not inv.backups:
        out.append(
            Problem(
                WARNING,
                "no-backup",
                "no base backup found (no walship backup manifest, no .backup file "
                "archived); nothing can be restored from WAL alone",
            )
        )
    for b in inv.backups:
        path = _own_path(inv, b.stop_tli) or _own_path(inv, b.start_tli)
        if path is None:
            continue  # reported as a missing history
        if path.tli_of_lsn(b.checkpoint_lsn) != b.start_tli:
            out.append(
                Problem(
                    ERROR,
                    "backup",
                    f"backup {b.name}: its checkpoint {format_lsn(b.checkpoint_lsn)} "
                    f"is not on timeline {b.start_tli} per the history files",
                    (b.name,),
                )
            )
            continue
        start = segno_of_lsn(b.start_lsn, inv.seg_size)
        stop = segno_of_end_lsn(b.stop_lsn, inv.seg_size)
        scan = PathScan(inv, path, start)
        missing = [
            inv.seg_name(scan.tli_for(s), s)
            for s in range(start, stop + 1)
            if not inv.has(scan.tli_for(s), s)
        ]
        if missing:
            out.append(
                Problem(
                    ERROR,
                    "backup",
                    f"backup {b.name} is incomplete: {len(missing)} of its "
                    f"{stop - start + 1} WAL segment(s) are missing, first "
                    f"{missing[0]}",
                    tuple(missing),
                )
            )
    return out


def check_parts(inv: Inventory, listed: list[ObjectInfo]) -> list[Problem]:
    """walship backups: every part of each manifest is stored.

    Presence only: listings report sizes differently per backend (the local
    one counts its own metadata header); ``--deep`` checks the contents.

    ``listed`` is the listing of ``basebackups/``. Prefixes without a manifest
    (an interrupted or running backup-push) are reported as warnings: they are
    never restored or planned, and ``walship delete --garbage`` removes them.
    """
    out: list[Problem] = []
    sizes = {i.key: i.size for i in listed}
    complete = set()
    for b in inv.backups:
        if b.source != "walship":
            continue
        complete.add(b.name)
        missing = [k for k, _size, _sha in b.parts if k not in sizes]
        if missing:
            out.append(
                Problem(
                    ERROR,
                    "backup",
                    f"backup {b.name} is damaged: {len(missing)} of its {len(b.parts)} "
                    f"part(s) are missing, first {missing[0]}",
                    (b.name,),
                )
            )
    for key in inv.backup_errors:
        parts = split_key(key)
        if parts is not None:
            complete.add(parts[0])
    leftovers = sorted({p[0] for i in listed if (p := split_key(i.key)) is not None} - complete)
    if leftovers:
        out.append(
            Problem(
                WARNING,
                "backup",
                f"{len(leftovers)} incomplete backup(s) without a manifest (interrupted or "
                f"running backup-push), first {leftovers[0]}: never restored; "
                "`walship delete --garbage` removes old ones",
                tuple(leftovers),
            )
        )
    return out


def check_continuity(inv: Inventory) -> list[Problem]:
    """Gaps per timeline path, from the oldest backup on it to the archive's end."""
    missing: dict[tuple[int, int], set[int]] = {}  # (tli, segno) -> target timelines
    for target in inv.timelines():
        path = timeline_path(inv, target)
        if path is None:
            continue
        on_path = [b for b in inv.backups if path.tli_of_lsn(b.checkpoint_lsn) == b.start_tli]
        if on_path:
            first = min(segno_of_lsn(b.start_lsn, inv.seg_size) for b in on_path)
        else:
            present = [
                s
                for i, step in enumerate(path.steps)
                for s in inv.segments.get(step.tli, [])
                if path.segment_span(i)[0] <= s <= path.segment_span(i)[1]
            ]
            if not present:
                continue
            first = min(present)
        last = last_segment_on_path(inv, path)
        if last is None or last < first:
            continue
        scan = PathScan(inv, path, first)
        for segno in scan.missing:
            missing.setdefault((scan.tli_for(segno), segno), set()).add(target)
    out: list[Problem] = []
    state = inv.retention
    # tli, first, last, targets, the retention record (None: a real gap)
    runs: list[tuple[int, int, int, set[int], Removed | None]] = []
    for (tli, segno), targets in sorted(missing.items()):
        why = state.find(tli, segno) if state is not None else None
        if runs and runs[-1][0] == tli and runs[-1][2] == segno - 1 and runs[-1][4] == why:
            runs[-1] = (tli, runs[-1][1], segno, runs[-1][3] | targets, why)
        else:
            runs.append((tli, segno, segno, set(targets), why))
    for tli, first, last, targets, why in runs:
        names = tuple(inv.seg_name(tli, s) for s in range(first, last + 1))
        what = names[0] if first == last else f"{names[0]}..{names[-1]} ({len(names)} segments)"
        if why is not None:
            out.append(
                Problem(
                    INFO,
                    "retention",
                    f"{what} of timeline {tli} removed by retention on {why.when()} "
                    f"({why.policy or 'walship delete'}): the backups before it restore to "
                    "their consistency point only",
                    names,
                )
            )
            continue
        partial = " (only a .partial is archived)" if inv.has_partial(tli, first) else ""
        tl = ", ".join(str(t) for t in sorted(targets))
        out.append(
            Problem(
                ERROR,
                "gap",
                f"gap: {what} missing on timeline {tli}{partial}; recovery along "
                f"timeline(s) {tl} stops there",
                names,
            )
        )
    return out


def check_index(inv: Inventory, reported: set[str] | None = None) -> list[Problem]:
    """Index coverage; segments already named in ``reported`` are not repeated."""
    if inv.summaries is None:
        return [
            Problem(
                WARNING,
                "index",
                "no segment index: time, xid and restore-point targets cannot be "
                "planned (run walship index)",
            )
        ]
    out: list[Problem] = []
    # a segment that was indexed but is gone was archived once: it has been lost
    # (this also catches a lost tail, which continuity checks cannot see)
    # (WAL walship delete removed on purpose is no loss)
    state = inv.retention
    vanished = [
        inv.seg_name(tli, segno)
        for tli, segno in sorted(inv.summaries)
        if not inv.has(tli, segno)
        and inv.seg_name(tli, segno) not in (reported or set())
        and (state is None or state.find(tli, segno) is None)
    ]
    if vanished:
        out.append(
            Problem(
                ERROR,
                "index",
                f"{len(vanished)} segment(s) were archived and indexed but are missing from "
                f"the repository, first {vanished[0]}",
                tuple(vanished[:100]),
            )
        )
    unindexed = [
        inv.seg_name(tli, s)
        for tli, segs in sorted(inv.segments.items())
        for s in segs
        if (tli, s) not in inv.summaries
    ]
    if unindexed:
        out.append(
            Problem(
                WARNING,
                "index",
                f"{len(unindexed)} segment(s) are not in the segment index yet, first "
                f"{unindexed[0]} (run walship index)",
                tuple(unindexed[:100]),
            )
        )
    return out


def has_errors(problems: list[Problem]) -> bool:
    return any(p.severity == ERROR for p in problems)
