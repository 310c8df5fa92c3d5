"""Retention: which backups, WAL and leftovers ``walship delete`` removes (docs/retention.md).

Two halves:

* pure computation (no I/O): :func:`parse_duration`, :func:`select` (policy ->
  which backups stay, and which of them stay restorable to any point in time
  or only to their consistency point), :func:`keep_rule` (kept backups and the
  timeline histories -> which WAL stays), :func:`restorable` (the oldest point
  per timeline);
* repository I/O: :func:`scan` (one streamed listing of ``wal/`` into compact
  per-timeline arrays, the backups' manifests and ``.backup`` files, the
  garbage), :func:`plan` (the scan, the policy and the planner's check that
  every promised point stays REACHABLE), :func:`execute` (the deletes, in the
  order that keeps a crash harmless).

What is removed is computed from the timeline histories and the backups'
LSNs and timelines, never from the order of object names: WAL is kept from the
start of the oldest kept backup along every timeline that backup can reach;
nothing at or after the newest backup's start segment is deleted on any
timeline, nor any WAL of a timeline above the newest backup's that no kept
backup reaches, nor WAL of a timeline without a usable history file; history
files are never deleted.

Memory: one listing of ``wal/`` is kept as two 8-byte integers per segment
(number and size), never as one object per key; manifests are read a few at
a time and only their LSNs, times and sizes kept; deletes are streamed.
"""

from __future__ import annotations

import bisect
import calendar
import re
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .. import log, repository
from ..codec import objects
from ..errors import ContainerNotFound, UsageError, WalshipError
from ..index.entries import INDEX_PREFIX, PACK_PREFIX
from ..manifest import (
    BACKUPS_PREFIX,
    MANIFEST_LEAF,
    backup_prefix,
    manifest_key,
    split_key,
)
from ..pg import (
    FileKind,
    classify,
    parse_segment_name,
    segment_file_name,
    segno_of_end_lsn,
    segno_of_lsn,
    segs_per_xlogid,
)
from ..pg.history import HistoryEntry, parse_history
from ..restore import planner, removed
from ..restore.backups import Backup, PgBackupFileSource, WalshipManifestSource
from ..restore.inventory import parallel, read_object

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..config import Config
    from ..storage.base import Backend

US = 1_000_000
#: leaf written under basebackups/<name>/ before a backup's manifest is deleted: a
#: prefix holding it is a deletion in progress, finished by every later delete run
TOMBSTONE_LEAF = "deleting"
KIND_TOMBSTONE = "backup-deleting"
#: keys per Backend.delete call (each backend batches within it: S3 1000 per request)
DELETE_CHUNK = 1000
#: delete calls in flight at once on a remote store (one for a local directory)
REMOTE_DELETERS = 4
#: retention_garbage_age below this is refused: a younger prefix may be in progress
MIN_GARBAGE_AGE = 3600 * 1_000_000
READERS = 8

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_UNIT_US = {"w": 7 * 86400 * US, "d": 86400 * US, "h": 3600 * US, "m": 60 * US, "s": US}


class PolicyError(UsageError):
    """A policy walship refuses as given (bad input): nothing was deleted."""


class Refused(WalshipError):
    """The deletion would break a promised restore (the planner's check); nothing deleted."""

    exit_code = 23


# --- pure: durations, times ----------------------------------------------------------


def parse_duration(text: str, what: str = "duration") -> int:
    """``7d``, ``36h``, ``1w2d``, ``90m``, ``30s`` -> microseconds (> 0 unless ``0s``)."""
    raw = text.strip()
    pos = 0
    total = 0.0
    for m in _DURATION.finditer(raw):
        if raw[pos : m.start()].strip():
            break
        total += float(m.group(1)) * _UNIT_US[m.group(2).lower()]
        pos = m.end()
    if pos == 0 or raw[pos:].strip():
        raise PolicyError(
            f"{what} {text!r} is not a duration",
            hint="use a number and a unit: 7d, 36h, 90m, 30s, 2w (combinations like 1d12h too)",
        )
    return int(total)


def format_duration(us: int) -> str:
    s = us // US
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


# --- pure: the backups and the policy -------------------------------------------------


@dataclass
class Candidate:
    """One backup retention may keep or delete."""

    backup: Backup  # as the planner sees it
    kind: str  # "walship" (basebackups/<name>/) | "postgresql" (a .backup file of another tool)
    when: int | None  # µs UTC of its end (stop time, else the .backup file's archive time)
    stored_size: int = 0  # bytes under basebackups/<name>/ (walship) or of the .backup file
    #: .backup files describing it (PostgreSQL archives one for every base backup)
    backup_files: list[str] = field(default_factory=list)
    backup_file_bytes: int = 0
    objects: int = 0  # objects under basebackups/<name>/ (walship)

    @property
    def name(self) -> str:
        return self.backup.name


@dataclass(frozen=True)
class Policy:
    retain: int | None = None
    window: int | None = None  # µs
    before: str | None = None  # a time or a backup name, as given
    wal_window: int | None = None  # µs
    garbage: bool = False
    garbage_age: int = 24 * 3600 * US
    #: where the policy came from, for messages ("--retain", "retention_retain", ...)
    source: str = ""

    @property
    def selects_backups(self) -> bool:
        return self.retain is not None or self.window is not None or self.before is not None

    def describe(self) -> str:
        parts: list[str] = []
        if self.retain is not None:
            parts.append(f"retain {self.retain}")
        if self.window is not None:
            parts.append(f"window {format_duration(self.window)}")
        if self.before is not None:
            parts.append(f"before {self.before}")
        if self.wal_window is not None:
            parts.append(f"wal-window {format_duration(self.wal_window)}")
        if self.garbage:
            parts.append(f"garbage older than {format_duration(self.garbage_age)}")
        return ", ".join(parts) or "none"


