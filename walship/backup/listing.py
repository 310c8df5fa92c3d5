"""What ``walship backup-list`` shows: one row per complete backup, and the WAL check.

A backup is usable once the WAL from its start to its stop LSN is in the
repository (``wal_ok``): the segments from the one holding START WAL
LOCATION to the one holding the byte before the stop LSN, on the backup's
timeline. Listed with one listing per 4 GiB of WAL (the repository keeps the
segments of one timeline and log id under one prefix).
"""

from __future__ import annotations

from datetime import datetime

from .. import repository
from ..manifest import Manifest
from ..pg import format_lsn, segment_file_name, segno_of_end_lsn, segno_of_lsn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..storage.base import Backend


def needed_segments(m: Manifest) -> list[str]:
    seg = m.wal_segment_size
    first = segno_of_lsn(m.start_lsn, seg)
    last = segno_of_end_lsn(m.stop_lsn, seg)
    return [segment_file_name(m.stop_timeline, n, seg) for n in range(first, last + 1)]


def wal_present(backend: Backend, m: Manifest, cache: dict[str, set[str]] | None = None) -> bool:
    cache = {} if cache is None else cache
    for name in needed_segments(m):
        prefix = repository.key_for(name).rsplit("/", 1)[0] + "/"
        names = cache.get(prefix)
        if names is None:
            names = cache[prefix] = {info.key.rsplit("/", 1)[-1] for info in backend.list(prefix)}
        if name not in names:
            return False
    return True


def _seconds(m: Manifest) -> float | None:
    try:
        start = datetime.fromisoformat(m.start_time)
        stop = datetime.fromisoformat(m.stop_time)
    except ValueError:
        return None
    return round((stop - start).total_seconds(), 1)


def row(m: Manifest, wal_ok: bool) -> dict[str, Any]:
    return {
        "name": m.name,
        "label": m.label,
        "start_time": m.start_time,
        "stop_time": m.stop_time,
        "start_lsn": format_lsn(m.start_lsn),
        "stop_lsn": format_lsn(m.stop_lsn),
        "timeline": m.timeline,
        "raw_size": m.raw_size,
        "stored_size": m.stored_size,
        "wal_ok": wal_ok,
        "duration_s": _seconds(m),
        "stop_timeline": m.stop_timeline,
        "pg_version": m.pg_version,
        "from_standby": m.from_standby,
        "files": len(m.files),
        "checksum_failures": len(m.checksum_failures),
    }
