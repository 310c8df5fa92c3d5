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
* :class:`WalshipManifestSource` -- walship's own backup manifests
  (``basebackups/<name>/manifest.json``, :mod:`walship.manifest`), written by
  ``walship backup-push``; only these can be restored by ``walship
  backup-fetch``. A backup taken on a primary also archives a ``.backup``
  file; when two sources describe the same backup (same start LSN and
  timeline) the one listed first in :data:`SOURCES` wins, so the walship
  manifest does.

Further sources implement :class:`BackupSource` and join :data:`SOURCES`.

Pure parsing only (the file format is :mod:`walship.pg.history`);
:mod:`walship.restore.inventory` does the reading.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple, Protocol

from ..errors import IntegrityError, InvalidWalError
from ..manifest import BACKUPS_PREFIX, Manifest, is_manifest_key, part_key
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
    #: walship backups: their parts as (key, stored size, raw SHA-256), for verify
    parts: tuple[tuple[str, int, str], ...] = ()

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


def iso_to_us(text: str) -> int | None:
    """A manifest time (ISO 8601, ``...Z`` or with an offset) as µs since the epoch."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def _without_file_lists(data: bytes) -> bytes:
    """A manifest's JSON without its directory and file lists, nearly all of its size.

    walship writes them last (walship/manifest.py ``Manifest.to_json``); planning
    needs none of it, and parsing a 100,000-file manifest whole takes about a
    second. A ``"`` inside a JSON string is always escaped, so the first
    ``,"directories":`` is the key itself.
    """
    cut = data.find(b',"directories":')
    return data if cut < 0 else data[:cut] + b',"files":[]}'


class WalshipManifestSource:
    """walship's backup manifests (``basebackups/<name>/manifest.json``)."""

    kind = "walship"
    prefix = BACKUPS_PREFIX

    def wants(self, key: str) -> bool:
        return is_manifest_key(key)

    def parse(self, key: str, data: bytes) -> Backup:
        try:
            m = Manifest.from_json(_without_file_lists(data), key)
        except IntegrityError:
            m = Manifest.from_json(data, key)  # another layout: the whole of it
        return Backup(
            name=m.name,
            label=m.label,
            source=self.kind,
            key=key,
            start_lsn=m.start_lsn,
            stop_lsn=m.stop_lsn,
            checkpoint_lsn=m.checkpoint_lsn,
            start_tli=m.timeline,
            stop_tli=m.stop_timeline,
            start_time=iso_to_us(m.start_time),
            stop_time=iso_to_us(m.stop_time),
            parts=tuple((part_key(m.name, p.index), p.stored_size, p.sha256) for p in m.parts),
        )


#: backup sources, in order of preference for duplicates
SOURCES: tuple[BackupSource, ...] = (WalshipManifestSource(), PgBackupFileSource())


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
