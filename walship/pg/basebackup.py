"""What a base backup copies, and what PostgreSQL's backup files say. No I/O.

The exclusion rules are PostgreSQL's own (the manual, "Making a Base Backup
Using the Low Level API", and ``src/backend/backup/basebackup.c``, which
pg_basebackup applies on the server):

* the *contents* of ``pg_wal`` (the WAL a backup needs comes from the
  archive), ``pg_replslot``, ``pg_dynshmem``, ``pg_notify``, ``pg_serial``,
  ``pg_snapshots``, ``pg_stat_tmp`` and ``pg_subtrans`` are left out, the
  directories themselves are kept (``pg_wal/archive_status`` and, from 17,
  ``pg_wal/summaries`` too, as empty directories);
* ``postmaster.pid``, ``postmaster.opts``, ``postgresql.auto.conf.tmp``,
  ``current_logfiles.tmp``, ``backup_label``, ``tablespace_map``,
  ``backup_manifest`` and ``backup_label.old`` (a restored server's leftover)
  are left out, and every ``pg_internal.init*`` (the relation cache, rebuilt
  at start-up);
* any file or directory whose name starts with ``pgsql_tmp``;
* in a database directory: temporary relations (``t<backend>_<relfilenode>``)
  and the forks of unlogged relations other than their ``_init`` fork (the
  server rebuilds them from it at the end of recovery).

Paths are relative to the data directory with "/" separators; files of a
tablespace are named ``pg_tblspc/<oid>/<version dir>/...`` as PostgreSQL's
backup_manifest names them.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from . import parse_lsn

#: directories whose contents are not copied (the directory itself is)
EXCLUDE_CONTENTS = frozenset(
    {
        "pg_wal",
        "pg_replslot",
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_stat_tmp",
        "pg_subtrans",
    }
)
#: subdirectories of pg_wal kept (empty) in a backup
WAL_SUBDIRS = ("archive_status", "summaries")
#: files never copied, in any directory (basebackup.c compares the file name)
EXCLUDE_FILES = frozenset(
    {
        "postmaster.pid",
        "postmaster.opts",
        "postgresql.auto.conf.tmp",
        "current_logfiles.tmp",
        "backup_label",
        "backup_label.old",
        "tablespace_map",
        "backup_manifest",
    }
)
TEMP_PREFIX = "pgsql_tmp"
RELCACHE_INIT = "pg_internal.init"

_TEMP_REL = re.compile(r"^t[0-9]+_[0-9]+(?:_(?:fsm|vm|init))?(?:\.[0-9]+)?$")
_REL = re.compile(r"^([0-9]+)(?:_(fsm|vm|init))?(?:\.[0-9]+)?$")


def excluded_name(name: str) -> bool:
    """A file or directory skipped wherever it is (with everything under it)."""
    return name.startswith(TEMP_PREFIX)


def excluded_file(name: str) -> bool:
    """A file (by its name, in any directory) that is not copied."""
    return name in EXCLUDE_FILES or name.startswith(RELCACHE_INIT)


def contents_excluded(reldir: str) -> bool:
    """A top-level directory copied empty (``pg_wal`` keeps its subdirectories, empty)."""
    return reldir in EXCLUDE_CONTENTS


def is_database_dir(reldir: str) -> bool:
    """``base/<oid>`` or ``pg_tblspc/<oid>/<version>/<oid>``: holds relation files."""
    parts = reldir.split("/")
    if len(parts) == 2 and parts[0] == "base":
        return parts[1].isdigit()
    return len(parts) == 4 and parts[0] == "pg_tblspc" and parts[3].isdigit()


def skipped_relation_files(names: list[str]) -> set[str]:
    """Files of one database directory a backup leaves out.

    Temporary relations, and every fork but ``_init`` of an unlogged relation
    (one that has an ``_init`` fork), as basebackup.c does.
    """
    unlogged = set()
    for name in names:
        m = _REL.match(name)
        if m and m.group(2) == "init":
            unlogged.add(m.group(1))
    out = set()
    for name in names:
        if _TEMP_REL.match(name):
            out.add(name)
            continue
        m = _REL.match(name)
        if m and m.group(1) in unlogged and m.group(2) != "init":
            out.add(name)
    return out


def tablespace_version_dir(server_version_num: int, catalog_version: int) -> str:
    """The directory PostgreSQL creates in a tablespace location (TABLESPACE_VERSION_DIRECTORY)."""
    return f"PG_{server_version_num // 10000}_{catalog_version}"


def control_system_identifier(pg_control: bytes) -> int:
    """The system identifier: the first field of global/pg_control (host byte order)."""
    if len(pg_control) < 8:
        raise ValueError("pg_control is too short")
    (sysid,) = struct.unpack_from("=Q", pg_control)
    return int(sysid)


@dataclass
class BackupLabel:
    """The fields of a backup_label file (as pg_backup_stop returns it)."""

    start_lsn: int
    start_segment: str
    checkpoint_lsn: int
    start_timeline: int
    start_time: str
    label: str
    backup_from: str  # "primary" | "standby"
    method: str


_LABEL_LINE = re.compile(r"^([A-Z ]+): (.*)$")
_START_WAL = re.compile(r"^([0-9A-Fa-f]+/[0-9A-Fa-f]+) \(file ([0-9A-F]{24})\)$")


def parse_backup_label(text: str) -> BackupLabel:
    """Parse backup_label text; ValueError naming the line that is wrong or missing."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        m = _LABEL_LINE.match(line)
        if m:
            fields.setdefault(m.group(1), m.group(2))
    for key in ("START WAL LOCATION", "CHECKPOINT LOCATION", "START TIMELINE"):
        if key not in fields:
            raise ValueError(f"backup_label has no {key!r} line")
    m = _START_WAL.match(fields["START WAL LOCATION"])
    if not m:
        raise ValueError(f"backup_label: bad START WAL LOCATION {fields['START WAL LOCATION']!r}")
    try:
        checkpoint = parse_lsn(fields["CHECKPOINT LOCATION"])
        timeline = int(fields["START TIMELINE"])
    except ValueError as exc:
        raise ValueError(f"backup_label: {exc}") from None
    return BackupLabel(
        start_lsn=parse_lsn(m.group(1)),
        start_segment=m.group(2),
        checkpoint_lsn=checkpoint,
        start_timeline=timeline,
        start_time=fields.get("START TIME", ""),
        label=fields.get("LABEL", ""),
        backup_from=fields.get("BACKUP FROM", "primary"),
        method=fields.get("BACKUP METHOD", ""),
    )


def backup_history_file_name(tli: int, start_lsn: int, seg_size: int) -> str:
    """``<segment>.<offset>.backup``: the file pg_backup_stop archives on a primary."""
    from . import segment_file_name

    segno = start_lsn // seg_size
    return f"{segment_file_name(tli, segno, seg_size)}.{start_lsn % seg_size:08X}.backup"