@dataclass
class Selection:
    keep: list[Candidate]
    drop: list[Candidate]
    #: names of kept backups restorable only to their consistency point (--wal-window)
    consistency_only: set[str]
    why: dict[str, str]  # name -> why kept / deleted


def age_order(c: Candidate) -> tuple[int, int, str]:
    # unknown times sort as the newest: a rule by time never deletes such a backup
    return (c.when if c.when is not None else planner.INF_LSN, c.backup.stop_lsn, c.name)


def find_backup(candidates: Sequence[Candidate], name: str) -> Candidate | None:
    bare = name.removesuffix(".backup")
    for c in candidates:
        if name in (c.name, c.name.removesuffix(".backup")) or bare == c.name.removesuffix(
            ".backup"
        ):
            return c
    return None


def select(candidates: Sequence[Candidate], policy: Policy, now: int) -> Selection:
    """Which backups the policy keeps (pure). Raises PolicyError for bad input."""
    ordered = sorted(candidates, key=age_order)
    if not policy.selects_backups:
        return Selection(list(ordered), [], set(), {c.name: "no backup policy" for c in ordered})
    if policy.retain is not None and policy.before is not None:
        raise PolicyError(
            "--retain and --before cannot be combined",
            hint="give one: --retain N keeps the newest N, --before removes older backups",
        )
    if policy.window is not None and policy.before is not None:
        raise PolicyError(
            "--window and --before cannot be combined",
            hint="give one: --window keeps a recovery window, --before removes older backups",
        )
    if policy.retain is not None and policy.retain < 1:
        raise PolicyError(
            f"--retain {policy.retain} would delete every backup", hint="keep at least 1"
        )
    if policy.window is not None and policy.window <= 0:
        raise PolicyError("--window must be longer than 0", hint="e.g. --window 7d")
    if policy.wal_window is not None:
        if policy.wal_window <= 0:
            raise PolicyError("--wal-window must be longer than 0", hint="e.g. --wal-window 2d")
        if policy.window is not None and policy.wal_window > policy.window:
            raise PolicyError(
                f"--wal-window {format_duration(policy.wal_window)} is longer than --window "
                f"{format_duration(policy.window)}",
                hint="the WAL window must be shorter than the backup window (or leave it out)",
            )
    why: dict[str, str] = {}
    keep: set[str] = set()
    if policy.before is not None:
        limit, limit_text = _before_limit(ordered, policy.before, now)
        for c in ordered:
            if c.when is not None and c.when < limit:
                why[c.name] = f"ended before {limit_text}"
            else:
                keep.add(c.name)
                why[c.name] = f"not older than {limit_text}"
        if ordered and not keep:
            raise PolicyError(
                f"--before {policy.before} would delete every backup ({len(ordered)})",
                hint="choose an earlier time or backup; at least one backup must stay",
            )
    if policy.retain is not None:
        for c in ordered[-policy.retain :]:
            keep.add(c.name)
            why[c.name] = f"one of the newest {policy.retain}"
    if policy.window is not None:
        start = now - policy.window
        older = [c for c in ordered if c.when is not None and c.when < start]
        for c in ordered:
            if c.when is None or c.when >= start:
                keep.add(c.name)
                why.setdefault(c.name, f"ends inside the {format_duration(policy.window)} window")
        if older:
            keep.add(older[-1].name)
            why.setdefault(
                older[-1].name,
                f"the newest backup before the {format_duration(policy.window)} window starts "
                "(recovery into the window's first moments starts from it)",
            )
    kept = [c for c in ordered if c.name in keep]
    dropped = [c for c in ordered if c.name not in keep]
    for c in dropped:
        reasons = []
        if policy.retain is not None:
            reasons.append(f"not one of the newest {policy.retain}")
        if policy.window is not None:
            reasons.append(
                f"ended before the {format_duration(policy.window)} window, and a newer backup "
                "does too"
            )
        why.setdefault(c.name, "; ".join(reasons) or "outside the policy")
    consistency_only: set[str] = set()
    if policy.wal_window is not None and kept:
        start = now - policy.wal_window
        older = [c for c in kept if c.when is not None and c.when < start]
        pitr_from = older[-1].name if older else None
        for c in older:
            if c.name != pitr_from:
                consistency_only.add(c.name)
                why[c.name] += (
                    f"; restorable to its consistency point only (WAL window "
                    f"{format_duration(policy.wal_window)})"
                )
    return Selection(kept, dropped, consistency_only, why)


def _before_limit(ordered: Sequence[Candidate], before: str, now: int) -> tuple[int, str]:
    """``--before TIME|NAME`` -> the time limit (µs) and how to say it."""
    found = find_backup(ordered, before)
    if found is not None:
        if found.when is None:
            raise PolicyError(f"backup {found.name} has no usable time", hint="use --before TIME")
        return found.when, f"backup {found.name}"
    looks_like_time = bool(re.match(r"^\d{4}-\d\d-\d\d", before.strip()))
    if not looks_like_time:
        names = ", ".join(c.name for c in ordered[-5:]) or "none"
        raise PolicyError(
            f"--before {before!r}: no backup of that name (newest: {names})",
            hint="give a backup name from `walship backup-list` / `walship wal-show`, or a "
            "time like '2026-11-23 14:30:00+00'",
        )
    try:
        limit = planner.parse_time(before)
    except ValueError as exc:
        raise PolicyError(str(exc).replace("--time", "--before")) from None
    if limit > now:
        raise PolicyError(
            f"--before {before!r} is in the future",
            hint="give a past time or a backup name",
        )
    return limit, planner.format_time(limit) or before


