"""Build repositories for the retention tests and benchmark: segments, history files,
.backup files and walship backups (manifest + parts) written through the real object
format (walship.codec.objects.put_object), on any backend."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from walship import repository
from walship.codec import objects
from walship.config import Config
from walship.index.entries import entry_key
from walship.manifest import KIND_MANIFEST, KIND_PART, Manifest, PartEntry, manifest_key, part_key
from walship.pg import format_lsn, segment_file_name
from walship.storage.base import Backend

SEG = 16 << 20
SYSID = 7_400_000_000_000_000_001
HOUR = 3600
DAY = 86400


def cfg(repo: str = "mem://x", **kw: object) -> Config:
    return Config(repo=repo, **kw)


def put(c: Config, backend: Backend, key: str, name: str, kind: str, body: bytes) -> None:
    header = objects.new_header(name, kind, len(body), hashlib.sha256(body).hexdigest(), c)
    objects.put_object(c, backend, key, header, [body])


def identity(backend: Backend) -> None:
    repository.ensure_identity(backend, repository.Identity(SYSID, SEG, 150000))


def seg_name(segno: int, tli: int = 1) -> str:
    return segment_file_name(tli, segno, SEG)


def seg_key(segno: int, tli: int = 1) -> str:
    return repository.key_for(seg_name(segno, tli))


def segments(
    c: Config, backend: Backend, segnos: Iterable[int], tli: int = 1, *, index: bool = False
) -> None:
    """Small stand-in segments (retention reads only the listing)."""

    def one(segno: int) -> None:
        name = seg_name(segno, tli)
        put(c, backend, repository.key_for(name), name, "segment", name.encode())
        if index:
            put(c, backend, entry_key(name), name, "index-entry", b"{}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, list(segnos)))


def history(c: Config, backend: Backend, tli: int, lines: list[tuple[int, int]]) -> None:
    """``TLI.history`` with (parent, switch LSN) lines."""
    text = "".join(f"{p}\t{format_lsn(lsn)}\tno recovery target specified\n" for p, lsn in lines)
    name = f"{tli:08X}.history"
    put(c, backend, repository.key_for(name), name, "history", text.encode())


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def pg_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def start_lsn(segno: int) -> int:
    return segno * SEG + 0x28


def walship_backup(
    c: Config,
    backend: Backend,
    segno: int,
    when: float,
    *,
    tli: int = 1,
    parts: int = 2,
    name: str | None = None,
    backup_file: bool = False,
) -> str:
    """A complete walship backup starting in segment ``segno``, consistent in the next."""
    name = name or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when - 60))
    entries = []
    for i in range(parts):
        body = f"{name} part {i}".encode() * 8
        put(c, backend, part_key(name, i), f"part-{i:06d}", KIND_PART, body)
        entries.append(PartEntry(i, len(body), len(body), hashlib.sha256(body).hexdigest()))
    start, stop = start_lsn(segno), (segno + 1) * SEG + 0x100
    m = Manifest(
        name=name,
        label=f"label {name}",
        pg_version=150004,
        system_identifier=SYSID,
        wal_segment_size=SEG,
        block_size=8192,
        start_lsn=start,
        stop_lsn=stop,
        checkpoint_lsn=start + 0x60,
        timeline=tli,
        stop_timeline=tli,
        start_time=iso(when - 60),
        stop_time=iso(when),
        from_standby=False,
        data_checksums=True,
        backup_label="",
        tablespace_map=None,
        parts=entries,
    )
    put(c, backend, manifest_key(name), "manifest.json", KIND_MANIFEST, m.to_json())
    if backup_file:
        pg_backup_file(c, backend, segno, when, tli=tli, label=name)
    return name


def pg_backup_file(
    c: Config, backend: Backend, segno: int, when: float, *, tli: int = 1, label: str = "base"
) -> str:
    """PostgreSQL's ``<segment>.<offset>.backup`` for a backup starting in ``segno``."""
    start, stop = start_lsn(segno), (segno + 1) * SEG + 0x100
    name = f"{seg_name(segno, tli)}.{start % SEG:08X}.backup"
    text = (
        f"START WAL LOCATION: {format_lsn(start)} (file {seg_name(segno, tli)})\n"
        f"STOP WAL LOCATION: {format_lsn(stop)} (file {seg_name(segno + 1, tli)})\n"
        f"CHECKPOINT LOCATION: {format_lsn(start + 0x60)}\n"
        "BACKUP METHOD: streamed\nBACKUP FROM: primary\n"
        f"START TIME: {pg_time(when - 60)}\nLABEL: {label}\n"
        f"START TIMELINE: {tli}\nSTOP TIME: {pg_time(when)}\nSTOP TIMELINE: {tli}\n"
    )
    put(c, backend, repository.key_for(name), name, "backup", text.encode())
    return name


def keys(backend: Backend, prefix: str = "") -> set[str]:
    return {i.key for i in backend.list(prefix)}
