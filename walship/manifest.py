"""walship base-backup manifests: where a backup lives and what its manifest says.

Repository layout of one backup (docs/backups.md)::

    basebackups/<name>/part-<NNNNNN>   parts: envelopes (kind "backup-part") whose raw
                                       bytes are file contents laid end to end
    basebackups/<name>/manifest.json   the manifest: an envelope (kind "backup-manifest")
                                       holding the JSON below; written last, create-only

A backup exists only once its manifest exists: every reader (backup-list, the
planner, retention, drill) lists manifests, so the parts of an interrupted
backup are never listed or planned as a backup; they are *garbage*
(:func:`is_garbage_prefix`) for ``walship delete --garbage``.

Pure: JSON in and out, no storage I/O (the commands and walship/backup do
that). Both walship/restore (backups for the planner) and walship/backup
(push, fetch, retention) import this module, so it sits below both.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import IntegrityError
from .pg import format_lsn, parse_lsn

BACKUPS_PREFIX = "basebackups/"
MANIFEST_LEAF = "manifest.json"
PART_PREFIX = "part-"
#: format of the manifest JSON (``walship_backup``); readers refuse a newer one
FORMAT = 1
#: kinds in the envelope header of a backup's objects
KIND_MANIFEST = "backup-manifest"
KIND_PART = "backup-part"

#: backup names: the start time in UTC, with a counter when a name is taken
NAME_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z(?:-[0-9]{1,4})?$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"not a walship backup name: {name!r} (expected like 20261202T003000Z)")
    return name


def backup_prefix(name: str) -> str:
    return f"{BACKUPS_PREFIX}{check_name(name)}/"


def manifest_key(name: str) -> str:
    return backup_prefix(name) + MANIFEST_LEAF


def part_key(name: str, index: int) -> str:
    return f"{backup_prefix(name)}{PART_PREFIX}{index:06d}"


def split_key(key: str) -> tuple[str, str] | None:
    """``(name, leaf)`` of a key under basebackups/, or None for any other key."""
    if not key.startswith(BACKUPS_PREFIX):
        return None
    rest = key[len(BACKUPS_PREFIX) :]
    name, sep, leaf = rest.partition("/")
    if not sep or not NAME_RE.match(name) or "/" in leaf:
        return None
    return name, leaf


def is_manifest_key(key: str) -> bool:
    parts = split_key(key)
    return parts is not None and parts[1] == MANIFEST_LEAF


@dataclass
class FileEntry:
    """One regular file of the backup.

    ``path`` is relative to the data directory, with "/" separators; files of
    a tablespace are under ``pg_tblspc/<oid>/`` as PostgreSQL's own
    backup_manifest names them, and ``tablespace`` is that oid. ``chunks`` says
    where the bytes are: ``(part index, offset in the part's raw bytes,
    length)``, in file order; the lengths add up to ``size``. ``sha256`` is the
    digest of the bytes copied (what a restore must write back).
    """

    path: str
    size: int
    mode: int
    mtime: float
    sha256: str
    chunks: list[tuple[int, int, int]] = field(default_factory=list)
    tablespace: int | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "path": self.path,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
            "sha256": self.sha256,
            "chunks": [list(c) for c in self.chunks],
        }
        if self.tablespace is not None:
            doc["tablespace"] = self.tablespace
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FileEntry:
        return cls(
            path=str(doc["path"]),
            size=int(doc["size"]),
            mode=int(doc["mode"]),
            mtime=float(doc["mtime"]),
            sha256=str(doc["sha256"]),
            chunks=[(int(p), int(o), int(n)) for p, o, n in doc["chunks"]],
            tablespace=None if doc.get("tablespace") is None else int(doc["tablespace"]),
        )


@dataclass
class DirEntry:
    """A directory to create (also the empty ones: pg_wal, pg_replslot, ...)."""

    path: str
    mode: int
    tablespace: int | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": self.path, "mode": self.mode}
        if self.tablespace is not None:
            doc["tablespace"] = self.tablespace
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DirEntry:
        ts = doc.get("tablespace")
        return cls(str(doc["path"]), int(doc["mode"]), None if ts is None else int(ts))


@dataclass
class Tablespace:
    """A tablespace: ``pg_tblspc/<oid>`` linked to ``path`` on the backed-up host."""

    oid: int
    path: str
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"oid": self.oid, "path": self.path, "name": self.name}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Tablespace:
        name = doc.get("name")
        return cls(int(doc["oid"]), str(doc["path"]), None if name is None else str(name))


@dataclass
class PartEntry:
    """One part object: its raw size and digest (also in its envelope header)."""

    index: int
    raw_size: int
    stored_size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "raw_size": self.raw_size,
            "stored_size": self.stored_size,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PartEntry:
        return cls(
            int(doc["index"]), int(doc["raw_size"]), int(doc["stored_size"]), str(doc["sha256"])
        )


#: the server settings naming its configuration files (recorded by backup-push)
CONFIG_FILE_SETTINGS = ("config_file", "hba_file", "ident_file")


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass
class Manifest:
    """What a backup is. Times are ISO 8601 UTC strings (``...Z``), LSNs ints."""

    name: str
    label: str
    pg_version: int  # server_version_num, e.g. 150004
    system_identifier: int
    wal_segment_size: int
    block_size: int
    start_lsn: int  # START WAL LOCATION (replay starts here)
    stop_lsn: int  # consistent from here (pg_backup_stop's lsn)
    checkpoint_lsn: int
    timeline: int  # START TIMELINE
    stop_timeline: int
    start_time: str
    stop_time: str
    from_standby: bool
    data_checksums: bool
    backup_label: str  # the exact contents pg_backup_stop returned
    tablespace_map: str | None
    tablespaces: list[Tablespace] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    directories: list[DirEntry] = field(default_factory=list)
    parts: list[PartEntry] = field(default_factory=list)
    #: pages whose checksum failed (``path``, ``block``), when told to keep going
    checksum_failures: list[dict[str, Any]] = field(default_factory=list)
    writer: str = ""
    #: the backed-up server's data_directory, config_file, hba_file and ident_file
    #: (None: not recorded, e.g. by an older walship or without the privilege to read
    #: them); a config file outside the data directory is not part of the backup
    data_directory: str | None = None
    config_file: str | None = None
    hba_file: str | None = None
    ident_file: str | None = None

    def outside_config_files(self) -> list[tuple[str, str]]:
        """``(setting, path)`` of the recorded config files outside the data directory."""
        if not self.data_directory:
            return []
        root = self.data_directory.rstrip("/") + "/"
        out = []
        for setting in CONFIG_FILE_SETTINGS:
            path = getattr(self, setting)
            if path and not path.startswith(root):
                out.append((setting, path))
        return out

    @property
    def raw_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def stored_size(self) -> int:
        return sum(p.stored_size for p in self.parts)

    def to_json(self) -> bytes:
        doc = {
            "walship_backup": FORMAT,
            "name": self.name,
            "label": self.label,
            "pg_version": self.pg_version,
            "system_identifier": str(self.system_identifier),
            "wal_segment_size": self.wal_segment_size,
            "block_size": self.block_size,
            "start_lsn": format_lsn(self.start_lsn),
            "stop_lsn": format_lsn(self.stop_lsn),
            "checkpoint_lsn": format_lsn(self.checkpoint_lsn),
            "timeline": self.timeline,
            "stop_timeline": self.stop_timeline,
            "start_time": self.start_time,
            "stop_time": self.stop_time,
            "from_standby": self.from_standby,
            "data_checksums": self.data_checksums,
            "raw_size": self.raw_size,
            "stored_size": self.stored_size,
            "backup_label": self.backup_label,
            "tablespace_map": self.tablespace_map,
            "tablespaces": [t.to_json() for t in self.tablespaces],
            "checksum_failures": self.checksum_failures,
            "writer": self.writer,
            "data_directory": self.data_directory,
            "config_file": self.config_file,
            "hba_file": self.hba_file,
            "ident_file": self.ident_file,
            "parts": [p.to_json() for p in self.parts],
            "directories": [d.to_json() for d in self.directories],
            "files": [f.to_json() for f in self.files],
        }
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            doc = json.loads(data)
            version = int(doc["walship_backup"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{where}: not a walship backup manifest ({exc})") from None
        if version > FORMAT:
            raise IntegrityError(
                f"{where}: backup manifest format {version} is newer than this walship "
                f"understands ({FORMAT})",
                hint="upgrade walship",
            )
        try:
            return cls(
                name=str(doc["name"]),
                label=str(doc["label"]),
                pg_version=int(doc["pg_version"]),
                system_identifier=int(doc["system_identifier"]),
                wal_segment_size=int(doc["wal_segment_size"]),
                block_size=int(doc["block_size"]),
                start_lsn=parse_lsn(doc["start_lsn"]),
                stop_lsn=parse_lsn(doc["stop_lsn"]),
                checkpoint_lsn=parse_lsn(doc["checkpoint_lsn"]),
                timeline=int(doc["timeline"]),
                stop_timeline=int(doc["stop_timeline"]),
                start_time=str(doc["start_time"]),
                stop_time=str(doc["stop_time"]),
                from_standby=bool(doc["from_standby"]),
                data_checksums=bool(doc["data_checksums"]),
                backup_label=str(doc["backup_label"]),
                tablespace_map=None
                if doc.get("tablespace_map") is None
                else str(doc["tablespace_map"]),
                tablespaces=[Tablespace.from_json(t) for t in doc.get("tablespaces", [])],
                files=[FileEntry.from_json(f) for f in doc["files"]],
                directories=[DirEntry.from_json(d) for d in doc.get("directories", [])],
                parts=[PartEntry.from_json(p) for p in doc["parts"]],
                checksum_failures=list(doc.get("checksum_failures", [])),
                writer=str(doc.get("writer", "")),
                data_directory=_opt_str(doc.get("data_directory")),
                config_file=_opt_str(doc.get("config_file")),
                hba_file=_opt_str(doc.get("hba_file")),
                ident_file=_opt_str(doc.get("ident_file")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{where}: malformed backup manifest ({exc!r})") from None
