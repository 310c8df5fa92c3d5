"""Timeline history files and backup history (``.backup``) files. No I/O.

``TTTTTTTT.history``: one ``parentTLI<TAB>X/X<TAB>reason`` line per ancestor
timeline. ``<segment>.<offset>.backup``: ``KEY: value`` lines PostgreSQL
writes at the end of every base backup (START/STOP WAL LOCATION, CHECKPOINT
LOCATION, START/STOP TIMELINE, START/STOP TIME, LABEL).

Imported by ``walship push`` only for these two (rare) kinds of file, so it
keeps its own imports as light as :mod:`walship.pg`.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import InvalidWalError
from . import FileKind, parse_lsn

# --- timeline history files -------------------------------------------------


class HistoryEntry(NamedTuple):
    """``parent_tli`` was valid up to (excluding) ``switchpoint``."""

    parent_tli: int
    switchpoint: int
    reason: str


def parse_history(text: str, tli: int) -> list[HistoryEntry]:
    """Parse ``TTTTTTTT.history`` contents the way PostgreSQL does."""
    import re  # here, not at the top: ``re`` costs push and fetch ~3 ms to import

    entries: list[HistoryEntry] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(\d+)\s+([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*(.*)", line)
        if not m:
            raise InvalidWalError(
                f"timeline {tli} history line {lineno}: expected 'parentTLI<TAB>X/X<TAB>reason'"
            )
        parent = int(m.group(1))
        if entries and parent <= entries[-1].parent_tli:
            raise InvalidWalError(
                f"timeline {tli} history line {lineno}: timeline ids must increase"
            )
        if parent >= tli:
            raise InvalidWalError(
                f"timeline {tli} history line {lineno}: parent {parent} is not below {tli}"
            )
        lsn = (int(m.group(2), 16) << 32) | int(m.group(3), 16)
        entries.append(HistoryEntry(parent, lsn, m.group(4).strip()))
    return entries


# --- backup history files ---------------------------------------------------


def parse_backup_history(text: str) -> dict[str, str]:
    """Parse a ``.backup`` history file (``KEY: value`` lines)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    if "START WAL LOCATION" not in fields:
        raise InvalidWalError("not a backup history file: no 'START WAL LOCATION' line")
    return fields


class BackupFile(NamedTuple):
    """What a ``.backup`` file says about its base backup (LSNs as ints, times in µs UTC).

    Replay starts at ``start_lsn`` (the checkpoint's redo pointer); the backup
    is consistent from ``stop_lsn`` (the end of its BACKUP_END record).
    """

    label: str
    start_lsn: int
    stop_lsn: int
    checkpoint_lsn: int
    start_tli: int
    stop_tli: int
    start_time: int | None
    stop_time: int | None


def _lsn_field(fields: dict[str, str], key: str, where: str) -> int:
    import re

    m = re.match(r"([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})", fields.get(key) or "")
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


def parse_backup_file(name: str, data: bytes) -> BackupFile:
    """The base backup a ``<segment>.<offset>.backup`` file describes (for planning).

    Stricter than :func:`check_text_file`: the backup must have finished
    (STOP WAL LOCATION) and its locations must be in order.
    """
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
    return BackupFile(
        label=fields.get("LABEL", ""),
        start_lsn=start,
        stop_lsn=stop,
        checkpoint_lsn=checkpoint,
        start_tli=start_tli,
        stop_tli=stop_tli,
        start_time=parse_pg_time(fields.get("START TIME")),
        stop_time=parse_pg_time(fields.get("STOP TIME")),
    )


def parse_pg_time(text: str | None) -> int | None:
    """A START/STOP TIME of a backup file (``%Y-%m-%d %H:%M:%S %Z``) in µs UTC.

    PostgreSQL writes the zone as an abbreviation of ``log_timezone``; only
    UTC/GMT and numeric offsets are unambiguous, anything else gives None
    (the planner works by LSN, times are for display).
    """
    import re
    from datetime import UTC, datetime, timedelta, timezone

    m = re.match(
        r"(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?\s*"
        r"(?:(UTC|GMT|UCT|Z)|([+-])(\d\d)(?::?(\d\d))?)?$",
        (text or "").strip(),
    )
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
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return (aware - epoch) // timedelta(microseconds=1) + frac


# --- push-time check ----------------------------------------------------------


def check_text_file(name: str, kind: str, data: bytes) -> None:
    """Validate a .history or .backup file's contents before archiving."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidWalError(f"{name}: not a text file") from None
    if kind == FileKind.HISTORY:
        parse_history(text, int(name[:8], 16))
    elif kind == FileKind.BACKUP:
        parse_backup_history(text)