# --- pure: which WAL stays --------------------------------------------------------------


@dataclass
class KeepRule:
    """Which (timeline, segment number) stay; the WAL of everything else goes."""

    seg_size: int
    #: TLI -> sorted, merged, inclusive (lo, hi) segment ranges needed by kept backups
    ranges: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    #: no segment at or after this number is deleted, on any timeline (the newest
    #: backup's start); None: nothing is deleted at all
    protect_from: int | None = None
    #: timelines none of whose WAL is deleted (why, for the report)
    protected: dict[int, str] = field(default_factory=dict)
    #: TLI -> the timelines each kept backup reaches (name -> TLIs), for the report
    reach: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._los: dict[int, list[int]] = {}

    def finish(self) -> None:
        for tli, ranges in self.ranges.items():
            ranges.sort()
            merged: list[tuple[int, int]] = []
            for lo, hi in ranges:
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
                else:
                    merged.append((lo, hi))
            self.ranges[tli] = merged
            self._los[tli] = [lo for lo, _ in merged]

    def keeps(self, tli: int, segno: int) -> bool:
        if self.protect_from is None or segno >= self.protect_from or tli in self.protected:
            return True
        los = self._los.get(tli)
        if not los:
            return False
        i = bisect.bisect_right(los, segno) - 1
        return i >= 0 and self.ranges[tli][i][1] >= segno

    def keeps_any(self, tli: int, lo: int, hi: int) -> bool:
        """Whether any segment ``lo``..``hi`` (inclusive) of ``tli`` is kept."""
        if lo > hi:
            return False
        if self.protect_from is None or hi >= self.protect_from or tli in self.protected:
            return True
        los = self._los.get(tli)
        if not los:
            return False
        i = bisect.bisect_right(los, hi) - 1  # the last range starting at or before hi
        return i >= 0 and self.ranges[tli][i][1] >= lo


def reachable_timelines(
    inv: planner.Inventory, b: Backup, timelines: Iterable[int]
) -> list[tuple[int, planner.Path]]:
    """The timelines a restore of ``b`` can reach (its own and every descendant whose
    history has ``b`` on its path before leaving ``b``'s timeline), with their paths."""
    out: list[tuple[int, planner.Path]] = []
    for tli in sorted(set(timelines)):
        if tli < b.start_tli:
            continue
        path = planner.timeline_path(inv, tli)
        if path is None:
            continue
        if path.tli_of_lsn(b.checkpoint_lsn) == b.start_tli and (
            path.tli_of_lsn(max(b.stop_lsn - 1, 0)) == b.stop_tli
        ):
            out.append((tli, path))
    return out


def keep_rule(
    inv: planner.Inventory, kept: Sequence[Candidate], consistency_only: set[str]
) -> KeepRule:
    """The WAL the kept backups need (pure; ``inv`` gives histories and timelines).

    Raises WalshipError when a kept backup's own timeline has no usable history
    (its needs cannot be computed; nothing is deleted).
    """
    rule = KeepRule(inv.seg_size)
    if not kept:
        rule.finish()
        return rule  # no backup: nothing is deleted (protect_from None)
    seg = inv.seg_size
    timelines = set(inv.timelines())
    for c in kept:
        b = c.backup
        start = segno_of_lsn(b.start_lsn, seg)
        reach = reachable_timelines(inv, b, timelines)
        rule.reach[c.name] = [t for t, _ in reach]
        own = next((p for t, p in reach if t == b.stop_tli), None)
        if own is None:
            why = inv.history_errors.get(b.stop_tli)
            raise WalshipError(
                f"backup {c.name} is on timeline {b.stop_tli}, whose history "
                + (f"is unusable ({why})" if why else "file is missing"),
                hint="walship verify shows the problem; nothing was deleted",
            )
        if c.name in consistency_only:
            end = segno_of_end_lsn(b.stop_lsn, seg)
            for s in range(start, end + 1):
                tli = own.steps[own.step_of_segment(s)].tli
                rule.ranges.setdefault(tli, []).append((s, s))
            continue
        for _tli, path in reach:
            for i, step in enumerate(path.steps):
                lo, hi = path.segment_span(i)
                lo = max(lo, start)
                if lo <= hi:
                    rule.ranges.setdefault(step.tli, []).append((lo, hi))
    newest = max(kept, key=age_order)
    rule.protect_from = segno_of_lsn(newest.backup.start_lsn, seg)
    top = max(c.backup.stop_tli for c in kept)
    reached = {t for ts in rule.reach.values() for t in ts}
    for tli in timelines:
        if tli > 1 and tli not in inv.histories:
            rule.protected[tli] = f"timeline {tli} has no usable history file"
        elif tli > top and tli not in reached:
            rule.protected[tli] = (
                f"timeline {tli} is newer than the newest backup's and no kept backup reaches it"
            )
    rule.finish()
    return rule


@dataclass
class Point:
    """The oldest point a timeline stays restorable to: a backup's consistency point."""

    backup: str
    lsn: int
    time: int | None


