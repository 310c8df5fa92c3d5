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

Pure parsing only (the file format is :mod:`walship.pg.history`);
:mod:`walship.restore.inventory` does the reading.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from ..errors import InvalidWalError
from ..pg import FileKind, classify
from ..pg.history import parse_backup_file


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
        b = parse_backup_file(name, data)
        return Backup(
            name=name,
            label=b.label,
            source=self.kind,
            key=key,
            start_lsn=b.start_lsn,
            stop_lsn=b.stop_lsn,
            checkpoint_lsn=b.checkpoint_lsn,
            start_tli=b.start_tli,
            stop_tli=b.stop_tli,
            start_time=b.start_time,
            stop_time=b.stop_time,
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
