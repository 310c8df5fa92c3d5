"""Base backups as the planner sees them, and the sources they come from.

A backup, for planning, is what recovery needs to know about it: where WAL
replay starts (START WAL LOCATION, the checkpoint's redo pointer), the
checkpoint record, where the backup becomes consistent (STOP WAL LOCATION,
the end of its BACKUP_END record) and on which timelines.

Sources (docs/planning.md, "What counts as a backup"):

* :class:`PgBackupFileSource` -- the ``<segment>.<offset>.backup`` history
  files PostgreSQL itself archives at the end of every base backup
  (pg_basebackup, ``pg_backup_stop``, and so any tool built on them). They
  reach the repository through ``walship push`` like any WAL file.
* walship's own backup manifests (``basebackups/<name>/manifest.json``) plug
  in as another source once walship takes base backups: implement
  :class:`BackupSource` and add it to :data:`SOURCES`. When two sources
  describe the same backup (same start LSN and timeline) the one listed
  first in :data:`SOURCES` wins.

Pure parsing only; :mod:`walship.restore.inventory` does the reading.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple, Protocol

from ..errors import InvalidWalError
from ..wal import FileKind, classify, parse_backup_history, parse_lsn


class Backup(NamedTuple):
    name: str  # the .backup file name (or a walship backup name)
    label: str
    source: str  # "postgresql" (.backup file) | "walship" (manifest)
    key: str  # object key it was read from
    start_lsn: int  # START WAL LOCATION: replay starts here (redo pointer)
    stop_lsn: int  # STOP WAL LOCATION: consistent from here
    checkpoint_lsn: int
    start_tli: int
    stop_tli: int
    start_time: int | None  # µs since the Unix epoch, UTC (None if not parseable)
    stop_time: int | None

    def matches(self, wanted: str) -> bool:
        """``--backup NAME``: the file name (with or without .backup) or the label."""
        return wanted in (self.name, self.name.removesuffix(".backup"), self.label)


class BackupSource(Protocol):
    """Where backups come from: the keys it reads and how it parses them."""

    #: short name shown in plans
    kind: str
    #: listing prefix holding its objects ("wal/" is listed anyway)
    prefix: str

    def wants(self, key: str) -> bool: ...

    def parse(self, key: str, data: bytes) -> Backup: ...


_LSN_FIELD = re.compile(r"([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})")


def _lsn_field(fields: dict[str, str], key: str, where: str) -> int:
    value = fields.get(key)
    m = _LSN_FIELD.match(value or "")
    if not m:
        raise InvalidWalError(f"{where}: missing or bad {key!r}")
    return parse_lsn(m.group(1))


def _int_field(fields: dict[str, str], key: str, where: str, default: int | None = None) -> int:
    value = fields.get(key)
    if value is None and default is not None:
        return default
    try:
        return int(value or "")
    except ValueError:
        raise InvalidWalError(f"{where}: missing or bad {key!r}") from None


_TIME = re.compile(
    r"(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?\s*"
    r"(?:(UTC|GMT|UCT|Z)|([+-])(\d\d)(?::?(\d\d))?)?$"
)


def parse_pg_time(text: str | None) -> int | None:
    """A START/STOP TIME of a backup file (``%Y-%m-%d %H:%M:%S %Z``) in µs UTC.

    PostgreSQL writes the zone as an abbreviation of ``log_timezone``; only
    UTC/GMT and numeric offsets are unambiguous, anything else gives None
    (the planner works by LSN, times are for display).
    """
    m = _TIME.match((text or "").strip())
    if not m or (m.group(4) is None and m.group(5) is None):
        return None
    try:
        base = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}")
    except ValueError:
        return None
    offset = timedelta()
    if m.group(5):
        offset = timedelta(hours=int(m.group(6)), minutes=int(m.group(7) or 0))
        if m.group(5) == "-":
            offset = -offset
    frac = int((m.group(3) or "0").ljust(6, "0"))
    aware = base.replace(tzinfo=timezone(offset))
    return (aware - EPOCH) // timedelta(microseconds=1) + frac


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PgBackupFileSource:
    """PostgreSQL's backup history files (``wal/<16hex>/<seg>.<offset>.backup``)."""

    kind = "postgresql"
    prefix = "wal/"

    def wants(self, key: str) -> bool:
        name = key.rsplit("/", 1)[-1]
        if not name.endswith(".backup"):
            return False
        try:
            return classify(name) == FileKind.BACKUP
        except InvalidWalError:
            return False

    def parse(self, key: str, data: bytes) -> Backup:
        name = key.rsplit("/", 1)[-1]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidWalError(f"{name}: not a text file") from None
        fields = parse_backup_history(text)
        start = _lsn_field(fields, "START WAL LOCATION", name)
        if "STOP WAL LOCATION" not in fields:
            raise InvalidWalError(f"{name}: no 'STOP WAL LOCATION' (backup did not finish)")
        stop = _lsn_field(fields, "STOP WAL LOCATION", name)
        checkpoint = (
            _lsn_field(fields, "CHECKPOINT LOCATION", name)
            if "CHECKPOINT LOCATION" in fields
            else start
        )
        start_tli = _int_field(fields, "START TIMELINE", name, int(name[:8], 16))
        stop_tli = _int_field(fields, "STOP TIMELINE", name, start_tli)
        if stop < start or checkpoint < start:
            raise InvalidWalError(f"{name}: STOP/CHECKPOINT LOCATION precedes START WAL LOCATION")
        return Backup(
            name=name,
            label=fields.get("LABEL", ""),
            source=self.kind,
            key=key,
            start_lsn=start,
            stop_lsn=stop,
            checkpoint_lsn=checkpoint,
            start_tli=start_tli,
            stop_tli=stop_tli,
            start_time=parse_pg_time(fields.get("START TIME")),
            stop_time=parse_pg_time(fields.get("STOP TIME")),
        )


#: backup sources, in order of preference for duplicates
SOURCES: tuple[BackupSource, ...] = (PgBackupFileSource(),)


def dedupe(backups: list[Backup]) -> list[Backup]:
    """One entry per (start LSN, start timeline); earlier entries win."""
    seen: set[tuple[int, int]] = set()
    out: list[Backup] = []
    for b in backups:
        ident = (b.start_lsn, b.start_tli)
        if ident not in seen:
            seen.add(ident)
            out.append(b)
    return out