def restorable(
    inv: planner.Inventory,
    candidates: Sequence[Candidate],
    consistency_only: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[int, Point]:
    """Per timeline, the oldest consistency point of a backup restorable to any later
    point on it (backups restorable to their consistency point only do not count)."""
    out: dict[int, Point] = {}
    timelines = set(inv.timelines())
    for c in candidates:
        if c.name in consistency_only:
            continue
        b = c.backup
        for tli, _ in reachable_timelines(inv, b, timelines):
            cur = out.get(tli)
            if cur is None or b.stop_lsn < cur.lsn:
                out[tli] = Point(c.name, b.stop_lsn, b.stop_time)
    return out


# --- repository: the scan ------------------------------------------------------------


class WalScan:
    """One streamed listing of ``wal/``: per timeline, segment numbers and sizes in
    8-byte arrays (ascending: keys sort by timeline, log and segment)."""

    def __init__(self, seg_size: int) -> None:
        self.seg_size = seg_size
        self.segnos: dict[int, array[int]] = {}
        self.sizes: dict[int, array[int]] = {}
        self.partials: list[tuple[int, int, str, int]] = []  # tli, segno, key, size
        self.histories: list[tuple[str, str]] = []  # name, key
        self.backup_files: dict[str, tuple[str, int, float | None]] = {}  # key -> name, size, mtime
        self.other = 0

    def add(self, key: str, size: int, mtime: float | None) -> None:
        # fast path for wal/<TLI+log>/<segment> (the million-object case)
        if len(key) == 45 and key[20] == "/" and key[4:20] == key[21:37]:
            try:
                tli = int(key[21:29], 16)
                log_id = int(key[29:37], 16)
                seg = int(key[37:45], 16)
            except ValueError:
                pass
            else:
                per = segs_per_xlogid(self.seg_size)
                if seg < per and tli > 0:
                    segnos = self.segnos.get(tli)
                    if segnos is None:
                        segnos = self.segnos[tli] = array("Q")
                        self.sizes[tli] = array("Q")
                    segnos.append(log_id * per + seg)
                    self.sizes[tli].append(size)
                    return
        name = repository.name_of(key)
        if name is None:
            self.other += 1
            return
        kind = classify(name)
        if kind == FileKind.PARTIAL:
            s = parse_segment_name(name, self.seg_size)
            self.partials.append((s.tli, s.segno, key, size))
        elif kind == FileKind.HISTORY:
            self.histories.append((name, key))
        elif kind == FileKind.BACKUP:
            self.backup_files[key] = (name, size, mtime)
        else:  # a segment whose key the fast path did not take
            s = parse_segment_name(name, self.seg_size)
            self.segnos.setdefault(s.tli, array("Q")).append(s.segno)
            self.sizes.setdefault(s.tli, array("Q")).append(size)

    def segment_count(self) -> int:
        return sum(len(a) for a in self.segnos.values())

    def segment_key(self, tli: int, segno: int) -> str:
        name = segment_file_name(tli, segno, self.seg_size)
        return f"{repository.WAL_PREFIX}{name[:16]}/{name}"


@dataclass
class Garbage:
    name: str
    keys: int
    size: int
    last_write: float | None
    action: str  # "delete" | "keep"
    why: str
    tombstone: bool = False


@dataclass
class Repo:
    """What :func:`scan` read."""

    url: str
    seg_size: int
    system_identifier: int | None
    wal: WalScan
    histories: dict[int, list[HistoryEntry]]
    history_errors: dict[int, str]
    candidates: list[Candidate]
    #: basebackups/<name>/ prefixes without a manifest: name -> (keys, bytes, last write,
    #: whether a deletion tombstone is there)
    incomplete: dict[str, tuple[int, int, float | None, bool]]
    #: basebackups/<name>/ -> the leaves listed under it (parts, manifest, tombstone):
    #: deletes use them instead of listing each prefix again
    leaves: dict[str, list[str]]
    #: complete backups whose prefix also holds a tombstone (a deletion that had not yet
    #: removed the manifest)
    tombstoned: set[str]
    #: leftovers -> .backup files (key, size) PostgreSQL archived for that interrupted push
    leftover_backup_files: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def inventory(
        self,
        backups: Sequence[Backup] | None = None,
        keeps: Callable[[int, int], bool] | None = None,
        *,
        light: bool = False,
    ) -> planner.Inventory:
        """The planner's Inventory (no segment index: immediate/latest need none),
        with only the segments ``keeps`` keeps when given; ``light``: timelines and
        histories only, no segment numbers (what reach and keep rules read).

        Segment numbers are given to the planner as sorted 8-byte arrays, not lists
        (it only bisects, indexes and iterates them): a million segments cost 8 MB
        here instead of about 40 MB of int objects."""
        segments: dict[int, Any] = {}
        for tli, segnos in self.wal.segnos.items():
            if light:
                segments[tli] = array("Q")
            elif keeps is None:
                segments[tli] = _sorted(segnos)
            else:
                segments[tli] = _sorted(array("Q", (s for s in segnos if keeps(tli, s))))
        partials: dict[int, list[int]] = {}
        for tli, segno, _key, _size in self.wal.partials:
            if keeps is None or keeps(tli, segno):
                partials.setdefault(tli, []).append(segno)
        return planner.Inventory(
            seg_size=self.seg_size,
            segments=segments,
            partials=partials,
            histories=self.histories,
            history_errors=self.history_errors,
            backups=list(backups if backups is not None else [c.backup for c in self.candidates]),
            summaries=None,
            system_identifier=self.system_identifier,
            url=self.url,
        )


def _sorted(a: array[int]) -> array[int]:
    """``a`` itself when ascending (the listing order), else a sorted copy."""
    if all(a[i] < a[i + 1] for i in range(len(a) - 1)):
        return a
    return array("Q", sorted(a))


class _Prefix:
    __slots__ = ("keys", "last_write", "leaves", "size")

    def __init__(self) -> None:
        self.keys = 0
        self.size = 0
        self.last_write: float | None = None
        self.leaves: list[str] = []

    def add(self, leaf: str, size: int, mtime: float | None) -> None:
        self.keys += 1
        self.size += size
        self.leaves.append(leaf)
        if mtime is not None and (self.last_write is None or mtime > self.last_write):
            self.last_write = mtime


def _read_backup(cfg: Config, backend: Backend, name: str) -> Backup:
    key = manifest_key(name)
    return WalshipManifestSource().parse(key, read_object(cfg, backend, key))


def scan(cfg: Config, backend: Backend) -> Repo:
    """Read what retention needs: identity, one listing of wal/ and of basebackups/,
    the history and .backup files, and each complete backup's manifest."""
    try:
        identity = repository.read_identity(backend)
    except ContainerNotFound as exc:
        raise repository.repository_missing(backend, exc) from None
    if identity is None:
        raise repository.repository_missing(backend)
    wal = WalScan(identity.wal_segment_size)
    for info in backend.list(repository.WAL_PREFIX):
        wal.add(info.key, info.size, info.mtime)

    histories: dict[int, list[HistoryEntry]] = {}
    history_errors: dict[int, str] = {}
    hist_keys = [key for _, key in wal.histories]
    for (name, _key), hres in zip(
        wal.histories, parallel(lambda k: read_object(cfg, backend, k), hist_keys), strict=True
    ):
        tli = int(name[:8], 16)
        try:
            if isinstance(hres, BaseException):
                raise hres
            histories[tli] = parse_history(hres.decode("utf-8"), tli)
        except (WalshipError, UnicodeDecodeError) as exc:
            history_errors[tli] = exc.one_line() if isinstance(exc, WalshipError) else str(exc)
        except Exception as exc:
            history_errors[tli] = f"{type(exc).__name__}: {exc}"

    # basebackups/: complete backups, leftovers, tombstones (one streamed listing)
    complete: set[str] = set()
    prefixes: dict[str, _Prefix] = {}
    tombs: set[str] = set()
    for info in backend.list(BACKUPS_PREFIX):
        parts = split_key(info.key)
        if parts is None:
            continue
        name, leaf = parts
        if leaf == MANIFEST_LEAF:
            complete.add(name)
        elif leaf == TOMBSTONE_LEAF:
            tombs.add(name)
        prefixes.setdefault(name, _Prefix()).add(leaf, info.size, info.mtime)
    names = sorted(complete)
    results = parallel(lambda n: _read_backup(cfg, backend, n), names)
    candidates: list[Candidate] = []
    for name, res in zip(names, results, strict=True):
        if isinstance(res, BaseException):
            why = (
                res.one_line() if isinstance(res, WalshipError) else f"{type(res).__name__}: {res}"
            )
            raise WalshipError(
                f"cannot read the manifest of backup {name}: {why}",
                hint="walship verify shows it; nothing was deleted",
            )
        pre = prefixes[name]
        candidates.append(Candidate(res, "walship", res.stop_time, pre.size, objects=pre.keys))

    source = PgBackupFileSource()
    bkeys = sorted(wal.backup_files)
    parsed = parallel(lambda k: source.parse(k, read_object(cfg, backend, k)), bkeys)
    by_start = {(c.backup.start_lsn, c.backup.start_tli): c for c in candidates}
    orphans: dict[str, list[tuple[str, int]]] = {}
    for key, res in zip(bkeys, parsed, strict=True):
        name, size, mtime = wal.backup_files[key]
        if isinstance(res, BaseException):
            why = (
                res.one_line() if isinstance(res, WalshipError) else f"{type(res).__name__}: {res}"
            )
            raise WalshipError(
                f"cannot read backup history file {name}: {why}",
                hint="walship verify shows it; nothing was deleted",
            )
        twin = by_start.get((res.start_lsn, res.start_tli))
        if twin is not None:
            twin.backup_files.append(key)
            twin.backup_file_bytes += size
            continue
        orphan = _interrupted_push(res, [n for n in prefixes if n not in complete])
        if orphan is not None:
            # PostgreSQL's .backup file of a backup-push killed after pg_backup_stop,
            # before its manifest: part of those leftovers, not another tool's backup
            orphans.setdefault(orphan, []).append((key, size))
            continue
        when = res.stop_time if res.stop_time is not None else _us(mtime)
        c = Candidate(res, "postgresql", when, size, [key], size)
        by_start[(res.start_lsn, res.start_tli)] = c
        candidates.append(c)

    incomplete = {
        name: (e.keys, e.size, e.last_write, name in tombs)
        for name, e in prefixes.items()
        if name not in complete
    }
    return Repo(
        url=backend.url,
        seg_size=identity.wal_segment_size,
        system_identifier=identity.system_identifier,
        wal=wal,
        histories=histories,
        history_errors=history_errors,
        candidates=candidates,
        incomplete=incomplete,
        leaves={name: e.leaves for name, e in prefixes.items()},
        leftover_backup_files=orphans,
        tombstoned=tombs & complete,
    )


#: a backup-push names its backup by the time it starts, just before pg_backup_start
INTERRUPTED_PUSH_SLACK = 120 * US


def _interrupted_push(b: Backup, leftovers: Sequence[str]) -> str | None:
    """The leftovers (``basebackups/<name>/`` without a manifest) that ``b``, a .backup
    file without a manifest twin, belongs to: backup-push's default label
    ``walship <name>``, else a START TIME within two minutes after the name's time."""
    for name in leftovers:
        if b.label == f"walship {name}":
            return name
    if b.start_time is None:
        return None
    for name in leftovers:
        try:
            named = calendar.timegm(time.strptime(name[:16], "%Y%m%dT%H%M%SZ")) * US
        except ValueError:
            continue
        if 0 <= b.start_time - named <= INTERRUPTED_PUSH_SLACK:
            return name
    return None


def _us(mtime: float | None) -> int | None:
    return None if mtime is None else int(mtime * US)


# --- the plan ---------------------------------------------------------------------------


@dataclass
class Check:
    """The planner's verdict for one promised point, after the deletion."""

    timeline: int
    backup: str
    target: str  # "immediate" | "latest"
    verdict: str
    reason: str
    before: str | None = None  # the verdict before the deletion, when after is not reachable


@dataclass
class Plan:
    policy: Policy
    now: int
    repo: Repo
    selection: Selection
    rule: KeepRule
    garbage: list[Garbage]
    before: dict[int, Point]
    after: dict[int, Point]
    checks: list[Check]
    delete_segments: int = 0
    delete_segment_bytes: int = 0
    keep_segments: int = 0
    keep_segment_bytes: int = 0
    delete_partials: list[tuple[str, int]] = field(default_factory=list)
    index_entries: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def broken(self) -> list[Check]:
        return [
            c for c in self.checks if c.verdict != planner.REACHABLE and c.before == "reachable"
        ]

    def object_count(self) -> int:
        backups = sum(c.objects + len(c.backup_files) for c in self.selection.drop)
        garbage = sum(g.keys for g in self.garbage if g.action == "delete")
        return (
            backups
            + garbage
            + self.delete_segments
            + len(self.delete_partials)
            + self.index_entries
        )

    def byte_count(self) -> int:
        backups = sum(
            (c.stored_size if c.kind == "walship" else 0) + c.backup_file_bytes
            for c in self.selection.drop
        )
        garbage = sum(g.size for g in self.garbage if g.action == "delete")
        return (
            backups + garbage + self.delete_segment_bytes + sum(s for _, s in self.delete_partials)
        )


def make_plan(
    cfg: Config,
    backend: Backend,
    policy: Policy,
    *,
    now: int | None = None,
    count_index: bool = True,
) -> Plan:
    """Scan the repository and decide (nothing is deleted). PolicyError for bad input;
    the plan's ``broken`` lists promised points the deletion would make unreachable."""
    now = int(time.time() * US) if now is None else now
    if not policy.selects_backups and not policy.garbage:
        raise PolicyError(
            "no retention policy given",
            hint="give --retain N, --window DURATION, --before TIME|NAME or --garbage, or "
            "set retention_retain / retention_window (docs/retention.md)",
        )
    repo = scan(cfg, backend)
    selection = select(repo.candidates, policy, now)
    inv = repo.inventory(light=True)
    if policy.selects_backups:
        rule = keep_rule(inv, selection.keep, selection.consistency_only)
    else:  # --garbage alone: leftovers only, no WAL
        rule = KeepRule(repo.seg_size)
        rule.finish()
    before = restorable(inv, repo.candidates)
    after = restorable(inv, selection.keep, selection.consistency_only)
    p = Plan(
        policy=policy,
        now=now,
        repo=repo,
        selection=selection,
        rule=rule,
        garbage=_garbage(repo, policy, now),
        before=before,
        after=after,
        checks=[],
    )
    for tli, segnos in repo.wal.segnos.items():
        sizes = repo.wal.sizes[tli]
        for s, size in zip(segnos, sizes, strict=True):
            if rule.keeps(tli, s):
                p.keep_segments += 1
                p.keep_segment_bytes += size
            else:
                p.delete_segments += 1
                p.delete_segment_bytes += size
    p.delete_partials = [
        (k, size) for tli, s, k, size in repo.wal.partials if not rule.keeps(tli, s)
    ]
    if count_index:
        p.index_entries = sum(1 for _ in index_keys(backend, repo, rule))
    for tli, why in sorted(rule.protected.items()):
        p.notes.append(f"timeline {tli}: no WAL deleted ({why})")
    del inv
    p.checks = promise_checks(repo, selection, rule)
    return p


def _garbage(repo: Repo, policy: Policy, now: int) -> list[Garbage]:
    out: list[Garbage] = []
    for name, (keys, size, last, tomb) in sorted(repo.incomplete.items()):
        extra = repo.leftover_backup_files.get(name, [])
        keys += len(extra)
        size += sum(n for _, n in extra)
        if tomb:
            out.append(Garbage(name, keys, size, last, "delete", "an interrupted delete", True))
            continue
        if not policy.garbage:
            out.append(Garbage(name, keys, size, last, "keep", "no --garbage"))
            continue
        if last is None:
            out.append(Garbage(name, keys, size, last, "keep", "the store reports no write time"))
            continue
        age = now - int(last * US)
        if age >= policy.garbage_age:
            out.append(
                Garbage(
                    name,
                    keys,
                    size,
                    last,
                    "delete",
                    f"an interrupted backup, last written {format_duration(max(age, 0))} ago",
                )
            )
        else:
            out.append(
                Garbage(
                    name,
                    keys,
                    size,
                    last,
                    "keep",
                    f"written {format_duration(max(age, 0))} ago, less than "
                    f"{format_duration(policy.garbage_age)}: may be in progress",
                )
            )
    return out


def promise_checks(repo: Repo, selection: Selection, rule: KeepRule) -> list[Check]:
    """The planner on the repository as it will be: for every timeline a kept backup
    reaches, the oldest kept backup restorable to any point on it must reach its
    consistency point and the end of the archived WAL (so every point between); every
    backup kept for its consistency point only must reach that point."""
    kept = selection.keep
    if not kept or rule.protect_from is None:
        return []  # nothing of the WAL is deleted
    after_inv = repo.inventory([c.backup for c in kept], rule.keeps)
    timelines = after_inv.timelines()
    wanted: list[tuple[int, Candidate, str]] = []
    oldest: dict[int, Candidate] = {}
    for c in kept:
        if c.name in selection.consistency_only:
            wanted.append((c.backup.stop_tli, c, "immediate"))
            continue
        for tli, _path in reachable_timelines(after_inv, c.backup, timelines):
            cur = oldest.get(tli)
            if cur is None or c.backup.stop_lsn < cur.backup.stop_lsn:
                oldest[tli] = c
    for tli, c in sorted(oldest.items()):
        wanted += [(tli, c, "immediate"), (tli, c, "latest")]
    checks: list[Check] = []
    before_inv: planner.Inventory | None = None
    for tli, c, target in wanted:
        verdict, reason = _verdict(after_inv, c.backup, tli, target)
        check = Check(tli, c.name, target, verdict, reason)
        if verdict != planner.REACHABLE:
            if before_inv is None:
                before_inv = repo.inventory()
            check.before = _verdict(before_inv, c.backup, tli, target)[0]
        checks.append(check)
    return checks


def _verdict(inv: planner.Inventory, b: Backup, tli: int, target: str) -> tuple[str, str]:
    saved = inv.backups
    inv.backups = [b]  # this backup only (names and labels may repeat)
    try:
        result = planner.plan(inv, planner.Target(target), timeline=tli)
    finally:
        inv.backups = saved
    return result.verdict, result.reason


# --- execution ----------------------------------------------------------------------------


def index_keys(backend: Backend, repo: Repo, rule: KeepRule) -> Iterator[str]:
    """Loose segment-index entries (index/<16hex>/<segment>) of WAL that goes (packs
    stay: `walship index` rewrites them)."""
    for info in backend.list(INDEX_PREFIX):
        key = info.key
        if key.startswith(PACK_PREFIX):
            continue
        name = key.rsplit("/", 1)[-1]
        base = name[:-8] if name.endswith(".partial") else name
        try:
            s = parse_segment_name(base, repo.seg_size)
        except WalshipError:
            continue
        if not rule.keeps(s.tli, s.segno):
            yield key


def wal_keys(plan: Plan) -> Iterator[str]:
    """Keys of the segments and .partial files that go, oldest first per timeline."""
    wal, rule = plan.repo.wal, plan.rule
    for tli in sorted(wal.segnos):
        for s in wal.segnos[tli]:
            if not rule.keeps(tli, s):
                yield wal.segment_key(tli, s)
    for key, _size in plan.delete_partials:
        yield key


@dataclass
class Progress:
    objects: int = 0
    requests: int = 0  # Backend.delete calls
    backups: int = 0
    garbage: int = 0
    index_entries: int = 0
    #: WAL ranges recorded as removed on purpose (retention/state.json) by this run
    recorded: int = 0


def _chunks(keys: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def delete_stream(
    backend: Backend, keys: Iterable[str], progress: Progress, *, count: bool = True
) -> None:
    """Delete ``keys`` in chunks, a few chunks at once on a remote store; bounded:
    at most ``REMOTE_DELETERS + 1`` chunks of keys are held. ``count``: whether the
    keys count as deleted objects (tombstones do not: the plan never listed them)."""
    workers = 1 if backend.url.startswith(("/", "file:", "mem:")) else REMOTE_DELETERS
    if workers == 1:
        for chunk in _chunks(keys, DELETE_CHUNK):
            backend.delete(chunk)
            progress.objects += len(chunk) if count else 0
            progress.requests += 1
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: list[tuple[object, int]] = []
        for chunk in _chunks(keys, DELETE_CHUNK):
            pending.append((pool.submit(backend.delete, chunk), len(chunk)))
            if len(pending) > workers:
                fut, n = pending.pop(0)
                fut.result()  # type: ignore[attr-defined]
                progress.objects += n if count else 0
                progress.requests += 1
        for fut, n in pending:
            fut.result()  # type: ignore[attr-defined]
            progress.objects += n if count else 0
            progress.requests += 1


def _tombstone(cfg: Config, backend: Backend, name: str) -> str:
    key = backup_prefix(name) + TOMBSTONE_LEAF
    body = f'{{"deleting": "{name}", "by": "walship delete"}}\n'.encode()
    import hashlib

    header = objects.new_header(
        TOMBSTONE_LEAF, KIND_TOMBSTONE, len(body), hashlib.sha256(body).hexdigest(), cfg
    )
    try:
        objects.put_object(cfg, backend, key, header, [body])
    except WalshipError as exc:
        from ..errors import AlreadyExists

        if not isinstance(exc, AlreadyExists):
            raise
    return key


def _prefix_keys(repo: Repo, name: str) -> list[str]:
    """The objects listed under basebackups/<name>/ but its manifest and tombstone."""
    return [
        backup_prefix(name) + leaf
        for leaf in repo.leaves.get(name, [])
        if leaf not in (MANIFEST_LEAF, TOMBSTONE_LEAF)
    ]


def delete_backups(
    cfg: Config, backend: Backend, repo: Repo, drop: Sequence[Candidate], progress: Progress
) -> None:
    """Remove backups so that a crash at any point leaves no listed, half-deleted
    backup, and the next delete run finishes them: a tombstone under each walship
    backup's prefix, then the manifests (from here the backups are no longer listed,
    planned or restored), then their .backup files and parts, then the tombstones.
    Each step is one batched delete for all the backups, not one per backup."""
    mine = [c for c in drop if c.kind == "walship"]
    tombs = [_tombstone(cfg, backend, c.name) for c in mine]
    delete_stream(backend, (manifest_key(c.name) for c in mine), progress)
    delete_stream(backend, (k for c in drop for k in c.backup_files), progress)
    delete_stream(backend, (k for c in mine for k in _prefix_keys(repo, c.name)), progress)
    delete_stream(backend, tombs, progress, count=False)
    progress.objects += sum(1 for c in mine if c.name in repo.tombstoned)  # listed stale ones
    progress.backups += len(drop)
    for c in drop:
        log.info("delete.backup", f"deleted backup {c.name}", source=c.kind)


def delete_leftovers(backend: Backend, repo: Repo, name: str, progress: Progress) -> None:
    """An incomplete prefix (garbage, or an interrupted delete): its objects, the
    tombstone last."""
    tomb = backup_prefix(name) + TOMBSTONE_LEAF
    delete_stream(backend, _prefix_keys(repo, name), progress)
    delete_stream(backend, (k for k, _ in repo.leftover_backup_files.get(name, [])), progress)
    backend.delete([tomb])
    progress.requests += 1
    progress.objects += 1 if TOMBSTONE_LEAF in repo.leaves.get(name, []) else 0
    progress.garbage += 1


def removed_ranges(plan: Plan) -> list[tuple[int, int, int]]:
    """(timeline, first, last) stretches of WAL the plan deletes on purpose: runs of
    deleted segments, joined across segments that were already missing but that the
    policy does not keep either (no kept segment lies between)."""
    wal, rule = plan.repo.wal, plan.rule
    out: list[tuple[int, int, int]] = []
    for tli in sorted(wal.segnos):
        run: tuple[int, int] | None = None
        for s in wal.segnos[tli]:
            if rule.keeps(tli, s):
                continue
            if run is not None and not rule.keeps_any(tli, run[1] + 1, s - 1):
                run = (run[0], s)
                continue
            if run is not None:
                out.append((tli, *run))
            run = (s, s)
        if run is not None:
            out.append((tli, *run))
    return out


def record_removal(cfg: Config, backend: Backend, plan: Plan) -> int:
    """Write retention/state.json (what is about to go, merged with earlier runs) before
    any WAL is deleted: a crash after this never leaves a gap nobody can explain, and
    one before it has deleted no WAL yet. Returns the number of ranges this run
    adds (0: it deletes no segment, nothing is written)."""
    ranges = removed_ranges(plan)
    if not ranges:
        return 0
    state = removed.load(cfg, backend) or removed.State()
    state.add(ranges, removed.now_iso(), plan.policy.describe())
    state.restorable = {
        tli: removed.Restorable(
            p.backup, p.lsn, None if p.time is None else removed.iso_of_us(p.time)
        )
        for tli, p in plan.after.items()
    }
    removed.store(cfg, backend, state, plan.repo.seg_size)
    return len(ranges)


def execute(cfg: Config, backend: Backend, plan: Plan) -> Progress:
    """Delete what ``plan`` says, in a crash-safe order: the record of the WAL that
    goes (retention/state.json); interrupted deletes and garbage; backups, oldest
    first (each: manifest first); then WAL oldest first per timeline; then the index
    entries of that WAL. A second run finishes the job."""
    if plan.broken:
        raise Refused(refusal_text(plan.broken))
    ranges = record_removal(cfg, backend, plan)
    progress = Progress(recorded=ranges)
    for g in plan.garbage:
        if g.action == "delete":
            delete_leftovers(backend, plan.repo, g.name, progress)
    for name in sorted(plan.repo.tombstoned - {c.name for c in plan.selection.drop}):
        # a deletion interrupted before its manifest went, of a backup the policy keeps now
        backend.delete([backup_prefix(name) + TOMBSTONE_LEAF])
    delete_backups(cfg, backend, plan.repo, plan.selection.drop, progress)
    delete_stream(backend, wal_keys(plan), progress)
    before = progress.objects
    delete_stream(backend, index_keys(backend, plan.repo, plan.rule), progress)
    progress.index_entries = progress.objects - before
    return progress


def refusal_text(broken: Sequence[Check]) -> str:
    first = broken[0]
    what = "its consistency point" if first.target == "immediate" else "the end of the archive"
    more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
    return (
        f"refused: after this deletion backup {first.backup} could no longer be restored to "
        f"{what} on timeline {first.timeline} ({first.verdict}: {first.reason}){more}; "
        "nothing was deleted"
    )
