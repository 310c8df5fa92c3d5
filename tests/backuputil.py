"""A small writer of walship backups (parts + manifest) for backup-fetch unit tests.

It writes what backup-push writes (walship/manifest.py is the contract):
parts are envelopes of file bytes laid end to end, a file larger than the
room left in a part is split across parts, and the manifest goes last.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from walship.codec import objects
from walship.config import Config
from walship.manifest import (
    KIND_MANIFEST,
    KIND_PART,
    DirEntry,
    FileEntry,
    Manifest,
    PartEntry,
    Tablespace,
    manifest_key,
    part_key,
)
from walship.pg import parse_lsn
from walship.storage.base import Backend


@dataclass
class Spec:
    name: str = "20261123T222731Z"
    start_lsn: str = "0/2000028"
    stop_lsn: str = "0/2000138"
    checkpoint_lsn: str = "0/2000060"
    timeline: int = 1
    start_time: str = "2026-11-23T22:27:31Z"
    stop_time: str = "2026-11-23T22:27:32Z"
    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    tablespaces: list[Tablespace] = field(default_factory=list)
    part_size: int = 1000
    pg_version: int = 150004
    #: the backed-up server's data_directory / config_file / hba_file / ident_file
    server_files: dict[str, str] = field(default_factory=dict)


def label_of(spec: Spec) -> str:
    return (
        f"START WAL LOCATION: {spec.start_lsn} (file 000000010000000000000002)\n"
        f"CHECKPOINT LOCATION: {spec.checkpoint_lsn}\n"
        "BACKUP METHOD: streamed\nBACKUP FROM: primary\n"
        f"START TIME: {spec.start_time.replace('T', ' ').replace('Z', ' UTC')}\n"
        f"LABEL: test\nSTART TIMELINE: {spec.timeline}\n"
    )


def write_backup(cfg: Config, backend: Backend, spec: Spec) -> Manifest:
    parts: list[bytearray] = [bytearray()]
    entries: list[FileEntry] = []
    for path, data in spec.files.items():
        chunks: list[tuple[int, int, int]] = []
        at = 0
        while at < len(data):
            room = spec.part_size - len(parts[-1])
            if room <= 0:
                parts.append(bytearray())
                continue
            take = min(room, len(data) - at)
            chunks.append((len(parts) - 1, len(parts[-1]), take))
            parts[-1] += data[at : at + take]
            at += take
        ts = None
        if path.startswith("pg_tblspc/"):
            ts = int(path.split("/")[1])
        entries.append(
            FileEntry(
                path,
                len(data),
                spec.modes.get(path, 0o600),
                1_700_000_000.0 + len(entries),
                hashlib.sha256(data).hexdigest(),
                chunks,
                ts,
            )
        )
    part_entries = []
    for i, raw in enumerate(parts):
        digest = hashlib.sha256(raw).hexdigest()
        header = objects.new_header(f"{spec.name}/part-{i:06d}", KIND_PART, len(raw), digest, cfg)
        info = objects.put_object(cfg, backend, part_key(spec.name, i), header, [bytes(raw)])
        part_entries.append(PartEntry(i, len(raw), info.size, digest))
    dirs = sorted(
        {"global", "pg_wal", *spec.dirs, *(p.rpartition("/")[0] for p in spec.files if "/" in p)}
    )
    m = Manifest(
        name=spec.name,
        label="test",
        pg_version=spec.pg_version,
        system_identifier=42,
        wal_segment_size=16 << 20,
        block_size=8192,
        start_lsn=parse_lsn(spec.start_lsn),
        stop_lsn=parse_lsn(spec.stop_lsn),
        checkpoint_lsn=parse_lsn(spec.checkpoint_lsn),
        timeline=spec.timeline,
        stop_timeline=spec.timeline,
        start_time=spec.start_time,
        stop_time=spec.stop_time,
        from_standby=False,
        data_checksums=False,
        backup_label=label_of(spec),
        tablespace_map=None,
        tablespaces=list(spec.tablespaces),
        files=entries,
        directories=[DirEntry(d, 0o700) for d in dirs],
        parts=part_entries,
        writer="tests",
        **spec.server_files,  # type: ignore[arg-type]
    )
    data = m.to_json()
    header = objects.new_header(
        f"{spec.name}/manifest.json",
        KIND_MANIFEST,
        len(data),
        hashlib.sha256(data).hexdigest(),
        cfg,
    )
    objects.put_object(cfg, backend, manifest_key(spec.name), header, [data])
    return m
